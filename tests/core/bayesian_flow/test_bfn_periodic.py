import math
import pathlib

import pytest
import torch

from flowsci.bayesian_flow import (
    PeriodicBayesianFlow,
    VonMisesBelief,
    bessel_ratio,
    linear_entropy_schedule,
    sample_von_mises,
    von_mises_entropy,
    von_mises_log_prob,
)
from flowsci.bayesian_flow.periodic import _cached_schedule
from flowsci.testing.bayesian import assert_loss_zero_at_data

torch.set_num_threads(1)
TWO_PI = 2 * math.pi


@pytest.fixture(scope="module")
def flow() -> PeriodicBayesianFlow:
    return PeriodicBayesianFlow(beta1=1e3)


def _circ_dist(a: torch.Tensor, b: torch.Tensor, period: float = 1.0) -> torch.Tensor:
    return (torch.remainder(a - b + 0.5 * period, period) - 0.5 * period).abs()


@pytest.mark.parametrize("kappa", [0.05, 1.0, 10.0, 1e3, 1e5])
def test_von_mises_sampler_moments(kappa: float) -> None:
    g = torch.Generator().manual_seed(0)
    loc = torch.tensor(3.0, dtype=torch.float64)  # close to π: samples wrap around
    y = sample_von_mises(loc.expand(100_000), torch.tensor(kappa), generator=g)
    assert y.dtype == torch.float64 and bool((y >= -math.pi).all() and (y < math.pi).all())
    resultant = torch.complex(y.cos().mean(), y.sin().mean())
    expected = float(bessel_ratio(torch.tensor(kappa, dtype=torch.float64)))
    se = math.sqrt((1 - expected**2) / 100_000) + 1e-9
    assert abs(resultant.abs().item() - expected) < 5 * se
    if kappa >= 1:
        assert abs(math.remainder(resultant.angle().item() - 3.0, TWO_PI)) < 5 * se / expected
    again = sample_von_mises(loc.expand(100_000), torch.tensor(kappa), generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, again)


def test_entropy_and_density_are_stable_and_normalised() -> None:
    grid = torch.linspace(-math.pi, math.pi, 400_001, dtype=torch.float64)[:-1]
    for kappa in (0.0, 2.0, 50.0, 1e3):
        k = torch.tensor(kappa, dtype=torch.float64)
        logp = von_mises_log_prob(grid, torch.tensor(0.3, dtype=torch.float64), k)
        dx = TWO_PI / grid.numel()
        assert abs(float(logp.exp().sum() * dx) - 1) < 1e-9
        numeric = -float((logp.exp() * logp).sum() * dx)
        assert abs(float(von_mises_entropy(k)) - numeric) < 1e-6
    big = torch.tensor([1e4, 1e6, 1e8], dtype=torch.float64)
    torch.testing.assert_close(von_mises_entropy(big), 0.5 * torch.log(TWO_PI * math.e / big), rtol=0, atol=1e-4)
    assert abs(float(von_mises_entropy(torch.tensor(0.0, dtype=torch.float64))) - math.log(TWO_PI)) < 1e-12


@pytest.mark.parametrize(
    ("m", "c", "y", "alpha"),
    [(0.3, 5.0, 0.35, 20.0), (0.98, 40.0, 0.03, 15.0), (0.02, 3.0, 0.6, 2.0), (0.5, 0.0, 0.9, 7.0)],
)
def test_update_equals_grid_posterior(flow: PeriodicBayesianFlow, m: float, c: float, y: float, alpha: float) -> None:
    belief = VonMisesBelief(torch.tensor([[m]], dtype=torch.float64), torch.tensor([[c]], dtype=torch.float64))
    post = flow.update(belief, torch.tensor([[y]], dtype=torch.float64), alpha)
    grid = torch.linspace(0, 1, 200_001, dtype=torch.float64)[:-1]
    # prior vM(x | m, c) times likelihood vM(y | x, α), normalised numerically on the circle
    log_unnorm = c * torch.cos(TWO_PI * (grid - m)) + alpha * torch.cos(TWO_PI * (y - grid))
    numeric = torch.softmax(log_unnorm, 0) * grid.numel()  # density w.r.t. the uniform measure on [0, 1)
    closed = von_mises_log_prob(TWO_PI * grid, TWO_PI * post.mean[0, 0], post.concentration[0, 0]).exp() * TWO_PI
    torch.testing.assert_close(closed, numeric, rtol=1e-8, atol=1e-8)
    assert 0 <= float(post.mean) < 1


