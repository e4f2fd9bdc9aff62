import math
from collections.abc import Mapping

import pytest
import torch

from flowsci.bayesian_flow import (
    CategoricalBelief,
    DiscreteBayesianFlow,
    GaussianBayesianFlow,
    GaussianBelief,
    PeriodicBayesianFlow,
    VonMisesBelief,
    sample_bayesian_flows,
)
from flowsci.testing.bayesian import assert_oracle_sampling_recovers_data

torch.set_num_threads(1)
SIGMA1, K = 0.01, 5


@pytest.fixture(scope="module")
def flows() -> dict:
    return {
        "lattice": GaussianBayesianFlow(sigma1=SIGMA1),
        "types": DiscreteBayesianFlow(num_classes=K, beta1=20.0),
        "coords": PeriodicBayesianFlow(beta1=1e3),
    }


def _crystal_batch() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Three crystals with 2, 5 and 3 atoms in the flat torch-geometric layout."""
    g = torch.Generator().manual_seed(0)
    batch = torch.tensor([0, 0, 1, 1, 1, 1, 1, 2, 2, 2])
    coords = torch.rand(10, 3, generator=g)
    coords[0] = torch.tensor([0.0005, 0.9995, 0.5])  # across the periodic boundary
    data = {
        "lattice": torch.randn(3, 9, generator=g),
        "types": torch.randint(0, K, (10,), generator=g),
        "coords": coords,
    }
    return data, batch


@pytest.mark.parametrize("strategy", ["bayesian_update", "flow_resample"])
def test_oracle_network_recovers_all_modalities_together(flows: dict, strategy: str) -> None:
    data, batch = _crystal_batch()
    out = assert_oracle_sampling_recovers_data(flows, data, batch_size=3, steps=10, strategy=strategy, batch=batch)
    # the final beliefs concentrate on the data as the flow distribution at t = 1 says
    lat = out.beliefs["lattice"]
    assert isinstance(lat, GaussianBelief)
    torch.testing.assert_close(lat.precision, torch.full_like(lat.precision, SIGMA1**-2))
    assert float((lat.mean - data["lattice"]).abs().max()) < 6 * SIGMA1
    types = out.beliefs["types"]
    assert isinstance(types, CategoricalBelief) and torch.equal(types.probs.argmax(-1), data["types"])
    coords = out.beliefs["coords"]
    assert isinstance(coords, VonMisesBelief)
    err = torch.remainder(coords.mean - data["coords"] + 0.5, 1.0) - 0.5
    assert float(err.abs().max()) < 6 / (2 * math.pi * math.sqrt(300))
    assert 300 < float(coords.concentration.mean()) < 3000


def test_nfe_time_grid_and_seeding(flows: dict) -> None:
    data, batch = _crystal_batch()
    seen: list[torch.Tensor] = []

    def oracle(beliefs: Mapping, t: torch.Tensor, **cond: object) -> dict:
        assert set(beliefs) == set(flows) and t.shape == (3,) and cond["batch"] is batch
        assert beliefs["coords"].mean.shape == (10, 3) and beliefs["types"].probs.shape == (10, K)
        seen.append(t[0].clone())
        one_hot = torch.nn.functional.one_hot(data["types"], K).float()
        return {"lattice": data["lattice"], "types": 30.0 * one_hot, "coords": data["coords"]}

    shapes = {name: tuple(x.shape) for name, x in data.items()}
    out = sample_bayesian_flows(oracle, flows, shapes, 3, steps=5, seed=11, batch=batch)
    assert out.nfe == 6 and out.steps == 5 and out.seed == 11
    torch.testing.assert_close(torch.stack(seen), torch.tensor([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]))
    seen.clear()
    short = sample_bayesian_flows(oracle, flows, shapes, 3, steps=5, final_network_call=False, seed=11, batch=batch)
    assert short.nfe == 5 and len(seen) == 5
    again = sample_bayesian_flows(oracle, flows, shapes, 3, steps=5, seed=11, batch=batch)
    for name in flows:
        assert torch.equal(out.samples[name], again.samples[name])
    assert torch.equal(out.beliefs["coords"].concentration, again.beliefs["coords"].concentration)
    other = sample_bayesian_flows(oracle, flows, shapes, 3, steps=5, seed=12, batch=batch)
    assert not torch.equal(out.beliefs["lattice"].mean, other.beliefs["lattice"].mean)


def test_bayes_optimal_network_reproduces_data_distribution(flows: dict) -> None:
    """With the exact posterior-mean network of a known data distribution, samples follow that distribution."""
    n = 4000
    gauss = flows["lattice"]
    class_probs = torch.tensor([0.5, 0.3, 0.1, 0.1, 0.0])
    modes = torch.tensor([0.1, 0.6])  # periodic data: one of two fractional coordinates, equally likely

    def bayes_net(beliefs: Mapping, t: torch.Tensor, **cond: object) -> dict:
        gamma = gauss.gamma(t[0])
        # Gaussian data x = ±1 with prob. 1/2: mu ~ N(gamma x, gamma(1 - gamma)) => E[x | mu] = tanh(mu / (1 - gamma))
        lattice = torch.tanh(beliefs["lattice"].mean / (1 - gamma).clamp_min(1e-12))
        # categorical: the likelihood of class k given theta is proportional to theta_k
        logits = torch.log(class_probs) + beliefs["types"].probs.log()
        # periodic: p(x | m, c) ∝ prior(x) exp(c cos(2π(x - m))); output the posterior circular mean
        vm = beliefs["coords"]
        logw = vm.concentration[..., None] * torch.cos(2 * math.pi * (modes - vm.mean[..., None]))
        w = torch.softmax(logw, -1)
        z = (w * torch.exp(2j * math.pi * modes)).sum(-1)
        return {"lattice": lattice, "types": logits, "coords": torch.angle(z) / (2 * math.pi)}

    shapes = {"lattice": (n, 1), "types": (n,), "coords": (n, 1)}
    for strategy in ("bayesian_update", "flow_resample"):
        out = sample_bayesian_flows(bayes_net, flows, shapes, n, steps=20, strategy=strategy, seed=3)
        lat = out.samples["lattice"]
        assert float((lat.abs() - 1).abs().max()) < 1e-3
        assert abs(float((lat > 0).double().mean()) - 0.5) < 0.04
        freq = torch.bincount(out.samples["types"], minlength=K).double() / n
        if strategy == "bayesian_update":  # exact ancestral sampling of the observations
            torch.testing.assert_close(freq, class_probs.double(), atol=0.03, rtol=0)
        else:  # CrysBFN's resampling at the expected one-hot vector favours the majority class
            assert float(freq[0]) > 0.55
        dist = torch.remainder(out.samples["coords"] - modes + 0.5, 1.0) - 0.5  # [n, 2]
        nearest = dist.abs().argmin(-1)
        assert float(dist.abs().min(-1).values.max()) < 1e-3
        assert abs(float(nearest.double().mean()) - 0.5) < 0.04


def test_invalid_calls(flows: dict) -> None:
    def net(beliefs: Mapping, t: torch.Tensor) -> dict:
        return {"lattice": torch.zeros(3, 9)}

    with pytest.raises(ValueError, match="same flows"):
        sample_bayesian_flows(net, flows, {"lattice": (3, 9)}, 3)
    with pytest.raises(KeyError, match="no prediction"):
        sample_bayesian_flows(net, flows, {"lattice": (3, 9), "types": (4,), "coords": (4, 3)}, 3, steps=2)
    with pytest.raises(ValueError, match="strategy"):
        sample_bayesian_flows(net, {"lattice": flows["lattice"]}, {"lattice": (3, 9)}, 3, strategy="euler")
