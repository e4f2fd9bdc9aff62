from importlib import resources

import pytest
import torch
import yaml

from flowsci.benchspec import BenchmarkSpec
from flowsci.domains.pde.benchmark import SIZES, spec


@pytest.mark.parametrize("suite", ["smoke", "quick", "full"])
def test_specs_are_valid(suite):
    s = spec(suite)
    assert isinstance(s, BenchmarkSpec) and s.name == "pde"
    names = [m.name for m in s.methods]
    assert {
        "wdno-sim",
        "wdno-control-model",
        "wdno-control-solver",
        "wdno-unguided",
        "phys-sim",
        "phys-control-model",
        "wdno-sim-2w",
        "wdno-ddim-sim",
        "wdno-ddim-control-solver",
        "phys-ddim-sim",
        "phys-ddim-control-solver",
        "wdno-advection",
        "phys-advection",
        "refine-burgers-4x",
        "bilinear-burgers-4x",
        "refine-advection-4x",
        "bilinear-advection-4x",
        "chain-burgers-4x",
        "chain-bilinear-burgers-4x",
    } <= set(names)
    assert s.version == "3"  # v3: EMA of the weights, v-prediction DDPM; cached weights of v2 are stale
    assert any(m.baseline for m in s.methods)
    from flowsci.callbacks import EMA
    from flowsci.domains.pde.benchmark import EMA_DECAY, fit_advection, fit_chain

    for m in s.methods:  # one recipe: every row the default trainer trains keeps an EMA of its weights
        if m.train_steps != 0 and m.weights_of is None:
            if m.fit is None:
                (ema,) = m.callbacks()
                assert isinstance(ema, EMA) and ema.decay == EMA_DECAY
            else:  # both add the same EMA callback themselves
                assert m.fit is fit_chain or m.fit.func is fit_advection
    assert s.train_steps == SIZES[suite]["train_steps"]
    with pytest.raises(ValueError, match="suite"):
        spec("huge")


@pytest.mark.parametrize("name", ["wdno_burgers.yaml", "wdno_burgers_paper.yaml", "wdno_ns2d.yaml"])
def test_configs_build_consistent_models(name):
    from flowsci.domains.pde import UNet, WaveletFlow

    cfg = yaml.safe_load(resources.files("flowsci.configs").joinpath("pde", name).read_text())
    args = cfg["model"]["init_args"]
    net = UNet(**args["net"]["init_args"])
    kwargs = {k: v for k, v in args.items() if k not in ("net", "optimizer")}
    model = WaveletFlow(net, **kwargs)
    assert model.data_shape[0] == net.config["in_channels"]


def test_domain_object_and_reference():
    from flowsci.domains.pde import DOMAIN, WaveletFlow, reference

    assert DOMAIN.module is WaveletFlow and DOMAIN.name == "pde"
    ref = reference(3)
    assert ref.u.shape == (3, 33, 128) and ref.f.shape == (3, 32, 128)
    assert resources.files("flowsci.configs").joinpath(DOMAIN.tiny_config).is_file()


def test_diagnosis_helpers_train_and_score_end_to_end():
    """The documented diagnostics run at toy size; bilinear upsampling of smooth Burgers fields is accurate."""
    import math

    from flowsci.domains.pde.benchmark import ablation, ns2d_simulation, resolution_generalisation

    res = resolution_generalisation(train_steps=2, num_train=8, num_test=2, steps=2)
    rows = [v for k, v in res.items() if k != "train_s"]
    assert len(rows) == 3 and res["train_s"] > 0
    for row in rows:
        assert all(math.isfinite(x) for x in row.values())
        assert row["bilinear_rel_l2_u"] < 0.1  # smooth fields: interpolation is already close
    abl = ablation(train_steps=2, num_test=2, nfe=(2,))
    assert set(abl["nfe2"]) == {"rel_l2", "frmse_low", "frmse_mid", "frmse_high"}
    assert len(abl["band_rms_error"]) == 4 and all(math.isfinite(x) for x in abl["band_rms_error"])
    # zeroing the detail bands changes only the detail content, never the low band by more than its own error
    assert abs(abl["frmse_nfe10_details_zeroed"]["frmse_low"] - abl["frmse_nfe10"]["frmse_low"]) < 0.01
    ddpm = ablation(train_steps=2, num_test=2, nfe=(2,), diffusion=True, ema=True, prediction="eps", test_seed=20_000)
    assert math.isfinite(ddpm["nfe2"]["rel_l2"])
    ns = ns2d_simulation(train_steps=2, num_train=4, num_test=2, nfe=(2,), grid=16, steps=8)
    assert set(ns) == {"train_s", "persistence_rel_l2", "nfe2_rel_l2"} and math.isfinite(ns["nfe2_rel_l2"])
    assert 0.1 < ns["persistence_rel_l2"] < 10  # the vorticity changes over the horizon


