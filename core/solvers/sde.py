r"""Stochastic sampling of a flow model: velocity-to-score conversion and Euler–Maruyama.

For an affine Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` with :math:`x_0 \sim N(0, I)`, the
marginal velocity :math:`v_t(x) = \dot\alpha_t E[x_1|x_t=x] + \dot\sigma_t E[x_0|x_t=x]` determines the score
through Tweedie's formula :math:`\nabla \log p_t(x) = -E[x_0 | x_t = x] / \sigma_t`. Every SDE

.. math:: dx = \big[v_t(x) + \tfrac12 g(t)^2 \nabla\log p_t(x)\big]\,dt + g(t)\,dW_t

then has the same marginals :math:`p_t` as the probability-flow ODE :math:`\dot x = v_t(x)` for any
diffusion coefficient :math:`g \ge 0` (Song et al., 2021; Ma et al., SiT, 2024); :math:`g \equiv 0` is the ODE.
Stochastic sampling is what inference-time scaling resamples (Kim et al., "Inference-Time Scaling for Flow
Models via Stochastic Generation and Rollover Budget Forcing", 2025).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flowsci.paths import AffinePath, expand_t
from flowsci.solvers.ode import PROGRESS_MIN_STEPS, Solution, Velocity, make_time_grid

__all__ = [
    "DIFFUSION_KINDS",
    "Diffusion",
    "DiffusionSchedule",
    "as_diffusion_schedule",
    "euler_maruyama_step",
    "score_to_velocity",
    "solve_sde",
    "velocity_to_score",
]

DIFFUSION_KINDS = ("constant", "sigma", "quadratic")
r"""Shapes of :class:`DiffusionSchedule`: :math:`g = c`, :math:`g = c\,\sigma_t`, :math:`g = c\,(1-t)^2`."""


def velocity_to_score(velocity: Tensor, x_t: Tensor, t: Tensor, path: AffinePath) -> Tensor:
    r"""Score :math:`\nabla_x \log p_t(x_t)` of the marginal of an affine path, from its velocity.

    With :math:`\hat\epsilon = (\alpha_t v - \dot\alpha_t x_t)/(\alpha_t\dot\sigma_t - \dot\alpha_t\sigma_t)`
    (:meth:`AffinePath.velocity_to_epsilon`), the score is :math:`-\hat\epsilon/\sigma_t`; for the CondOT path
    :math:`s = -(x_t - t\,v)/(1-t)`. Finite for :math:`t < 1` (:math:`\sigma_t > 0`).

    Args:
        velocity: Marginal velocity :math:`v_t(x_t)`, ``[B, *D]``.
        x_t: Points, ``[B, *D]``.
        t: Times, ``[B]``.
        path: The affine path the velocity was trained on (prior :math:`N(0, I)`).

    Returns:
        The score, ``[B, *D]``.

    """
    sigma = path.scheduler(expand_t(t, x_t)).sigma_t
    return -path.velocity_to_epsilon(velocity, x_t, t) / sigma


def score_to_velocity(score: Tensor, x_t: Tensor, t: Tensor, path: AffinePath) -> Tensor:
    r"""Inverse of :func:`velocity_to_score`: :math:`v = \mathrm{eps\_to\_velocity}(-\sigma_t s)`.

    Args:
        score: :math:`\nabla_x \log p_t(x_t)`, ``[B, *D]``.
        x_t: Points, ``[B, *D]``.
        t: Times, ``[B]`` (need :math:`\alpha_t > 0`, i.e. :math:`t > 0` for the usual schedules).
        path: The affine path.

    Returns:
        The velocity, ``[B, *D]``.

    """
    sigma = path.scheduler(expand_t(t, x_t)).sigma_t
    return path.epsilon_to_velocity(-sigma * score, x_t, t)


class DiffusionSchedule:
    r"""Diffusion coefficient :math:`g(t)` of the sampling SDE, ``scale`` times a shape.

    Shapes: ``"constant"`` :math:`g = c`; ``"sigma"`` :math:`g = c\,\sigma_t` (SiT's choice, vanishes at the
    data end so the last steps are nearly deterministic); ``"quadratic"`` :math:`g = c\,(1-t)^2` (Kim et al.
    2025's :math:`g_t = t^2` in our time direction). ``scale = 0`` is the probability-flow ODE.

    Args:
        scale: The multiplier :math:`c \ge 0`.
        kind: One of :data:`DIFFUSION_KINDS`.

    """

    def __init__(self, scale: float = 1.0, kind: str = "sigma") -> None:
        if kind not in DIFFUSION_KINDS:
            raise ValueError(f"diffusion kind must be one of {DIFFUSION_KINDS}, got {kind!r}")
        if scale < 0:
            raise ValueError(f"diffusion scale must be >= 0, got {scale}")
        self.scale, self.kind = float(scale), kind

    def __call__(self, t: Tensor, sigma_t: Tensor) -> Tensor:
        r"""Evaluate :math:`g` at times ``t`` (``[B]``) given the path's :math:`\sigma_t` (same shape)."""
        if self.kind == "constant":
            return torch.full_like(t, self.scale)
        if self.kind == "sigma":
            return self.scale * sigma_t
        return self.scale * (1 - t) ** 2

    def __repr__(self) -> str:
        return f"DiffusionSchedule(scale={self.scale}, kind={self.kind!r})"


Diffusion = DiffusionSchedule | float | Callable[[Tensor, Tensor], Tensor]
"""A :class:`DiffusionSchedule`, a constant :math:`g`, or a callable ``g(t, sigma_t) -> [B]``."""


def as_diffusion_schedule(diffusion: Diffusion) -> Callable[[Tensor, Tensor], Tensor]:
    """Normalise a :data:`Diffusion` to a callable ``g(t, sigma_t) -> [B]`` (a number is a constant ``g``)."""
    if isinstance(diffusion, (int, float)):
        return DiffusionSchedule(float(diffusion), "constant")
    return diffusion


def euler_maruyama_step(
    x: Tensor, v: Tensor, t: Tensor, h: Tensor, g: Tensor, path: AffinePath, generator: torch.Generator | None = None
) -> Tensor:
    r"""One Euler–Maruyama step :math:`x + h\,[v + \tfrac12 g^2 s(x, t)] + g\sqrt h\, z` of the flow's SDE.

    Rows are independent; when every :math:`g` is zero this is exactly the Euler step :math:`x + h v` (no score
    is computed and no noise is drawn).

    Args:
        x: States ``[B, *D]``.
        v: Velocities at ``(x, t)``, ``[B, *D]``.
        t: Times ``[B]`` (:math:`< 1` where :math:`g > 0`).
        h: Step size (0-d tensor, positive).
        g: Diffusion coefficients ``[B]``.
        path: The affine path (for the score).
        generator: Random generator of :math:`z \sim N(0, I)`.

    Returns:
        The new states ``[B, *D]``.

    """
    if not bool((g != 0).any()):
        return x + h * v
    g = expand_t(g, x)
    drift = v + 0.5 * g**2 * velocity_to_score(v, x, t, path)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + h * drift + g * math.sqrt(float(h)) * z


def solve_sde(
    velocity: Velocity,
    x0: Tensor,
    *,
    path: AffinePath,
    diffusion: Diffusion = 0.0,
    steps: int | None = None,
    time_grid: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    progress: bool | None = None,
    **cond: Any,
) -> Solution:
    r"""Sample with Euler–Maruyama on the marginal-preserving SDE of an affine flow.

    Each step from :math:`t_k` to :math:`t_{k+1}` (:math:`h = t_{k+1} - t_k`, :math:`z \sim N(0, I)`):

    .. math::
        x \leftarrow x + h\,\big[v + \tfrac12 g(t_k)^2\, s(x, t_k)\big] + g(t_k)\sqrt{h}\; z,

    with :math:`s` from :func:`velocity_to_score`. One velocity evaluation per step; a step whose
    :math:`g(t_k)` is zero for every row is the plain Euler step (no score, no noise drawn), so
    ``diffusion=0`` reproduces :func:`~flowsci.solvers.solve_ode` with ``method="euler"`` exactly. The score is
    evaluated at left end points only (:math:`t_k < 1`), where :math:`\sigma_t > 0`.

    Args:
        velocity: ``v(x, t, **cond)``; ``x`` is ``[B, *D]``, ``t`` is ``[B]``.
        x0: Prior draws ``[B, *D]`` (standard normal for the score conversion to hold).
        path: The affine path the velocity was trained on.
        diffusion: :class:`DiffusionSchedule`, a constant :math:`g`, or a callable ``g(t, sigma_t) -> [B]``.
        steps: Uniform steps on [0, 1] (ignored when ``time_grid`` is given; default 100).
        time_grid: Increasing times ``[S+1]`` in [0, 1].
        generator: Random generator of the Brownian increments (on ``x0``'s device).
        return_trajectory: Keep the state at every grid time.
        progress: Show a progress bar (default: for at least 100 steps).
        **cond: Conditioning passed to ``velocity``.

    Returns:
        :class:`~flowsci.solvers.Solution` with ``x`` ``[B, *D]`` and ``nfe`` = number of steps.

    """
    if not isinstance(path, AffinePath):
        raise TypeError(f"solve_sde needs an AffinePath (score from velocity), got {type(path).__name__}")
    if time_grid is None:
        grid = make_time_grid(steps if steps is not None else 100, device=x0.device)
    else:
        grid = torch.as_tensor(time_grid, dtype=torch.float64, device=x0.device)
    if grid.dim() != 1 or grid.numel() < 2 or bool((grid.diff() <= 0).any()) or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"time_grid must be increasing in [0, 1] with >= 2 points, got {grid.tolist()}")
    g_of = as_diffusion_schedule(diffusion)
    n = grid.numel() - 1
    show = progress if progress is not None else n >= PROGRESS_MIN_STEPS
    x = x0
    states = [x] if return_trajectory else None
    for i in tqdm(range(n), desc="Euler-Maruyama sampling", disable=not show, leave=False):
        t = grid[i].to(x.dtype).expand(x.shape[0])
        h = (grid[i + 1] - grid[i]).to(x.dtype)
        v = velocity(x, t, **cond)
        x = euler_maruyama_step(x, v, t, h, g_of(t, path.scheduler(t).sigma_t), path, generator)
        if states is not None:
            states.append(x)
    return Solution(x=x, nfe=n, times=grid, trajectory=states, x0=x0)
