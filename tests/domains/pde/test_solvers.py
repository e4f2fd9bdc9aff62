import math

import numpy as np
import pytest
import torch

from flowsci.domains.pde.solvers import (
    Burgers,
    advect_spectral,
    advection,
    burgers,
    ns2d,
    solve_burgers,
    solve_burgers_numpy,
    solve_ns2d,
    square_pulse_cell_average,
)
from flowsci.errors import InputError


def _order(errors, ratio=2.0):
    return [math.log(errors[i] / errors[i + 1], ratio) for i in range(len(errors) - 1)]


def test_burgers_second_order_in_space_on_nested_grids():
    # smooth data, dt ~ dx^2 (diffusive limit) => total error O(dx^2); reference on a 8x finer nested grid
    def run(m):
        nx = m - 1
        x = torch.arange(1, m, dtype=torch.float64) / m
        u0 = torch.sin(math.pi * x)[None] + 0.5 * torch.sin(2 * math.pi * x)[None]
        f = (0.3 * torch.cos(math.pi * x))[None, None].expand(1, 1, nx).clone()
        k = max(1, round(0.1 / (0.2 / m**2 / 0.05)))
        return solve_burgers(u0, f, nu=0.05, horizon=0.1, substeps=k)[0, -1]

    ref = run(512)
    errs = []
    for m in (32, 64, 128):
        u = run(m)
        errs.append(float((u - ref[512 // m - 1 :: 512 // m]).abs().max()))
    orders = _order(errs)
    assert all(1.8 < p < 2.3 for p in orders), (errs, orders)


def test_burgers_torch_matches_numpy_reference():
    p = burgers.sample_params(3, grid=32, steps=4, seed=1)
    a = solve_burgers(p["u0"], p["f"]).numpy()
    b = solve_burgers_numpy(p["u0"].numpy(), p["f"].numpy())
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_burgers_zero_state_stays_zero_and_forcing_integrates():
    # u0 = 0, f constant in x-interior: for small T the solution is ~ f * t away from the walls
    u0 = torch.zeros(1, 63, dtype=torch.float64)
    f = torch.full((1, 2, 63), 0.5, dtype=torch.float64)
    u = solve_burgers(u0, f, nu=0.01, horizon=0.02)
    assert abs(float(u[0, -1, 32]) - 0.5 * 0.02) < 1e-6
    assert torch.equal(solve_burgers(u0, torch.zeros_like(f))[0, -1], u0[0])


def test_burgers_generation_is_deterministic_and_chunk_independent():
    a = burgers.generate(4, grid=16, steps=4, seed=3)
    b = burgers.generate(2, grid=16, steps=4, seed=3, start=2)
    np.testing.assert_array_equal(a.u.values[2:], b.u.values)
    np.testing.assert_array_equal(b["sample"].values, [2, 3])
    c = burgers.generate(4, grid=16, steps=4, seed=4)
    assert not np.allclose(a.u.values, c.u.values)
    assert a.u.shape == (4, 5, 16) and a.f.shape == (4, 4, 16)
    assert a.attrs["Conventions"] == "CF-1.10" and a.u.attrs["units"] == "1"


def test_burgers_refined_generation_converges_to_fine_grid():
    coarse = burgers.generate(2, grid=31, steps=4, seed=0)
    fine = burgers.generate(2, grid=31, steps=4, seed=0, refine=2)
    finer = burgers.generate(2, grid=31, steps=4, seed=0, refine=4)
    e1 = float(np.abs(coarse.u - finer.u).max())
    e2 = float(np.abs(fine.u - finer.u).max())
    assert e2 < e1 / 2


def test_burgers_distributions_follow_the_recipe():
    p = Burgers().sample_params(200, grid=64, steps=8, seed=0)
    u0 = p["u0"]
    assert float(u0.max()) <= 2.0 + 1e-9 and float(u0.min()) >= -2.0 - 1e-9
    assert float(u0[:, :16].mean()) > 0 > float(u0[:, -16:].mean())  # positive bump left, negative right
    assert float(p["f"].abs().max()) <= 1.5 * 8


def test_bad_grid_arguments():
    with pytest.raises(InputError, match="grid"):
        burgers.generate(2, grid=1)
    with pytest.raises(InputError, match="n"):
        burgers.generate(0)
    with pytest.raises(InputError, match="u0/f"):
        solve_burgers(torch.zeros(2, 8), torch.zeros(2, 3, 9))


def test_advection_spectral_shift_is_exact_for_band_limited_data():
    nx = 64
    x = torch.arange(nx, dtype=torch.float64) / nx
    u0 = (torch.sin(2 * math.pi * 3 * x) + 0.5 * torch.cos(2 * math.pi * 5 * x))[None]
    times = torch.tensor([0.0, 0.3, 1.7], dtype=torch.float64)
    beta = torch.tensor([0.7], dtype=torch.float64)
    u = advect_spectral(u0, beta, times)
    arg = x[None] - 0.7 * times[:, None]
    exact = torch.sin(2 * math.pi * 3 * arg) + 0.5 * torch.cos(2 * math.pi * 5 * arg)
    assert (u[0] - exact).abs().max() < 1e-12


def test_advection_spectral_converges_spectrally_for_smooth_data():
    def err(nx):
        x = torch.arange(nx, dtype=torch.float64) / nx
        g = lambda s: torch.exp(-((torch.remainder(s, 1.0) - 0.5) ** 2) / 0.01)  # noqa: E731
        u = advect_spectral(
            g(x)[None], torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.37], dtype=torch.float64)
        )
        return float((u[0, 0] - g(x - 0.37)).abs().max())

    e16, e32, e64 = err(16), err(32), err(64)
    assert e32 < e16 / 10 and e64 < 1e-9


def test_square_pulse_cell_average_conserves_mass_and_handles_wrap():
    left = torch.tensor([0.95, 0.3], dtype=torch.float64)
    width = torch.tensor([0.2, 0.15], dtype=torch.float64)
    height = torch.tensor([2.0, -1.0], dtype=torch.float64)
    u = square_pulse_cell_average(left, width, height, 50)
    np.testing.assert_allclose(u.mean(-1).numpy(), (height * width).numpy(), atol=1e-12)
    assert float(u[0, 0]) == pytest.approx(2.0) and float(u[0, 25]) == 0.0


def test_advection_dataset_pulse_moves_with_speed():
    ds = advection.generate(3, grid=32, steps=4, seed=0)
    assert ds.u.shape == (3, 5, 32) and float(np.abs(ds.f).max()) == 0.0
    assert np.all((ds.beta.values >= 0.1) & (ds.beta.values <= 1.0))
    # mass is conserved exactly by advection
    np.testing.assert_allclose(ds.u.mean("x").values, ds.u.mean("x").values[:, :1].repeat(5, 1), atol=1e-5)


def test_ns2d_taylor_green_first_order_in_time():
    n, nu, horizon = 16, 0.1, 1.0
    g = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    y, x = torch.meshgrid(g, g, indexing="ij")
    w0 = (2 * torch.sin(x) * torch.sin(y))[None]
    forcing = torch.zeros(1, 1, n, n, dtype=torch.float64)
    exact = w0 * math.exp(-2 * nu * horizon)  # |k|^2 = 2; the nonlinear term vanishes for Taylor-Green
    errs = [
        float((solve_ns2d(w0, forcing, nu, horizon, dt)[0, -1] - exact[0]).abs().max()) for dt in (0.1, 0.05, 0.025)
    ]
    orders = _order(errs)
    assert all(0.9 < p < 1.1 for p in orders), (errs, orders)


def test_ns2d_dataset_shapes_and_mean_vorticity_zero():
    ds = ns2d.generate(2, grid=16, steps=4, seed=0)
    assert ds.u.shape == (2, 5, 16, 16) and ds.f.shape == (2, 4, 16, 16) and ds.c.shape == (2, 4, 8)
    assert float(np.abs(ds.u.mean(("x", "y"))).max()) < 1e-5
    assert np.isfinite(ds.u.values).all()


def test_burgers_autograd_path_equals_fast_path_and_is_differentiable():
    p = burgers.sample_params(2, grid=32, steps=4, seed=7)
    fast = solve_burgers(p["u0"], p["f"])
    f = p["f"].clone().requires_grad_(True)
    slow = solve_burgers(p["u0"], f)
    torch.testing.assert_close(slow.detach(), fast, atol=1e-13, rtol=0)
    (slow[:, -1] ** 2).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0


def test_ns2d_default_trajectories_stay_bounded():
    # the explicit nonlinear term blew up half of the trajectories at dt = 1e-2 (32^2, T = 10)
    from flowsci.domains.pde.solvers import NS2D

    w = NS2D().generate(4, grid=32, steps=8, seed=0).u.values
    assert np.isfinite(w).all() and np.abs(w).max() < 20