def test_schedule_makes_expected_entropy_fall_linearly(flow: PeriodicBayesianFlow) -> None:
    g = torch.Generator().manual_seed(5)
    for n, checked in ((10, range(1, 11)), (25, (1, 5, 12, 20, 25))):
        alphas, targets = linear_entropy_schedule(n, 1e3)
        assert alphas.shape == (n,) and targets.shape == (n + 1,)
        h = von_mises_entropy(targets)
        h1 = von_mises_entropy(torch.tensor(1e3, dtype=torch.float64))
        linear = math.log(TWO_PI) + torch.arange(n + 1, dtype=torch.float64) / n * (h1 - math.log(TWO_PI))
        torch.testing.assert_close(h, linear, rtol=0, atol=1e-8)
        x = torch.rand(10_000, 1, generator=g, dtype=torch.float64)
        for k in checked:
            c = flow.sample_flow_at_step(x, k, n, generator=g).concentration
            # the entropy of the expected concentration of the simulated flow is on the straight line
            assert abs(float(von_mises_entropy(c.mean())) - float(linear[k])) < 0.02, (n, k)
        assert abs(float(alphas[0]) - float(targets[1])) < 1e-9  # first update from c_0 = 0 is deterministic


def test_schedule_accounts_for_non_additive_accuracy(flow: PeriodicBayesianFlow) -> None:
    n = 10
    alphas, targets = linear_entropy_schedule(n, 1e3)
    g = torch.Generator().manual_seed(6)
    x = torch.rand(20_000, 1, generator=g, dtype=torch.float64)
    belief = flow.prior(x.shape, dtype=torch.float64, generator=g)
    previous, decreased = belief.concentration, torch.zeros_like(x, dtype=torch.bool)
    for i in range(1, n + 1):
        belief = flow.update(belief, flow.sender_sample(x, alphas[i - 1], generator=g), alphas[i - 1])
        decreased |= belief.concentration < previous
        previous = belief.concentration
        if i >= 2:  # accuracies do not add: E[c_i] < Σ α, and the schedule compensates
            assert float(belief.concentration.mean()) < float(alphas[:i].sum()) * (0.85 if i == 2 else 1.0)
            assert abs(float(belief.concentration.mean()) / float(targets[i]) - 1) < 0.03
    assert float(alphas.sum()) > targets[-1] + 1.0
    assert 0.01 < float(decreased.double().mean()) < 0.9  # entropy of single trajectories is non-monotonic
    # the naive additive schedule α_k = c̄_k - c̄_{k-1} falls short of the targets: its entropy curve is not linear
    naive = targets[1:] - targets[:-1]
    r, worst = torch.zeros(20_000, dtype=torch.complex128), 0.0
    for i in range(n):
        r = r + naive[i] * torch.exp(1j * sample_von_mises(torch.zeros(20_000), naive[i], generator=g))
        worst = max(worst, float(von_mises_entropy(r.abs().mean()) - von_mises_entropy(targets[i + 1])))
    assert worst > 0.1


def test_schedule_is_cached_per_step_count(flow: PeriodicBayesianFlow, tmp_path: pathlib.Path) -> None:
    flow.accuracy_schedule(10)
    hits = _cached_schedule.cache_info().hits
    a, b = flow.accuracy_schedule(10), flow.accuracy_schedule(10)
    assert _cached_schedule.cache_info().hits == hits + 2
    assert torch.equal(a, b)
    a.zero_()  # callers get copies
    assert float(flow.accuracy_schedule(10).sum()) > 1e3
    # on-disk cache: written once, then read back identically by another flow object
    disk = PeriodicBayesianFlow(beta1=1e3, cache_dir=str(tmp_path))
    torch.testing.assert_close(disk.accuracy_schedule(4), linear_entropy_schedule(4, 1e3)[0])
    (path,) = tmp_path.glob("*.pt")
    torch.testing.assert_close(
        linear_entropy_schedule(4, 1e3, seed=0, cache_dir=tmp_path)[0], disk.accuracy_schedule(4)
    )
    torch.save(
        {"alphas": torch.zeros(3), "targets": torch.zeros(4)},
        tmp_path / "vm_linear_entropy_n5_b1000_p4096_s0_q48.pt",
    )
    with pytest.raises(ValueError, match="vm_linear_entropy_n5"):
        linear_entropy_schedule(5, 1e3, cache_dir=tmp_path)
    assert path.exists()


