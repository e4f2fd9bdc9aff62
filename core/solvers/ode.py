"""ODE solvers for flow sampling: fixed-step (manifold-aware) Runge–Kutta and adaptive dopri5 (torchdiffeq)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from flowsci.manifolds import Manifold

__all__ = ["Solution", "solve_ode", "make_time_grid", "FIXED_STEP_METHODS", "ADAPTIVE_METHODS", "Velocity"]

Velocity = Callable[..., Tensor]
"""A velocity field ``v(x, t, **cond)`` with ``x`` of shape ``[B, *D]`` and ``t`` of shape ``[B]``."""

FIXED_STEP_METHODS: dict[str, int] = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
"""Fixed-step methods and their network evaluations per step."""
ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
PROGRESS_MIN_STEPS = 100


@dataclass
class Solution:
    """The result of one solve.

    Attributes:
        x: Final state ``[B, *D]``.
        nfe: Number of velocity evaluations actually made.
        times: The time grid the trajectory is reported on, ``[S+1]``.
        trajectory: States at ``times`` (list of ``[B, *D]``) when requested, else ``None``.
        seed: The seed that produced the initial state, when the caller knows it.

    """

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: list[Tensor] | None = None
    seed: int | None = None
    x0: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def make_time_grid(steps: int, t0: float = 0.0, t1: float = 1.0, kind: str = "uniform", device: Any = None) -> Tensor:
    """A time grid of ``steps + 1`` points from ``t0`` to ``t1``.

    Args:
        steps: Number of intervals.
        t0: Start time.
        t1: End time.
        kind: ``"uniform"`` or ``"cosine"`` (denser near both ends: :math:`t = (1-\\cos(\\pi u))/2` mapped to
            ``[t0, t1]``).
        device: Device of the grid.

    Returns:
        Tensor ``[steps + 1]`` (float64 for exact step arithmetic; cast on use).

    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64, device=device)
    if kind == "cosine":
        u = 0.5 * (1 - torch.cos(torch.pi * u))
    elif kind != "uniform":
        raise ValueError(f"unknown time-grid kind {kind!r}; use 'uniform' or 'cosine'")
    return t0 + (t1 - t0) * u


class _Counted:
    """Wraps a velocity, broadcasting scalar ``t`` to ``[B]`` and counting evaluations."""

    def __init__(self, velocity: Velocity, cond: dict[str, Any]) -> None:
        self.velocity, self.cond, self.nfe = velocity, cond, 0

    def __call__(self, x: Tensor, t: Tensor | float) -> Tensor:
        self.nfe += 1
        t = torch.as_tensor(t, device=x.device, dtype=x.dtype)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.velocity(x, t, **self.cond)


def _step(
    f: _Counted,
    x: Tensor,
    t: Tensor,
    dt: Tensor,
    method: str,
    exp: Callable[[Tensor, Tensor], Tensor],
    transport: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> Tensor:
    """One explicit Runge–Kutta step.

    ``exp(x, v)`` moves from ``x`` along tangent ``v``; ``transport(y, x, k)`` brings a stage slope ``k``
    evaluated at ``y`` to the tangent space at ``x`` (identity in Euclidean space).
    """
    if method == "euler":
        return exp(x, dt * f(x, t))
    if method == "midpoint":
        k1 = f(x, t)
        y = exp(x, 0.5 * dt * k1)
        return exp(x, dt * transport(y, x, f(y, t + 0.5 * dt)))
    if method == "heun":
        k1 = f(x, t)
        y = exp(x, dt * k1)
        return exp(x, 0.5 * dt * (k1 + transport(y, x, f(y, t + dt))))
    if method == "rk4":
        k1 = f(x, t)
        y2 = exp(x, 0.5 * dt * k1)
        k2 = transport(y2, x, f(y2, t + 0.5 * dt))
        y3 = exp(x, 0.5 * dt * k2)
        k3 = transport(y3, x, f(y3, t + 0.5 * dt))
        y4 = exp(x, dt * k3)
        k4 = transport(y4, x, f(y4, t + dt))
        return exp(x, dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4))
    raise ValueError(f"unknown fixed-step method {method!r}")


