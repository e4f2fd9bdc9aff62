"""Inversion and reconstruction: solver error ordering at equal NFE on a field with a known flow map."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from flowsci.inversion import INVERSION_SOLVERS, integrate, invert, reconstruct, round_trip
from flowsci.manifolds import SO3, quaternion_to_rotvec
from flowsci.solvers import make_time_grid, solve_ode

torch.set_num_threads(1)

MU = torch.tensor([2.0, -1.0], dtype=torch.float64)
S = torch.tensor([0.2, 1.5], dtype=torch.float64)


def velocity(x: Tensor, t: Tensor) -> Tensor:
    """CondOT marginal velocity N(0, I) -> N(MU, diag S^2); flow map x_t = t MU + sqrt(t^2 S^2 + (1-t)^2) z."""
    tt = t[:, None]
    var = tt**2 * S**2 + (1 - tt) ** 2
    return MU + (tt * S**2 - (1 - tt)) / var * (x - tt * MU)


def _data(n: int = 64) -> tuple[Tensor, Tensor]:
    z = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return z, MU + S * z


def test_inversion_error_ordering_at_equal_nfe() -> None:
    z, x1 = _data()
    nfe = 32
    err = {}
    for solver in ("euler", "midpoint", "rf_solver", "taylor2_fd", "rk4"):
        steps = nfe // INVERSION_SOLVERS[solver]
        sol = invert(velocity, x1, steps=steps, solver=solver)
        assert sol.nfe == nfe
        err[solver] = (sol.x - z).norm(dim=1).mean().item()
    assert err["rk4"] < err["midpoint"] < err["euler"]
    assert err["midpoint"] < err["taylor2_fd"] < err["euler"]
    assert err["rf_solver"] == pytest.approx(err["midpoint"], rel=1e-6)  # the RF-Solver step is the midpoint rule


def test_round_trip_error_ordering_and_convergence_order() -> None:
    _, x1 = _data()
    rt = {
        s: round_trip(velocity, x1, steps=32 // n, solver=s)["error"].mean().item()
        for s, n in INVERSION_SOLVERS.items()
    }
    assert rt["rk4"] < rt["rf_solver"] < rt["taylor2_fd"] < rt["euler"]
    # halving the step: Euler halves the round-trip error, the Taylor step divides it by at least 4
    e8 = round_trip(velocity, x1, steps=8, solver="rf_solver")["error"].mean().item()
    e16 = round_trip(velocity, x1, steps=16, solver="rf_solver")["error"].mean().item()
    assert e8 / e16 > 3.0  # at least second order (the round trip cancels part of the error)
    e1 = round_trip(velocity, x1, steps=8, solver="euler")["error"].mean().item()
    e2 = round_trip(velocity, x1, steps=16, solver="euler")["error"].mean().item()
    assert 1.6 < e1 / e2 < 2.5


def test_reconstruct_matches_solve_ode_and_validates() -> None:
    z, _ = _data(8)
    ref = solve_ode(velocity, z, method="midpoint", steps=10)
    out = reconstruct(velocity, z, steps=10, solver="rf_solver")
    torch.testing.assert_close(out.x, ref.x, atol=1e-12, rtol=0)
    with pytest.raises(ValueError):
        integrate(velocity, z, make_time_grid(4), solver="nope")


def test_so3_inversion_with_mask() -> None:
    so3 = SO3()

    def v(q: Tensor, t: Tensor) -> Tensor:
        r = quaternion_to_rotvec(q)
        th = r.norm(dim=-1, keepdim=True)
        return (1.0 + t[:, None, None]) * torch.sin(th) / th.clamp_min(1e-9) * r * -1.0

    q0 = so3.random_base((6, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[:, 2] = False
    q1 = solve_ode(v, q0, method="rk4", steps=200, manifold=so3).x
    q1 = torch.where(mask[..., None], q1, so3.origin((6, 3), dtype=torch.float64))
    errs = {}
    for solver in ("euler", "rf_solver", "taylor2_fd"):
        inv = invert(v, q1, steps=16 // INVERSION_SOLVERS[solver], solver=solver, manifold=so3, mask=mask)
        errs[solver] = so3.dist(inv.x, q0)[mask].mean().item()
        torch.testing.assert_close(inv.x[~mask], q1[~mask])  # padding untouched
    assert errs["rf_solver"] < errs["euler"] and errs["taylor2_fd"] < errs["euler"]
    rt = round_trip(v, q1, steps=8, solver="rf_solver", manifold=so3, mask=mask)
    assert rt["error"].max() < 1e-2 and rt["nfe"] == 32