def test_simulated_flow_matches_sequential_updates(flow: PeriodicBayesianFlow) -> None:
    n, m = 10, 40_000
    g = torch.Generator().manual_seed(7)
    alphas = flow.accuracy_schedule(n)
    for x0 in (0.002, 0.5, 0.997):  # data near the wrap-around point too
        x = torch.full((m, 1), x0, dtype=torch.float64)
        belief = flow.prior(x.shape, dtype=torch.float64, generator=g)
        for k in range(1, n + 1):
            belief = flow.update(belief, flow.sender_sample(x, alphas[k - 1], generator=g), alphas[k - 1])
            if k in (3, 10):
                sim = flow.sample_flow_at_step(x, k, n, generator=g)
                for b in (belief, sim):
                    assert bool((b.mean >= 0).all() and (b.mean < 1).all())
                c_seq, c_sim = belief.concentration, sim.concentration
                assert abs(float(c_seq.mean() / c_sim.mean()) - 1) < 0.02
                assert abs(float(c_seq.std() / c_sim.std()) - 1) < 0.05
                cos_seq = torch.cos(TWO_PI * (belief.mean - x)).mean()
                cos_sim = torch.cos(TWO_PI * (sim.mean - x)).mean()
                assert abs(float(cos_seq - cos_sim)) < 0.01
                assert float(cos_sim) > 0.5  # the belief points at the data across the boundary


def test_flat_batch_with_per_atom_steps(flow: PeriodicBayesianFlow) -> None:
    batch = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2])
    steps = torch.tensor([0, 10, 4])[batch]
    x = torch.rand(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    belief = flow.sample_flow_at_step(x, steps, 10, generator=torch.Generator().manual_seed(9))
    assert belief.mean.shape == (9, 3) and belief.concentration.shape == (9, 3)
    assert bool((belief.concentration[:2] == 0).all())  # prior: no information ...
    assert not bool(torch.isclose(belief.mean[:2], x[:2]).any())  # ... and no leak of the data through m
    assert bool((belief.concentration[2:] > 0).all())
    assert float(_circ_dist(belief.mean[2:5], x[2:5]).max()) < 0.05  # step 10: c ≈ 10^3
    feature = flow.entropy_conditioning(belief)
    assert bool((feature[:2] == 0).all()) and bool((feature[2:5] > 0.8).all())


def test_entropy_conditioning_signal(flow: PeriodicBayesianFlow) -> None:
    c = torch.tensor([0.0, 1e-9, 1e-7, 1.0, 10.0, 1e3, 1e5])
    f = flow.entropy_conditioning(VonMisesBelief(torch.zeros_like(c), c))
    expected_mid = (math.log(10.0) - math.log(1e-7)) / (math.log(1e3) - math.log(1e-7))
    torch.testing.assert_close(f, torch.tensor([0.0, 0.0, 0.0, 0.7, expected_mid, 1.0, 1.0]))


def test_loss_is_periodic_kl(flow: PeriodicBayesianFlow) -> None:
    x = torch.tensor([[0.001, 0.5, 0.999], [0.25, 0.0, 0.75]], dtype=torch.float64)
    assert_loss_zero_at_data(flow, x, x + 0.01, torch.tensor([0, 7]), 10)
    # integer shifts of the prediction change nothing; errors across the boundary equal errors inside
    torch.testing.assert_close(flow.discrete_time_loss(x, x + 3.0, 5, 10), torch.zeros(2, dtype=torch.float64))
    f64 = torch.float64
    across = flow.discrete_time_loss(torch.tensor([[0.001]], dtype=f64), torch.tensor([[0.999]], dtype=f64), 5, 10)
    inside = flow.discrete_time_loss(torch.tensor([[0.5]], dtype=f64), torch.tensor([[0.502]], dtype=f64), 5, 10)
    torch.testing.assert_close(across, inside, rtol=1e-9, atol=0)
    alpha = flow.step_accuracy(6, 10)
    kl = alpha * bessel_ratio(alpha) * (1 - math.cos(TWO_PI * 0.002))
    torch.testing.assert_close(inside, (10 * kl).reshape(1), rtol=1e-9, atol=0)


def test_prior_and_validation(flow: PeriodicBayesianFlow) -> None:
    prior = flow.prior((4, 3), generator=torch.Generator().manual_seed(0))
    assert bool((prior.concentration == 0).all()) and bool(((prior.mean >= 0) & (prior.mean < 1)).all())
    with pytest.raises(ValueError, match="step indices"):
        flow.sample_flow_at_step(torch.zeros(2, 3), 11, 10)
    with pytest.raises(ValueError, match="period"):
        PeriodicBayesianFlow(period=0.0)
