r"""Log-likelihoods of flows by the instantaneous change of variables, on every manifold of the core.

A flow :math:`\dot x_t = v(x_t, t)` pushes the prior :math:`p_0` to :math:`p_1`; along a trajectory
(Chen et al. 2018, "Neural ODEs"; Grathwohl et al. 2019, FFJORD; Chen & Lipman 2024 on manifolds)

.. math::
    \log p_1(x_1) = \log p_0(x_0) - \int_0^1 \operatorname{div}_g v(x_t, t)\, dt,

where :math:`x_0` is reached by integrating the ODE backwards from :math:`x_1` and :math:`\operatorname{div}_g` is
the Riemannian divergence. The state ``(x, l)`` with :math:`\dot l = \operatorname{div} v` is integrated from
t = 1 to t = 0 with the core's solvers (:func:`~flowsci.solvers.solve_ode`, geodesic steps on manifolds), so
:math:`\log p_1(x_1) = \log p_0(x_0) + l(0)`.

The divergence is computed in a chart that works for every manifold of the core: at ``x`` take
:math:`y(s) = \exp_x(\mathrm{proj}_x s)` for tangent coordinates ``s`` and bring :math:`v(y)` back with the
manifold's vector transport; then :math:`\operatorname{div}_g v(x) = \operatorname{tr}\,\partial_s
[\mathcal T_{y \to x} v(y(s))]_{s=0}`. This is the trace of the covariant derivative in normal coordinates
(Euclidean space and the flat torus: the plain Jacobian trace; the sphere: the trace of the projected ambient
Jacobian; SO(3) with body-frame tangents: the trace along the left-invariant frame, which is divergence-free
for the bi-invariant metric). It is evaluated exactly (one backward pass per tangent coordinate) or with
Hutchinson's estimator :math:`E_\epsilon[\epsilon^\top J \epsilon]` (Rademacher or Gaussian probes, drawn once
per solve from a seed).

Prior log-densities (:func:`prior_log_prob`) are taken with respect to the Riemannian volume of each factor:
standard normal on Euclidean factors, :math:`-\log 1 = 0` on the period-1 flat torus, :math:`-\log
|S^n|` on the sphere and :math:`-\log 8\pi^2` on SO(3) (its volume for the metric whose distance is the rotation
angle). Masked (padded) entries are excluded: their velocity is zeroed, they add nothing to the divergence, the
prior or the dimension count used for bits per dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from flowsci.errors import InputError
from flowsci.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from flowsci.solvers import ADAPTIVE_METHODS, FIXED_STEP_METHODS, make_time_grid, solve_ode

__all__ = [
    "ESTIMATORS",
    "PROBES",
    "LogLikelihood",
    "divergence",
    "draw_probes",
    "event_dims",
    "log_prob",
    "manifold_log_volume",
    "prior_log_prob",
]

ESTIMATORS = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
LOG2 = math.log(2.0)

Velocity = Callable[..., Tensor]


@dataclass
class LogLikelihood:
    """Per-sample log-likelihoods and their parts.

    Attributes:
        log_prob: :math:`\\log p_1(x_1)` in nats, ``[B]``.
        prior_log_prob: :math:`\\log p_0(x_0)` in nats, ``[B]``.
        delta: :math:`-\\int_0^1 \\operatorname{div} v\\, dt` in nats (the log-determinant of the flow map), ``[B]``.
        x0: The prior points the data map to, ``[B, *D]``.
        dims: Intrinsic dimension of each sample (unmasked entries only), ``[B]``.
        nfe: Velocity evaluations of the solve (each exact evaluation also costs ``dim`` backward passes,
            each Hutchinson evaluation ``num_probes``).

    """

    log_prob: Tensor
    prior_log_prob: Tensor
    delta: Tensor
    x0: Tensor
    dims: Tensor
    nfe: int

    @property
    def nll(self) -> Tensor:
        """Negative log-likelihood in nats, ``[B]``."""
        return -self.log_prob

    @property
    def bits_per_dim(self) -> Tensor:
        """Negative log-likelihood in bits per (intrinsic) dimension, ``[B]``."""
        return -self.log_prob / (self.dims.clamp_min(1) * LOG2)


# --------------------------------------------------------------------------- prior densities per manifold


def _sphere_log_area(n: int) -> float:
    r""":math:`\log |S^n| = \log 2 + \tfrac{n+1}{2}\log\pi - \log\Gamma(\tfrac{n+1}{2})`."""
    return math.log(2.0) + 0.5 * (n + 1) * math.log(math.pi) - math.lgamma(0.5 * (n + 1))


def manifold_log_volume(manifold: Manifold) -> float:
    """Log of the Riemannian volume of a compact manifold (torus: 0, :math:`S^n`, SO(3): :math:`\\log 8\\pi^2`).

    Raises:
        TypeError: For Euclidean factors (infinite volume) and manifolds the module does not know.

    """
    if isinstance(manifold, FlatTorus):
        return 0.0
    if isinstance(manifold, Sphere):
        return _sphere_log_area(manifold.dim)
    if isinstance(manifold, SO3):
        return math.log(8 * math.pi**2)
    if isinstance(manifold, Product):
        return sum(manifold_log_volume(m) for m in manifold.manifolds)
    raise TypeError(f"{manifold!r} has no finite volume known to flowsci.likelihood")


def _element_log_prob(manifold: Manifold, x: Tensor) -> Tensor:
    """Prior log-density of each point ``[*S, point_dim]`` -> ``[*S]`` (nats, Riemannian volume)."""
    if isinstance(manifold, Euclidean):
        return -0.5 * (x**2 + math.log(2 * math.pi)).sum(-1)
    if isinstance(manifold, Product):
        parts = zip(manifold.manifolds, manifold.split_point(x), strict=True)
        return torch.stack([_element_log_prob(m, xi) for m, xi in parts], dim=-1).sum(-1)
    if isinstance(manifold, (FlatTorus, Sphere, SO3)):
        return torch.full(x.shape[:-1], -manifold_log_volume(manifold), dtype=x.dtype, device=x.device)
    raise TypeError(
        f"no prior log-density for {manifold!r}; pass prior=callable(x0) -> [B] to log_prob for custom priors"
    )


def _element_dim(manifold: Manifold, point_dim: int) -> int:
    """Intrinsic dimension of one point of ``manifold``."""
    if isinstance(manifold, Product):
        return sum(_element_dim(m, int(m.point_dim)) for m in manifold.manifolds)  # type: ignore[arg-type]
    if isinstance(manifold, Sphere):
        return manifold.dim
    if isinstance(manifold, SO3):
        return 3
    return point_dim


def _broadcast_mask(mask: Tensor, like: Tensor) -> Tensor:
    """Mask ``[B, *M]`` as a 0/1 float broadcast from the left against ``like`` ``[B, *M, ...]``."""
    if tuple(mask.shape) != tuple(like.shape[: mask.dim()]):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the leading axes of {tuple(like.shape)}")
    m = mask.to(dtype=like.dtype, device=like.device)
    return m.reshape(*mask.shape, *([1] * (like.dim() - mask.dim())))


def prior_log_prob(x0: Tensor, manifold: Manifold | None = None, mask: Tensor | None = None) -> Tensor:
    """Log-density of the core's default priors at ``x0``, summed per sample (nats).

    Args:
        x0: Prior points ``[B, *D]``; on a manifold the last axis is ``point_dim``.
        manifold: ``None`` (or :class:`Euclidean`) for a standard normal over every entry, else the manifold
            whose :meth:`~flowsci.manifolds.Manifold.random_base` drew ``x0`` (uniform on torus, sphere, SO(3)).
        mask: Optional ``[B, *M]`` (true = real entry). With a manifold ``M`` is ``D`` without the last axis;
            without one it is broadcast from the left. Masked entries are left out.

    Returns:
        ``[B]`` log-densities in nats.

    """
    if manifold is None or (isinstance(manifold, Euclidean) and mask is None):
        lp = -0.5 * (x0**2 + math.log(2 * math.pi))
    else:
        lp = _element_log_prob(manifold, x0)
    if mask is not None:
        lp = lp * _broadcast_mask(mask, lp)
    return lp.reshape(lp.shape[0], -1).sum(1)


def event_dims(x: Tensor, manifold: Manifold | None = None, mask: Tensor | None = None) -> Tensor:
    """Intrinsic dimension of each sample (unmasked entries only), ``[B]`` float.

    Args:
        x: Points ``[B, *D]``.
        manifold: As in :func:`prior_log_prob`.
        mask: As in :func:`prior_log_prob`.

    Returns:
        ``[B]`` dimensions (e.g. ``3 L`` for ``L`` rotations, ``2 N`` for ``N`` points on :math:`S^2`).

    """
    if manifold is None:
        ones = torch.ones_like(x)
    else:
        per = _element_dim(manifold, x.shape[-1])
        ones = torch.full(x.shape[:-1], float(per), dtype=x.dtype, device=x.device)
    if mask is not None:
        ones = ones * _broadcast_mask(mask, ones)
    return ones.reshape(x.shape[0], -1).sum(1)


# --------------------------------------------------------------------------- divergence


def _tangent_shape(x: Tensor, manifold: Manifold | None) -> tuple[int, ...]:
    if manifold is None or manifold.tangent_dim is None:
        return tuple(x.shape)
    return (*x.shape[:-1], int(manifold.tangent_dim))


def _tangent_mask(mask: Tensor | None, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
    if mask is None:
        return None
    return _broadcast_mask(mask, torch.empty(shape, device=like.device, dtype=like.dtype))


def draw_probes(
    shape: tuple[int, ...],
    num_probes: int,
    kind: str = "rademacher",
    seed: int | None = None,
    device: Any = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Hutchinson probes :math:`\\epsilon` with :math:`E[\\epsilon\\epsilon^\\top] = I`, ``[K, *shape]``.

    Args:
        shape: Shape of one probe (the tangent shape ``[B, *T]``).
        num_probes: Number of probes ``K >= 1``.
        kind: ``"rademacher"`` (±1, the lower-variance choice) or ``"gaussian"``.
        seed: Seed of the draw (``None``: torch's global generator).
        device: Device.
        dtype: Floating dtype.

    Returns:
        ``[K, *shape]`` probes.

    """
    if kind not in PROBES:
        raise ValueError(f"probe kind must be one of {PROBES}, got {kind!r}")
    if num_probes < 1:
        raise ValueError(f"num_probes must be >= 1, got {num_probes}")
    gen = None if seed is None else torch.Generator(device=device or "cpu").manual_seed(seed)
    size = (num_probes, *shape)
    if kind == "gaussian":
        return torch.randn(size, generator=gen, device=device, dtype=dtype)
    return torch.randint(0, 2, size, generator=gen, device=device).to(dtype or torch.get_default_dtype()) * 2 - 1


