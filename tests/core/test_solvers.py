import math

import pytest
import torch
from scipy.integrate import quad

from flowsci.solvers import solve_ode
from flowsci.testing import assert_solver_order

M, S = 2.0, 0.5  # target N(M, S^2) from source N(0, 1) under the CondOT path


def gaussian_velocity(x, t):
    """Exact marginal velocity of the CondOT path from N(0,1) to N(M, S^2) (independent coupling)."""
    t = t.reshape(-1, *([1] * (x.dim() - 1))).to(x)
    var = (1 - t) ** 2 + t**2 * S**2
    return M + (t * S**2 - (1 - t)) / var * (x - t * M)


def _x0(n=4000, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize(
    "method,nfe_per_step,atol", [("euler", 1, 5e-2), ("midpoint", 2, 1e-5), ("heun", 2, 5e-4), ("rk4", 4, 1e-7)]
)
def test_transport_gaussian_to_gaussian(method, nfe_per_step, atol):
    x0 = _x0()
    sol = solve_ode(gaussian_velocity, x0, method=method, steps=64)
    assert sol.nfe == 64 * nfe_per_step
    # the exact flow map is x -> M + S x
    torch.testing.assert_close(sol.x, M + S * x0, atol=atol, rtol=0)
    assert abs(sol.x.mean().item() - (M + S * x0.mean().item())) < 3 * atol
    assert abs(sol.x.std().item() / x0.std().item() - S) < 3 * atol


def linear_velocity(x, t):
    """x' = cos(3t) x + t^2, solved exactly by variation of constants."""
    t = t.reshape(-1, 1).to(x)
    return torch.cos(3 * t) * x + t**2


def linear_exact(x0):
    integral = quad(lambda u: math.exp(-math.sin(3 * u) / 3) * u * u, 0, 1, epsabs=1e-14)[0]
    return math.exp(math.sin(3) / 3) * (x0 + integral)


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_convergence_order(method, order):
    x0 = _x0(16)
    assert_solver_order(linear_velocity, x0, linear_exact(x0), method, order, tol=0.2, steps=(16, 32, 64, 128))


def test_dopri5_reports_nfe_and_accuracy():
    x0 = _x0(256)
    sol = solve_ode(gaussian_velocity, x0, method="dopri5", atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(sol.x, M + S * x0, atol=1e-6, rtol=0)
    assert sol.nfe > 6


def test_trajectory_custom_and_backward_grid():
    x0 = _x0(32)
    grid = torch.linspace(0, 1, 41) ** 2  # denser near t=0
    sol = solve_ode(gaussian_velocity, x0, method="rk4", time_grid=grid, return_trajectory=True)
    assert len(sol.trajectory) == 41 and sol.nfe == 160
    torch.testing.assert_close(sol.trajectory[0], x0)
    torch.testing.assert_close(sol.x, M + S * x0, atol=1e-5, rtol=0)
    back = solve_ode(gaussian_velocity, sol.x, method="rk4", time_grid=torch.linspace(1, 0, 65))
    torch.testing.assert_close(back.x, x0, atol=1e-5, rtol=0)


def test_conditioning_is_forwarded():
    def v(x, t, shift):
        assert t.shape == (x.shape[0],)
        return torch.zeros_like(x) + shift

    sol = solve_ode(v, torch.zeros(3, 1), method="midpoint", steps=3, shift=torch.tensor(2.0))
    torch.testing.assert_close(sol.x, torch.full((3, 1), 2.0))


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown solver"):
        solve_ode(gaussian_velocity, _x0(2), method="leapfrog", steps=2)


def test_order_helper_fails_on_wrong_order():
    x0 = _x0(16)
    with pytest.raises(AssertionError, match="observed order"):
        assert_solver_order(linear_velocity, x0, linear_exact(x0), "euler", 2, tol=0.25)