def test_resolution_rows_keep_the_base_trajectory_and_count_nfe():
    """The 4x rows: bilinear upsampling is close on smooth Burgers fields; a RefineFlow whose details are all zero
    returns the block-constant upsampling, whose 4x4 block average is exactly the base-resolution input."""
    from flowsci.benchspec import SampleRequest
    from flowsci.domains.pde.benchmark import RESOLUTION_FACTOR, UntrainedRow, build_refine, sample_upsampled

    size = SIZES["smoke"]
    req = SampleRequest(None, None, 3, "euler", 2, 2, 0)
    bil = sample_upsampled(UntrainedRow("bilinear"), req, size)
    ds = bil.dataset
    k = RESOLUTION_FACTOR
    assert ds.u.shape == (3, size["steps"] * k + 1, size["grid"] * k) and ds.attrs["task"] == "simulate"
    u, truth = torch.as_tensor(ds.u.values[:, 1:]), torch.as_tensor(ds.u_solver.values[:, 1:])
    assert float((u - truth).norm() / truth.norm()) < 0.15

    model = build_refine(None, size)
    model.detail_std = torch.full((6,), 1e-12, dtype=torch.float64)  # details ~ 0 whatever the network says
    out = sample_upsampled(model, req, size)
    assert out.nfe == 2 * req.steps  # two chained 2x refinements
    fine = torch.as_tensor(out.dataset.u.values[:, 1:])[:, None].double()
    pooled = torch.nn.functional.avg_pool2d(fine, k)
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(truth[:, None].double(), k), atol=1e-5, rtol=0)
    adv = sample_upsampled(UntrainedRow("bilinear"), req, size, problem="advection")
    assert adv.dataset.u.shape == (3, size["steps"] * k + 1, size["grid"] * k)


def test_chain_rows_train_both_parts_and_share_the_base_trajectory():
    """The chain rows: fit_chain trains the base and the refiner (statistics set, weights moved); the 4 x 4 block
    average of the refined row is the base model's generated trajectory; NFE = base + two refinements."""
    from flowsci.benchspec import SampleRequest
    from flowsci.domains.pde.benchmark import _burgers_datamodule, build_chain, fit_chain, sample_chain

    size = SIZES["smoke"]
    dm = _burgers_datamodule(size)
    model = build_chain(dm, size)
    before = [p.detach().clone() for p in model.refiner.parameters()]
    fit_chain(model, dm, 2, torch.device("cpu"))
    assert model.base.band_std is not None and model.refiner.detail_std is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, model.refiner.parameters(), strict=True))
    req = SampleRequest(None, None, 2, "euler", 2, 2, 0)
    chain = sample_chain(model, req, size)
    bil = sample_chain(model, req, size, upsample="bilinear")
    assert chain.nfe == 3 * 2 and bil.nfe == 2
    shape = (2, size["steps"] * 4 + 1, size["grid"] * 4)
    assert chain.dataset.u.shape == shape == bil.dataset.u.shape
    pool = torch.nn.functional.avg_pool2d
    base = model.simulate(
        torch.nn.functional.avg_pool1d(torch.as_tensor(chain.dataset.u.values[:, None, 0]), 4)[:, 0],
        pool(torch.as_tensor(chain.dataset.f.values[:, None]), 4)[:, 0],
        steps=2,
        factor=1,
        seed=0,
    )
    pooled = pool(torch.as_tensor(chain.dataset.u.values[:, None, 1:]), 4)[:, 0]
    torch.testing.assert_close(pooled, torch.as_tensor(base.u.values[:, 1:]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="upsample"):
        sample_chain(model, req, size, upsample="cubic")
