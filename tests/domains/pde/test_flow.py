import numpy as np
import pytest
import torch

from flowsci.domains.pde.flow import WaveletFlow
from flowsci.domains.pde.model import UNet
from flowsci.errors import InputError
from flowsci.guidance import ObjectiveGuidance


def _model(wavelet="haar", levels=1, grid=32, steps=8, **kw):
    bands = 1 if wavelet == "none" else 4**levels
    net = UNet(in_channels=2 * bands, cond_channels=bands + 2, width=8, mults=(1, 2), time_dim=16)
    return WaveletFlow(net, wavelet=wavelet, levels=levels, grid=grid, steps=steps, **kw)


def _batch(ds):
    return {"u": torch.as_tensor(ds.u.values), "f": torch.as_tensor(ds.f.values)}


def test_encode_decode_round_trip_and_standardisation(small_burgers):
    m = _model("bior2.4")
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    x = m.encode(b["u"], b["f"])
    assert x.shape == (6, 8, 4, 16)
    np.testing.assert_allclose(x.double().mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.double().std(dim=(0, 2, 3)).numpy(), 1.0, atol=1e-4)
    u, f = m.decode(x)
    torch.testing.assert_close(u, b["u"][:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(f, b["f"], atol=1e-5, rtol=1e-5)


def test_loss_is_masked_on_known_channels(small_burgers):
    m = _model(sim_prob=1.0)
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    loss, _ = m.compute_loss(b, generator=torch.Generator().manual_seed(0))
    # with f known everywhere, changing f's targets cannot change the loss... but f enters the input: check the
    # mask directly: the gradient of the loss w.r.t. the output on f channels is zero
    x1 = m.encode(b["u"], b["f"])
    captured = {}

    def hook(module, args, out):
        out.retain_grad()
        captured["out"] = out

    h = m.net.register_forward_hook(hook)
    loss, _ = m.compute_loss(b, generator=torch.Generator().manual_seed(0))
    loss.backward()
    h.remove()
    g = captured["out"].grad
    assert g[:, 4:].abs().max() == 0 and g[:, :4].abs().max() > 0
    assert torch.isfinite(loss) and x1.shape[1] == 8


def test_simulate_keeps_the_given_control_exactly(small_burgers):
    m = _model()
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    ds = m.simulate(b["u"][:, 0], b["f"], steps=3, seed=1)
    np.testing.assert_allclose(ds.f.values, b["f"].numpy(), atol=1e-5)
    np.testing.assert_allclose(ds.u.values[:, 0], b["u"][:, 0].numpy())
    np.testing.assert_allclose(ds.u_solver.values, small_burgers.u.values, atol=1e-5)
    assert ds.attrs["nfe"] == 3 and ds.attrs["task"] == "simulate"
    with pytest.raises(InputError, match="u0"):
        m.simulate(torch.zeros(2, 31), b["f"][:2])
    with pytest.raises(InputError, match="f"):
        m.simulate(b["u"][:, 0])
    with pytest.raises(InputError, match="NaN"):
        m.simulate(torch.full((1, 32), float("nan")), b["f"][:1])


def test_guidance_lowers_the_model_objective(small_burgers):
    torch.manual_seed(0)
    m = _model()
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    with torch.no_grad():  # a random (untrained) velocity field still gives a distribution to steer
        for p in m.net.out.parameters():
            p.normal_(0, 0.05)
    target = b["u"][:, -1]
    free = m.control(b["u"][:, 0], target, steps=8, guidance=0.0)
    guided = m.control(b["u"][:, 0], target, steps=8, guidance=10.0)
    assert guided.J_model.mean() < 0.5 * free.J_model.mean()
    assert {"u_solver", "J_solver", "energy", "objective"} <= set(guided.variables)
    g = ObjectiveGuidance(m.control_objective(target.float()), scale=10.0)
    same = m.control(b["u"][:, 0], target, steps=8, guidance=g)
    np.testing.assert_allclose(same.u.values, guided.u.values, atol=1e-5)


def test_checkpoint_round_trip_samples_identically(tmp_path, small_burgers):
    import pytorch_lightning as pl

    m = _model("db2")
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    loader = torch.utils.data.DataLoader([{"u": b["u"][i], "f": b["f"][i]} for i in range(6)], batch_size=3)
    trainer.fit(m, loader)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = WaveletFlow.from_checkpoint(path)
    torch.testing.assert_close(loaded.band_mean, m.band_mean)
    m.eval()
    a = m.sample(2, steps=2, seed=5)
    c = loaded.sample(2, steps=2, seed=5)
    torch.testing.assert_close(a.x, c.x)
    assert a.dataset.attrs["seed"] == 5 and a.nfe == 2


def test_sample_tasks_and_write(tmp_path, small_burgers):
    m = _model()
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    for task in ("simulate", "control", "joint"):
        sol = m.sample(2, steps=2, seed=0, task=task)
        assert sol.dataset.u.shape == (2, 9, 32) and sol.dataset.attrs["task"] == task
    files = m.write_samples(sol, tmp_path)
    assert [p.name for p in files] == ["samples.nc", "samples.png"]
    with pytest.raises(InputError, match="task"):
        m.sample(1, task="dance")
    with pytest.raises(InputError, match="num"):
        m.sample(0)


def test_physical_space_baseline_and_config_checks(small_burgers):
    m = _model("none")
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    assert m.data_shape == [2, 8, 32]
    assert m.sample(1, steps=1, seed=0).dataset.u.shape == (1, 9, 32)
    with pytest.raises(ValueError, match="in_channels"):
        WaveletFlow(UNet(in_channels=3, cond_channels=6), grid=32, steps=8)
    with pytest.raises(InputError, match="power of two"):
        _model(grid=30)


def test_advection_model_without_control():
    from flowsci.domains.pde.solvers import advection

    ds = advection.generate(4, grid=32, steps=8, seed=0)
    net = UNet(in_channels=4, cond_channels=5, width=8, mults=(1, 2), time_dim=16)
    m = WaveletFlow(net, problem="advection", grid=32, steps=8, horizon=2.0)
    m.fit_statistics(torch.as_tensor(ds.u.values), torch.as_tensor(ds.f.values))
    loss, _ = m.compute_loss(_batch(ds))
    assert torch.isfinite(loss)
    sol = m.sample(2, steps=2, seed=0)
    assert sol.dataset.u.shape == (2, 9, 32) and "u_solver" in sol.dataset
    with pytest.raises(InputError, match="no control"):
        m.sample(1, task="control")


def test_solver_guidance_lowers_the_resimulated_objective(small_burgers):
    m = _model()
    b = _batch(small_burgers)
    m.fit_statistics(b["u"], b["f"])
    with torch.no_grad():
        for p in m.net.out.parameters():
            p.normal_(0, 0.05)
    u0, target = b["u"][:4, 0], b["u"][:4, -1]
    free = m.control(u0, target, steps=4, guidance=0.0)
    guided = m.control(u0, target, steps=4, guidance=10.0, objective="solver")
    assert guided.attrs["guidance_objective"] == "solver"
    assert guided.J_solver.mean() < 0.7 * free.J_solver.mean()
    with pytest.raises(InputError, match="objective"):
        m.control(u0, target, objective="oracle")


def test_fno_surrogate_trains_and_simulates(tmp_path, small_burgers):
    from flowsci.domains.pde.flow import FNOSurrogate
    from flowsci.domains.pde.model import FNO2d

    b = _batch(small_burgers)
    m = FNOSurrogate(FNO2d(width=8, modes=(2, 4), layers=2), grid=32, steps=8)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        loss, _ = m.compute_loss(b)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    ds = m.simulate(b["u"][:, 0], b["f"])
    assert ds.u.shape == (6, 9, 32) and "u_solver" in ds and ds.attrs["nfe"] == 1
    sol = m.sample(2, seed=0)
    assert [p.name for p in m.write_samples(sol, tmp_path)] == ["samples.nc", "samples.png"]


def test_refinement_keeps_the_coarse_trajectory_exactly(small_burgers):
    from flowsci.domains.pde.flow import RefineFlow

    m = RefineFlow(UNet(in_channels=6, cond_channels=2, width=8, mults=(1, 2), time_dim=16))
    b = _batch(small_burgers)
    fine = m._images(b)
    approx, detail = m._split(fine)
    # orthonormal Haar: the approximation band is twice the 2x2 block average
    torch.testing.assert_close(approx, 2 * torch.nn.functional.avg_pool2d(fine, 2), atol=1e-5, rtol=1e-5)
    loss, _ = m.compute_loss(b)
    assert torch.isfinite(loss) and m.detail_std.shape == (6,)
    with torch.no_grad():
        for p in m.net.out.parameters():
            p.normal_(0, 0.1)
    coarse = torch.nn.functional.avg_pool2d(fine, 2)
    out = m.refine(coarse, steps=2, seed=0)
    assert out.shape == fine.shape
    torch.testing.assert_close(torch.nn.functional.avg_pool2d(out, 2), coarse, atol=1e-5, rtol=1e-5)
    twice = m.refine(out, steps=2, seed=0)  # chained to a resolution never seen in training
    assert twice.shape == (6, 2, 16, 64)
    with pytest.raises(InputError, match="coarse"):
        m.refine(torch.zeros(2, 3, 4, 8))


def test_deepcopy_shares_optimizer_factories_and_copies_weights():
    import copy
    import threading
    from functools import partial

    m = _model()
    m.optimizer_factory = partial(torch.optim.Adam, lr=1e-3)
    m.optimizer_factory.lock = threading.Lock()  # a factory that cannot be deep-copied (as under LightningCLI/DDP)
    clone = copy.deepcopy(m)
    assert clone.optimizer_factory is m.optimizer_factory and clone.net is not m.net
    assert "__deepcopy__" not in clone.__dict__ and "__deepcopy__" not in m.__dict__


@pytest.mark.parametrize("wavelet", ["haar", "db4"])
def test_variance_loss_weight_is_the_physical_mse_for_orthonormal_wavelets(small_burgers, wavelet):
    # Parseval: with w_b proportional to sigma_b^2 the band-weighted coefficient error equals the physical MSE / mean
    m = _model(wavelet, loss_weight="variance")
    b = _batch(small_burgers)
    m.fit_statistics(b["u"].double(), b["f"].double())
    m.band_mean, m.band_std = m.band_mean.float(), m.band_std.float()
    g = torch.Generator().manual_seed(1)
    pred, target = torch.randn(3, 8, 4, 16, generator=g), torch.randn(3, 8, 4, 16, generator=g)
    known = torch.zeros(3, 8, 1, 1, dtype=torch.bool)
    known[:, 4:] = True  # f given: only u's bands count
    loss = m.masked_loss(pred, target, known)
    u_err = m.transform.inverse((pred - target) * m.band_std.reshape(1, -1, 1, 1))[:, 0]
    physical = u_err.pow(2).mean() / m.band_std[:4].pow(2).mean()
    torch.testing.assert_close(loss, physical, rtol=1e-5, atol=1e-7)


def test_band_weights_follow_the_training_statistics(small_burgers):
    b = _batch(small_burgers)
    weights = {}
    for name in ("uniform", "std", "variance"):
        m = _model("bior2.4", loss_weight=name)
        m.fit_statistics(b["u"], b["f"])
        w = m.band_weights()
        torch.testing.assert_close(w.reshape(2, 4).mean(1), torch.ones(2, dtype=w.dtype))
        weights[name] = w
    assert torch.all(weights["uniform"] == 1)
    ratio = weights["std"] / m.band_std
    torch.testing.assert_close(ratio[:4], ratio[:1].expand(4))  # proportional to sigma_b within a field
    assert weights["variance"][0] > weights["std"][0] > 1 > weights["std"][3] > weights["variance"][3]
    with pytest.raises(ValueError, match="loss_weight"):
        _model(loss_weight="energy")


def test_scale_power_interpolates_between_per_field_and_per_band_scales(small_burgers):
    b = _batch(small_burgers)
    scales = {}
    for p in (0.0, 0.5, 1.0):
        m = _model("bior2.4", scale_power=p)
        m.fit_statistics(b["u"], b["f"])
        scales[p] = m.band_std.reshape(2, 4)
    sigma = scales[1.0]
    field = sigma.pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(scales[0.0], field.expand(2, 4))
    torch.testing.assert_close(scales[0.5], (sigma * field).sqrt())
    # with p = 1/2 a detail band keeps variance sigma_b / sigma_F < 1 in the model's coordinates
    m = _model("bior2.4", scale_power=0.5)
    m.fit_statistics(b["u"], b["f"])
    var = m.encode(b["u"], b["f"]).double().var(dim=(0, 2, 3)).reshape(2, 4)
    torch.testing.assert_close(var, (sigma / field).double(), rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="scale_power"):
        _model(scale_power=1.5)


@pytest.fixture(scope="module")
def small_ns2d():
    from flowsci.domains.pde.solvers import NS2D

    return NS2D(horizon=1.0).generate(4, grid=16, steps=8, seed=0)


def _ns2d_model(**kw):
    net = UNet(in_channels=16, cond_channels=10, width=8, mults=(1, 2), time_dim=16, dims=3)
    return WaveletFlow(net, wavelet="bior2.4", problem="ns2d", grid=16, steps=8, horizon=1.0, nu=1e-3, **kw)


def test_ns2d_model_transforms_over_t_y_x_and_simulates(small_ns2d, tmp_path):
    from flowsci.domains.pde.metrics import plot_fields

    u, f = torch.as_tensor(small_ns2d.u.values), torch.as_tensor(small_ns2d.f.values)
    m = _ns2d_model(scale_power=0.5)
    m.fit_statistics(u, f)
    x = m.encode(u, f)
    assert x.shape == (4, 16, 4, 8, 8) and tuple(m.data_shape) == (16, 4, 8, 8)
    uu, ff = m.decode(x)
    torch.testing.assert_close(uu, u[:, 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ff, f, atol=1e-5, rtol=1e-5)
    loss, _ = m.compute_loss({"u": u, "f": f}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    ds = m.simulate(u[:, 0], f, steps=2)
    assert ds.u.dims == ("sample", "time", "y", "x") and ds.u.shape == (4, 9, 16, 16)
    np.testing.assert_array_equal(ds.f.values, f.numpy())
    np.testing.assert_allclose(ds.u_solver.values, u.numpy(), atol=1e-5)  # re-simulation = the data's solver
    assert plot_fields(ds, tmp_path / "ns.png").stat().st_size > 0
    with pytest.raises(InputError, match="1D"):
        m.control(u[:, 0], u[:, -1], steps=2)
    with pytest.raises(InputError, match="u0"):
        m.simulate(u[:, 0, 0], f, steps=2)
    with pytest.raises(ValueError, match="dims=3"):
        WaveletFlow(UNet(in_channels=16, cond_channels=10, width=8, dims=2), problem="ns2d", grid=16, steps=8)


def _chain(small_burgers, fields=2, detail_scale=None):
    """A base WaveletFlow on 8 x 8 (statistics of the block-averaged data) and a RefineFlow with random outputs."""
    from flowsci.domains.pde.flow import MultiResolutionFlow, RefineFlow

    b = _batch(small_burgers)  # 32 points x 8 steps: the fine grid of a 4x chain in x, 2x in t
    base = _model(grid=8, steps=4)
    u_c = torch.nn.functional.avg_pool1d(b["u"], 4)[:, ::2]
    f_c = torch.nn.functional.avg_pool2d(b["f"][:, None], (2, 4))[:, 0]
    base.fit_statistics(u_c, f_c)
    ref = RefineFlow(UNet(in_channels=3 * fields, cond_channels=fields, width=8, mults=(1, 2), time_dim=16))
    ref.detail_std = torch.full((3 * fields,), 0.05 if detail_scale is None else detail_scale, dtype=torch.float64)
    with torch.no_grad():
        for p in ref.net.out.parameters():
            p.normal_(0, 0.1)
    return MultiResolutionFlow(base, ref)


def test_multiresolution_chain_keeps_the_base_trajectory_and_counts_nfe(small_burgers):
    """base -> 2x -> 4x: the 4 x 4 block average of the chained u is the base model's generated trajectory, the
    control is the given fine one, the coordinates are the fine grid's, and NFE counts every evaluation."""
    from flowsci.domains.pde.solvers import burgers

    fine = burgers.generate(3, grid=32, steps=16, seed=2)
    chain = _chain(small_burgers)
    u0, f = torch.as_tensor(fine.u.values[:, 0]), torch.as_tensor(fine.f.values)
    ds = chain.simulate(u0, f, steps=3, factor=4, refine_steps=2, seed=5, resimulate=True)
    assert ds.u.shape == (3, 17, 32) and ds.f.shape == (3, 16, 32)
    assert ds.attrs["nfe"] == 3 + 2 * 2 and ds.attrs["base_nfe"] == 3 and ds.attrs["resolution_factor"] == 4
    np.testing.assert_allclose(ds.x.values, fine.x.values)  # interior points i / 33
    np.testing.assert_allclose(ds.time.values, np.linspace(0, 1, 17))
    assert ds.x.attrs["axis"] == "X" and ds.time.attrs["axis"] == "T" and ds.attrs["Conventions"].startswith("CF")
    np.testing.assert_allclose(ds.f.values, fine.f.values, atol=1e-6)
    np.testing.assert_allclose(ds.u.values[:, 0], fine.u.values[:, 0], atol=1e-6)
    np.testing.assert_allclose(ds.u_solver.values, fine.u.values, atol=1e-5)
    # the base model alone on the block-averaged (u0, f), same seed
    u0_c = torch.nn.functional.avg_pool1d(u0[:, None].float(), 4)[:, 0]
    f_c = torch.nn.functional.avg_pool2d(f[:, None].float(), 4)[:, 0]
    base = chain.base.simulate(u0_c, f_c, steps=3, seed=5, resimulate=False)
    pooled = torch.nn.functional.avg_pool2d(torch.as_tensor(ds.u.values[:, None, 1:]), 4)[:, 0]
    np.testing.assert_allclose(pooled.numpy(), base.u.values[:, 1:], atol=1e-5)
    assert float(np.abs(ds.u.values[:, 1:] - np.repeat(np.repeat(base.u.values[:, 1:], 4, 1), 4, 2)).max()) > 1e-3
    # factor 1 is the base model alone
    one = chain.simulate(u0_c, f_c, steps=3, factor=1, seed=5)
    np.testing.assert_allclose(one.u.values, base.u.values, atol=1e-6)
    assert one.attrs["nfe"] == 3


def test_multiresolution_chain_without_details_is_block_constant_upsampling(small_burgers):
    """With zero detail statistics the refiner adds nothing: the chain returns the generated base trajectory
    repeated over 2 x 2 blocks (a closed form)."""
    from flowsci.domains.pde.solvers import burgers

    fine = burgers.generate(2, grid=32, steps=16, seed=3)
    chain = _chain(small_burgers, detail_scale=0.0)
    u0, f = torch.as_tensor(fine.u.values[:, 0]), torch.as_tensor(fine.f.values)
    ds = chain.simulate(u0, f, steps=2, factor=4, seed=1)
    u0_c = torch.nn.functional.avg_pool1d(u0[:, None].float(), 4)[:, 0]
    f_c = torch.nn.functional.avg_pool2d(f[:, None].float(), 4)[:, 0]
    base = chain.base.simulate(u0_c, f_c, steps=2, seed=1, resimulate=False).u.values[:, 1:]
    np.testing.assert_allclose(ds.u.values[:, 1:], np.repeat(np.repeat(base, 4, 1), 4, 2), atol=1e-5)


def test_multiresolution_chain_rejects_bad_factors_and_grids(small_burgers):
    chain = _chain(small_burgers)
    u0, f = torch.zeros(2, 32), torch.zeros(2, 16, 32)
    for bad in (3, 0, 6, 2.0):
        with pytest.raises(InputError, match="power of two"):
            chain.simulate(u0, f, factor=bad)
    with pytest.raises(InputError, match=r"u0.*\[B, 16\]"):  # factor 2 needs 16 points
        chain.simulate(u0, f, factor=2)
    with pytest.raises(InputError, match=r"f.*\[2, 16, 32\]"):
        chain.simulate(u0, torch.zeros(2, 8, 32), factor=4)
    with pytest.raises(InputError, match="control"):
        chain.simulate(u0, None, factor=4)
    with pytest.raises(InputError, match="NaN"):
        chain.simulate(torch.full((2, 32), float("nan")), f, factor=4)


def test_multiresolution_chain_for_a_problem_without_control():
    """Advection (one field): the 2x chain keeps the base model's trajectory as its 2 x 2 block means."""
    from flowsci.domains.pde.flow import MultiResolutionFlow, RefineFlow
    from flowsci.domains.pde.solvers import advection

    ds = advection.generate(3, grid=16, steps=8, seed=0)
    net = UNet(in_channels=4, cond_channels=5, width=8, mults=(1, 2), time_dim=16)
    base = WaveletFlow(net, problem="advection", grid=8, steps=4, horizon=2.0)
    u = torch.as_tensor(ds.u.values)
    base.fit_statistics(torch.nn.functional.avg_pool1d(u, 2)[:, ::2], torch.zeros(3, 4, 8))
    ref = RefineFlow(UNet(in_channels=3, cond_channels=1, width=8, mults=(1, 2), time_dim=16), fields=1)
    ref.detail_std = torch.full((3,), 0.05, dtype=torch.float64)
    chain = MultiResolutionFlow(base, ref)
    out = chain.simulate(u[:, 0], steps=2, factor=2, seed=0)
    assert out.u.shape == (3, 9, 16) and out.attrs["nfe"] == 4
    np.testing.assert_allclose(out.x.values, ds.x.values)  # cell centres (j + 1/2) / 16
    coarse = base.simulate(torch.nn.functional.avg_pool1d(u[:, None, 0], 2)[:, 0], steps=2, seed=0, resimulate=False)
    pooled = torch.nn.functional.avg_pool2d(torch.as_tensor(out.u.values[:, None, 1:]), 2)[:, 0]
    np.testing.assert_allclose(pooled.numpy(), coarse.u.values[:, 1:], atol=1e-5)
    with pytest.raises(InputError, match="no control"):
        chain.simulate(u[:, 0], torch.zeros(3, 8, 16), factor=2)
    with pytest.raises(InputError, match="resimulate"):
        chain.simulate(u[:, 0], factor=2, resimulate=True)
    with pytest.raises(InputError, match="fields"):
        MultiResolutionFlow(base, RefineFlow(UNet(in_channels=6, cond_channels=2, width=8, mults=(1, 2))))
