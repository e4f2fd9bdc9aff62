r"""Inference-time scaling of a flow against a reward, under a fixed budget of network evaluations.

Both samplers spend ``n`` velocity evaluations per step on each output sample, so at equal ``steps`` they have
the same NFE budget (``n * steps`` per output), and the comparison with one plain sample of ``n * steps``
steps is budget-matched too.

* :func:`best_of_n` — ``n`` independent ODE samples per output, keep the one with the highest reward.
* :func:`particle_sampling` — sequential Monte Carlo over ``n`` particles per output (Kim et al., "Inference-Time
  Scaling for Flow Models via Stochastic Generation and Rollover Budget Forcing", 2025; Li et al. 2024 "SVDD"):
  stochastic Euler–Maruyama steps of the marginal-preserving SDE (:mod:`flowsci.solvers.sde`) provide
  diversity, and at each resampling time the particles of an output are resampled with weights
  :math:`\propto \exp(r(\hat x_1)/\tau)`, where :math:`\hat x_1` is the clean sample predicted from the
  velocity already computed for the step (no extra NFE). The final pick is the best particle.

Layout: ``x0`` holds ``num * n`` rows, output-major (row ``i * n + j`` is candidate ``j`` of output ``i``);
conditioning tensors with ``num`` rows are repeated per candidate. ``reward(x, **cond) -> [B]`` (higher is
better) may be any function, differentiable or not (a verifier, a simulator, a classifier score).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from flowsci.paths import AffinePath
from flowsci.solvers import Solution, Velocity, make_time_grid, solve_ode
from flowsci.solvers.sde import Diffusion, DiffusionSchedule, as_diffusion_schedule, euler_maruyama_step

if TYPE_CHECKING:
    from flowsci.manifolds import Manifold

__all__ = ["Reward", "best_of_n", "particle_sampling", "repeat_cond"]

Reward = Callable[..., Tensor]
"""``reward(x, **cond) -> [B]``, higher is better."""


def repeat_cond(cond: dict[str, Any], num: int, n: int) -> dict[str, Any]:
    """Repeat each conditioning tensor with ``num`` rows ``n`` times per row (``[num, ...] -> [num * n, ...]``).

    Entries that are not tensors with ``num`` rows (scalars, shared tensors) pass through unchanged.
    """
    return {
        k: v.repeat_interleave(n, dim=0) if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == num else v
        for k, v in cond.items()
    }


def _groups(x0: Tensor, n: int) -> int:
    if n < 1:
        raise ValueError(f"need at least one candidate per output, got n={n}")
    if x0.shape[0] % n:
        raise ValueError(f"x0 has {x0.shape[0]} rows, not a multiple of n={n} (expected num * n rows)")
    return x0.shape[0] // n


def _pick_best(x: Tensor, rewards: Tensor, num: int, n: int) -> tuple[Tensor, Tensor]:
    """Best row of each group: ``x`` ``[num * n, *D]``, ``rewards`` ``[num * n]`` -> ``[num, *D]``, ``[num]``."""
    r = rewards.reshape(num, n)
    best = r.argmax(dim=1)
    rows = torch.arange(num, device=x.device) * n + best
    return x[rows], r.gather(1, best[:, None]).squeeze(1)


@torch.no_grad()
def best_of_n(
    velocity: Velocity,
    x0: Tensor,
    reward: Reward,
    *,
    n: int,
    steps: int,
    method: str = "euler",
    manifold: Manifold | None = None,
    **cond: Any,
) -> Solution:
    """Best-of-N sampling: ``n`` independent ODE samples per output, keep the highest reward.

    Args:
        velocity: ``v(x, t, **cond)``.
        x0: Prior draws ``[num * n, *D]``, output-major.
        reward: ``reward(x, **cond) -> [B]``, higher is better.
        n: Candidates per output.
        steps: Solver steps per candidate.
        method: Fixed-step solver.
        manifold: The state's manifold (``None`` = Euclidean).
        **cond: Conditioning with ``num`` rows (repeated per candidate).

    Returns:
        :class:`~flowsci.solvers.Solution` with ``x`` ``[num, *D]``, ``nfe`` = velocity evaluations per output
        (``n`` times the solver's), ``extras["reward"]`` ``[num]`` and ``extras["rewards"]`` ``[num, n]``.

    """
    num = _groups(x0, n)
    rc = repeat_cond(cond, num, n)
    sol = solve_ode(velocity, x0, method=method, steps=steps, manifold=manifold, **rc)
    rewards = reward(sol.x, **rc)
    x, best = _pick_best(sol.x, rewards, num, n)
    return Solution(x=x, nfe=n * sol.nfe, times=sol.times, extras={"reward": best, "rewards": rewards.reshape(num, n)})


@torch.no_grad()
def particle_sampling(
    velocity: Velocity,
    x0: Tensor,
    reward: Reward,
    *,
    path: AffinePath,
    n: int,
    steps: int,
    diffusion: Diffusion | None = None,
    temperature: float = 1.0,
    resample_every: int = 1,
    generator: torch.Generator | None = None,
    **cond: Any,
) -> Solution:
    r"""Particle (sequential Monte Carlo) sampling towards high reward with ``n`` particles per output.

    At step :math:`k` (time :math:`t_k`): evaluate :math:`v = v(x, t_k)` once for all particles; every
    ``resample_every`` steps compute :math:`\hat x_1 = \hat x_1(x, v)` (:meth:`AffinePath.velocity_to_x1`) and
    resample the particles of each output multinomially with weights
    :math:`\mathrm{softmax}_j(r(\hat x_1^{(j)})/\tau)` (the velocities travel with their states); then take the
    Euler–Maruyama step of the marginal-preserving SDE. At the end the particle with the highest reward is
    returned. NFE per output: ``n * steps`` (the same as :func:`best_of_n` with equal ``n`` and ``steps``).

    Args:
        velocity: ``v(x, t, **cond)``.
        x0: Prior draws ``[num * n, *D]``, output-major (standard normal).
        reward: ``reward(x, **cond) -> [B]``, higher is better.
        path: The affine path of the model (score and :math:`\hat x_1` conversions).
        n: Particles per output.
        steps: Steps (uniform grid on [0, 1]).
        diffusion: Diffusion coefficient of the SDE (default ``DiffusionSchedule(1.0, "sigma")``).
        temperature: :math:`\tau > 0`; small values resample greedily.
        resample_every: Resampling period in steps.
        generator: Random generator (noise and resampling).
        **cond: Conditioning with ``num`` rows (repeated per particle).

    Returns:
        :class:`~flowsci.solvers.Solution` with ``x`` ``[num, *D]``, ``nfe`` per output, ``extras["reward"]``
        ``[num]`` and ``extras["resamples"]`` (number of resampling events).

    """
    if not isinstance(path, AffinePath):
        raise TypeError(f"particle_sampling needs an AffinePath (SDE steps), got {type(path).__name__}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if resample_every < 1:
        raise ValueError(f"resample_every must be >= 1, got {resample_every}")
    num = _groups(x0, n)
    rc = repeat_cond(cond, num, n)
    g_of = as_diffusion_schedule(diffusion if diffusion is not None else DiffusionSchedule(1.0, "sigma"))
    grid = make_time_grid(steps, device=x0.device)
    offsets = (torch.arange(num, device=x0.device) * n)[:, None]
    x, resamples = x0, 0
    for k in range(steps):
        t = grid[k].to(x.dtype).expand(x.shape[0])
        h = (grid[k + 1] - grid[k]).to(x.dtype)
        v = velocity(x, t, **rc)
        if n > 1 and k % resample_every == 0:
            r = reward(path.velocity_to_x1(v, x, t), **rc).reshape(num, n)
            weights = torch.softmax(r.double() / temperature, dim=1)
            idx = (torch.multinomial(weights, n, replacement=True, generator=generator) + offsets).reshape(-1)
            x, v, resamples = x[idx], v[idx], resamples + 1
        x = euler_maruyama_step(x, v, t, h, g_of(t, path.scheduler(t).sigma_t), path, generator)
    x, best = _pick_best(x, reward(x, **rc), num, n)
    return Solution(x=x, nfe=n * steps, times=grid, extras={"reward": best, "resamples": resamples})
