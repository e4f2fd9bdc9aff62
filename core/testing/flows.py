"""Assertion helpers for paths and solvers, reusable by every domain's tests."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from flowsci.paths import ProbPath
from flowsci.solvers import solve_ode

__all__ = ["assert_velocity_matches_finite_difference", "assert_solver_order", "measure_solver_order"]


def assert_velocity_matches_finite_difference(
    path: ProbPath,
    x0: Tensor,
    x1: Tensor,
    t: Tensor,
    h: float = 1e-4,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> None:
    """Check that a path's target ``dx_t`` equals the central finite difference of ``x_t`` in ``t``.

    The finite difference is taken in the manifold's tangent representation,
    :math:`(\\log_{x_t}(x_{t+h}) - \\log_{x_t}(x_{t-h}))/(2h)`, so the helper works for Euclidean and
    Riemannian paths alike. Use float64 inputs. Paths with random terms (stochastic interpolants) must be
    sampled with fixed noise by the caller.
    """
    ps = path.sample(x0, x1, t)
    plus = path.sample(x0, x1, t + h).x_t
    minus = path.sample(x0, x1, t - h).x_t
    m = path.manifold
    fd = (m.log(ps.x_t, plus) - m.log(ps.x_t, minus)) / (2 * h)
    torch.testing.assert_close(ps.dx_t, fd, atol=atol, rtol=rtol)


def measure_solver_order(
    velocity: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    exact: Tensor,
    method: str,
    steps: Sequence[int] = (8, 16, 32, 64),
    error: Callable[[Tensor, Tensor], Tensor] | None = None,
    **solve_kwargs: object,
) -> float:
    """Least-squares slope of log(global error) against log(step size) for one solver.

    Args:
        velocity: ``v(x, t)``.
        x0: Initial state at t=0.
        exact: Exact state at t=1.
        method: Solver name.
        steps: Step counts (errors must stay above round-off: use float64).
        error: Error function (default max-abs difference).
        **solve_kwargs: Passed to :func:`~flowsci.solvers.solve_ode` (e.g. ``manifold``).

    Returns:
        The observed order of convergence.

    """
    err_fn = error or (lambda a, b: (a - b).abs().max())
    errs = [float(err_fn(solve_ode(velocity, x0, method=method, steps=n, **solve_kwargs).x, exact)) for n in steps]
    slope = np.polyfit(np.log([1.0 / n for n in steps]), np.log(errs), 1)[0]
    return float(slope)


def assert_solver_order(
    velocity: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    exact: Tensor,
    method: str,
    order: float,
    tol: float = 0.3,
    steps: Sequence[int] = (8, 16, 32, 64),
    **solve_kwargs: object,
) -> None:
    """Assert the observed convergence order of ``method`` is ``order`` ± ``tol`` (see :func:`measure_solver_order`)."""
    slope = measure_solver_order(velocity, x0, exact, method, steps, **solve_kwargs)
    if not math.isfinite(slope) or abs(slope - order) > tol:
        raise AssertionError(f"{method}: observed order {slope:.3f}, expected {order} ± {tol}")