def solve_ode(
    velocity: Velocity,
    x0: Tensor,
    *,
    method: str = "euler",
    steps: int | None = None,
    time_grid: Tensor | None = None,
    manifold: Manifold | None = None,
    return_trajectory: bool = False,
    progress: bool | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    **cond: Any,
) -> Solution:
    """Integrate :math:`\\dot x = v(x, t)` from ``time_grid[0]`` to ``time_grid[-1]``.

    Fixed-step methods (``euler``, ``midpoint``, ``heun``, ``rk4``) step along ``time_grid`` (or ``steps``
    uniform steps on [0, 1]). On a manifold every stage moves by :math:`x \\leftarrow \\exp_x(h\\,\\mathrm{proj}_x v)`
    (geodesic Euler and its Runge–Kutta–Munthe-Kaas-style analogues), so each iterate stays on the manifold.
    Adaptive methods (``dopri5`` …) call :func:`torchdiffeq.odeint` and report the state at every grid time.

    Args:
        velocity: ``v(x, t, **cond)``; ``x`` is ``[B, *D]``, ``t`` is ``[B]``.
        x0: Initial state ``[B, *D]``.
        method: Solver name.
        steps: Number of uniform steps on [0, 1] (ignored when ``time_grid`` is given; default 1 for adaptive).
        time_grid: Monotone times ``[S+1]``; may run backwards (e.g. 1 → 0 to invert a flow).
        manifold: The state's manifold (``None`` = Euclidean).
        return_trajectory: Keep the state at every grid time.
        progress: Show a progress bar (default: when there are at least 100 fixed steps).
        atol: Absolute tolerance of adaptive methods.
        rtol: Relative tolerance of adaptive methods.
        **cond: Conditioning passed to ``velocity`` as keyword arguments.

    Returns:
        The :class:`Solution`, with the exact number of velocity evaluations in ``nfe``.

    """
    if time_grid is None:
        grid = make_time_grid(steps if steps is not None else 1, device=x0.device)
    else:
        grid = torch.as_tensor(time_grid, dtype=torch.float64, device=x0.device)
        if grid.dim() != 1 or grid.numel() < 2:
            raise ValueError(f"time_grid must be 1-D with >= 2 points, got shape {tuple(grid.shape)}")
    f = _Counted(velocity, cond)
    if method in ADAPTIVE_METHODS:
        if manifold is not None:
            raise ValueError(f"adaptive method {method!r} is Euclidean only; use a fixed-step method on manifolds")
        from torchdiffeq import odeint

        traj = odeint(lambda t, x: f(x, t), x0, grid.to(x0.dtype), method=method, atol=atol, rtol=rtol)
        states = list(traj.unbind(0))
        return Solution(x=states[-1], nfe=f.nfe, times=grid, trajectory=states if return_trajectory else None, x0=x0)
    if method not in FIXED_STEP_METHODS:
        raise ValueError(
            f"unknown solver {method!r}; choose one of {sorted(FIXED_STEP_METHODS) + list(ADAPTIVE_METHODS)}"
        )
    if manifold is None:

        def exp(x: Tensor, v: Tensor) -> Tensor:
            return x + v

        def transport(y: Tensor, x: Tensor, k: Tensor) -> Tensor:
            return k
    else:

        def exp(x: Tensor, v: Tensor) -> Tensor:
            return manifold.exp(x, manifold.proju(x, v))

        def transport(y: Tensor, x: Tensor, k: Tensor) -> Tensor:
            return manifold.transport(y, x, manifold.proju(y, k))

    n = grid.numel() - 1
    show = progress if progress is not None else n >= PROGRESS_MIN_STEPS
    x = x0 if manifold is None else manifold.projx(x0)
    start = x
    states = [x] if return_trajectory else None
    for i in tqdm(range(n), desc=f"{method} sampling", disable=not show, leave=False):
        t = grid[i].to(x.dtype)
        dt = (grid[i + 1] - grid[i]).to(x.dtype)
        x = _step(f, x, t, dt, method, exp, transport)
        if states is not None:
            states.append(x)
    return Solution(x=x, nfe=f.nfe, times=grid, trajectory=states, x0=start)