def divergence(
    velocity: Velocity,
    x: Tensor,
    t: Tensor,
    manifold: Manifold | None = None,
    estimator: str = "exact",
    probes: Tensor | None = None,
    mask: Tensor | None = None,
    **cond: Any,
) -> tuple[Tensor, Tensor]:
    """Velocity and its Riemannian divergence at ``x`` (see the module docstring for the chart).

    Args:
        velocity: ``v(x, t, **cond)`` returning tangents ``[B, *T]``.
        x: Points ``[B, *D]`` (on the manifold).
        t: Times ``[B]``.
        manifold: The state's manifold (``None``: Euclidean, any shape).
        estimator: ``"exact"`` (one backward pass per tangent coordinate) or ``"hutchinson"``.
        probes: Probes ``[K, B, *T]`` for Hutchinson (see :func:`draw_probes`).
        mask: Optional mask of real entries (as in :func:`prior_log_prob`); the velocity of masked entries is
            zeroed and they do not enter the trace.
        **cond: Conditioning keywords of the velocity.

    Returns:
        ``(v, div)``: the (masked) velocity ``[B, *T]`` and the divergence ``[B]`` (1/time units), both detached.

    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    b = x.shape[0]
    tshape = _tangent_shape(x, manifold)
    tmask = _tangent_mask(mask, tshape, x)
    with torch.enable_grad():
        x = x.detach()
        s = torch.zeros(tshape, dtype=x.dtype, device=x.device, requires_grad=True)
        y = x + s if manifold is None else manifold.exp(x, manifold.proju(x, s))
        v = velocity(y, t, **cond)
        g = v if manifold is None else manifold.transport(y, x, manifold.proju(y, v))
        keep = None if tmask is None else tmask.expand(tshape) > 0
        if keep is not None:  # where, not a product: a NaN velocity on padding must not leak
            g = torch.where(keep, g, torch.zeros_like(g))
        div = torch.zeros(b, dtype=x.dtype, device=x.device)
        if not g.requires_grad:  # a velocity that does not depend on x
            return g.detach(), div
        if estimator == "exact":
            flat = g.reshape(b, -1)
            for k in range(flat.shape[1]):
                (grad,) = torch.autograd.grad(flat[:, k].sum(), s, retain_graph=True, allow_unused=True)
                if grad is not None:
                    grad = grad if keep is None else torch.where(keep, grad, torch.zeros_like(grad))
                    div = div + grad.reshape(b, -1)[:, k]
        else:
            if probes is None:
                raise ValueError("the Hutchinson estimator needs probes (see draw_probes)")
            for eps in probes:
                if keep is not None:
                    eps = torch.where(keep, eps, torch.zeros_like(eps))
                (grad,) = torch.autograd.grad(g, s, grad_outputs=eps, retain_graph=True, allow_unused=True)
                if grad is not None:
                    grad = grad if keep is None else torch.where(keep, grad, torch.zeros_like(grad))
                    div = div + (grad * eps).reshape(b, -1).sum(1)
            div = div / probes.shape[0]
    return g.detach(), div.detach()


# --------------------------------------------------------------------------- the augmented ODE


class _Augmented:
    """Manifold-like view of the packed state ``[B, n_point + 1]`` (point ‖ log-density accumulator)."""

    def __init__(self, manifold: Manifold, pshape: tuple[int, ...], tshape: tuple[int, ...]) -> None:
        self.m, self.pshape, self.tshape = manifold, pshape, tshape

    def _x(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[:, :-1].reshape(self.pshape), z[:, -1:]

    def _u(self, w: Tensor) -> tuple[Tensor, Tensor]:
        return w[:, :-1].reshape(self.tshape), w[:, -1:]

    @staticmethod
    def _pack(a: Tensor, acc: Tensor) -> Tensor:
        return torch.cat([a.reshape(a.shape[0], -1), acc], dim=1)

    def exp(self, z: Tensor, w: Tensor) -> Tensor:
        (x, acc), (u, dacc) = self._x(z), self._u(w)
        return self._pack(self.m.exp(x, self.m.proju(x, u)), acc + dacc)

    def proju(self, z: Tensor, w: Tensor) -> Tensor:
        return w  # projected inside exp/transport, where the point is unpacked

    def projx(self, z: Tensor) -> Tensor:
        x, acc = self._x(z)
        return self._pack(self.m.projx(x), acc)

    def transport(self, zy: Tensor, zx: Tensor, w: Tensor) -> Tensor:
        (y, _), (x, _), (u, dacc) = self._x(zy), self._x(zx), self._u(w)
        return self._pack(self.m.transport(y, x, self.m.proju(y, u)), dacc)


def log_prob(
    velocity: Velocity,
    x1: Tensor,
    *,
    manifold: Manifold | None = None,
    steps: int = 50,
    method: str = "rk4",
    estimator: str = "exact",
    num_probes: int = 1,
    probe: str = "rademacher",
    seed: int | None = 0,
    mask: Tensor | None = None,
    time_grid: Tensor | None = None,
    prior: Callable[[Tensor], Tensor] | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    **cond: Any,
) -> LogLikelihood:
    """Log-likelihood of data under the flow :math:`\\dot x = v(x, t)` from the prior at t=0 to data at t=1.

    Args:
        velocity: ``v(x, t, **cond)`` (e.g. :meth:`FlowMatching.velocity`).
        x1: Data ``[B, *D]`` (points of ``manifold``).
        manifold: The state's manifold; ``None`` for flat (affine-path) models with a standard-normal prior.
        steps: Solver steps on the reversed grid 1 → 0 (fixed-step methods).
        method: ``euler``, ``midpoint``, ``heun``, ``rk4`` or an adaptive method (``dopri5``; Euclidean only).
        estimator: ``"exact"`` or ``"hutchinson"``.
        num_probes: Hutchinson probes per velocity evaluation.
        probe: ``"rademacher"`` or ``"gaussian"``.
        seed: Seed of the probes (drawn once and kept along the trajectory).
        mask: Optional mask of real entries (``[B, *S]`` for a manifold with points ``[B, *S, d]``).
        time_grid: Custom decreasing grid from data time to prior time (overrides ``steps``); e.g. a grid
            ending at ``t_min > 0`` for models trained on ``[t_min, 1]``.
        prior: ``prior(x0) -> [B]`` log-density overriding :func:`prior_log_prob` (e.g. centred Gaussians).
        atol: Absolute tolerance of adaptive methods.
        rtol: Relative tolerance of adaptive methods.
        **cond: Conditioning keywords of the velocity.

    Returns:
        A :class:`LogLikelihood` (nats, bits per dimension, ``x0``).

    Raises:
        InputError: Non-finite input data.

    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if method not in FIXED_STEP_METHODS and method not in ADAPTIVE_METHODS:
        raise ValueError(f"unknown solver {method!r}; choose one of {[*FIXED_STEP_METHODS, *ADAPTIVE_METHODS]}")
    if not bool(torch.isfinite(x1).all()):
        raise InputError("x", "data hold NaN or infinite values; the likelihood is undefined there")
    if isinstance(manifold, Euclidean):
        manifold = None if mask is None or manifold.dim is None else manifold
    x1 = x1.detach()
    b = x1.shape[0]
    pshape = tuple(x1.shape)
    tshape = _tangent_shape(x1, manifold)
    grid = time_grid if time_grid is not None else make_time_grid(steps, 1.0, 0.0, device=x1.device)
    probes = None
    if estimator == "hutchinson":
        probes = draw_probes(tshape, num_probes, probe, seed=seed, device=x1.device, dtype=x1.dtype)

    def augmented(z: Tensor, t: Tensor, **kw: Any) -> Tensor:
        x = z[:, :-1].reshape(pshape)
        v, div = divergence(velocity, x, t, manifold, estimator, probes, mask, **kw)
        return torch.cat([v.reshape(b, -1), div[:, None]], dim=1)

    if manifold is not None and manifold.tangent_dim is None:
        raise ValueError(f"{manifold!r} needs a fixed dimension for likelihoods")
    z1 = torch.cat([x1.reshape(b, -1), torch.zeros(b, 1, dtype=x1.dtype, device=x1.device)], dim=1)
    aug = None if manifold is None else _Augmented(manifold, pshape, tshape)
    sol = solve_ode(
        augmented, z1, method=method, time_grid=grid, manifold=aug, atol=atol, rtol=rtol, progress=False, **cond
    )
    x0 = sol.x[:, :-1].reshape(pshape)
    delta = sol.x[:, -1]
    lp0 = prior(x0) if prior is not None else prior_log_prob(x0, manifold, mask)
    return LogLikelihood(
        log_prob=lp0 + delta,
        prior_log_prob=lp0,
        delta=delta,
        x0=x0,
        dims=event_dims(x1, manifold, mask),
        nfe=sol.nfe,
    )
