r"""Steering a trained flow at sampling time: classifier-free guidance and objective guidance.

* Classifier-free guidance (Ho & Salimans, 2022) trains one network on conditioned and "null" inputs
  (:class:`ConditionDropout`, passed to :class:`~flowsci.module.FlowMatching` as ``cond_dropout``) and samples
  with :math:`v_w = v_\varnothing + w\,(v_c - v_\varnothing)` (:class:`ClassifierFreeGuidance`).
* Objective guidance (FlowChef, Patel et al., 2025) steers towards low values of a differentiable objective
  :math:`J` evaluated on the predicted clean sample :math:`\hat x_1(x_t)`, using :math:`\nabla J(\hat x_1)` as
  the gradient with respect to :math:`x_t` ("gradient skipping": no backpropagation through the network or the
  solver), so the cost per step is one network evaluation plus one gradient of :math:`J`
  (:class:`ObjectiveGuidance`).

A :class:`Guidance` turns a velocity ``v(x, t, **cond)`` into a guided one; pass it to
:meth:`flowsci.module.FlowMatching.sample` (``guidance=...``) or wrap a velocity yourself and call any solver.
Guidances nest: ``ObjectiveGuidance(...).guide(cfg.guide(v, path), path)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from flowsci.paths import AffinePath, ProbPath, expand_t
from flowsci.solvers import Velocity

__all__ = [
    "GUIDANCE_SCHEDULES",
    "ClassifierFreeGuidance",
    "ConditionDropout",
    "Guidance",
    "ObjectiveGuidance",
    "predict_x1",
]

GUIDANCE_SCHEDULES = ("constant", "increasing", "decreasing")
r"""Time weights :math:`\lambda(t)` of :class:`ObjectiveGuidance`: :math:`1`, :math:`t`, :math:`1-t`."""


class ConditionDropout:
    r"""Replace conditioning by its "null" value, row by row with probability ``p`` (CFG training).

    Integer (class-label) tensors are set to ``null_label`` (for :class:`~flowsci.nets.MLP` this is
    ``num_classes``); floating tensors (vectors, fields) to zeros. Domains with another null token subclass
    this and override :meth:`null_value`. Only the keys listed in ``keys`` are touched, so structural inputs
    (masks, lengths, graph indices) pass through.

    Args:
        p: Drop probability per row.
        keys: Conditioning keywords to drop (default ``["y"]``, the label of ``(x, y)`` batches).
        null_label: Null index for integer conditions.

    """

    def __init__(self, p: float = 0.1, keys: list[str] | None = None, null_label: int | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"ConditionDropout needs 0 <= p <= 1, got {p}")
        self.p = p
        self.keys = list(keys) if keys is not None else ["y"]
        self.null_label = null_label

    def null_value(self, key: str, value: Tensor) -> Tensor:
        """The null conditioning for ``value`` (``[B, *C]``), same shape and dtype."""
        if value.dtype.is_floating_point or value.dtype.is_complex:
            return torch.zeros_like(value)
        if self.null_label is None:
            raise ValueError(
                f"conditioning {key!r} has integer dtype {value.dtype}: set null_label (the network's null "
                "class, e.g. num_classes for flowsci.nets.MLP)"
            )
        return torch.full_like(value, self.null_label)

    def blank(self, cond: dict[str, Any], rows: Tensor | None = None) -> dict[str, Any]:
        """Null the conditioning of the selected rows.

        Args:
            cond: Conditioning keywords (tensors with a leading batch axis for the keys in ``keys``).
            rows: Boolean ``[B]``; ``None`` nulls every row (the unconditional input of CFG).

        Returns:
            A new dict; keys not in ``keys`` are passed through unchanged.

        """
        out = dict(cond)
        for key in self.keys:
            if key not in cond or cond[key] is None:
                continue
            value = cond[key]
            if not isinstance(value, Tensor):
                raise TypeError(f"conditioning {key!r} must be a tensor to drop it, got {type(value).__name__}")
            null = self.null_value(key, value)
            if rows is None:
                out[key] = null
            else:
                out[key] = torch.where(rows.reshape(-1, *([1] * (value.dim() - 1))), null, value)
        return out

    def __call__(self, cond: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Drop each row's conditioning independently with probability ``p``."""
        present = [cond[k] for k in self.keys if isinstance(cond.get(k), Tensor)]
        if self.p == 0.0 or not present:
            return cond
        ref = present[0]
        rows = torch.rand(ref.shape[0], generator=generator, device=ref.device) < self.p
        return self.blank(cond, rows)

    def __repr__(self) -> str:
        return f"ConditionDropout(p={self.p}, keys={self.keys}, null_label={self.null_label})"


class Guidance(ABC):
    """Turns a velocity ``v(x, t, **cond)`` into a guided velocity with the same signature."""

    network_evals: int = 1
    """Network passes per guided velocity evaluation (so reported NFE counts network calls)."""

    @abstractmethod
    def guide(self, velocity: Velocity, path: ProbPath) -> Velocity:
        """Return the guided velocity for a model trained on ``path``."""


class ClassifierFreeGuidance(Guidance):
    r"""Classifier-free guidance :math:`v_w = v_\varnothing + w\,(v_c - v_\varnothing)`.

    Computed as ``torch.lerp(v_uncond, v_cond, w)``, so ``w = 0`` returns the unconditional velocity and
    ``w = 1`` the conditional one exactly (and the unneeded branch is not evaluated). Each guided evaluation
    costs two network passes for other ``w``, and the reported NFE counts both.

    Args:
        scale: Guidance weight :math:`w` (1 = conditional model, > 1 sharpens the condition).
        null: How the unconditional input is built (the :class:`ConditionDropout` used in training).

    """

    def __init__(self, scale: float = 1.0, null: ConditionDropout | None = None) -> None:
        self.scale = float(scale)
        self.null = null if null is not None else ConditionDropout()
        self.network_evals = 1 if self.scale in (0.0, 1.0) else 2

    def guide(self, velocity: Velocity, path: ProbPath) -> Velocity:
        """The guided velocity (``path`` is not needed by CFG)."""
        del path
        w = self.scale

        def guided(x: Tensor, t: Tensor, **cond: Any) -> Tensor:
            if w == 1.0:
                return velocity(x, t, **cond)
            v_u = velocity(x, t, **self.null.blank(cond))
            if w == 0.0:
                return v_u
            return torch.lerp(v_u, velocity(x, t, **cond), w)

        return guided


def predict_x1(path: ProbPath, x_t: Tensor, velocity: Tensor, t: Tensor) -> Tensor:
    r"""The clean sample the velocity points to, :math:`\hat x_1(x_t)`.

    Affine paths: :meth:`AffinePath.velocity_to_x1` (CondOT: :math:`\hat x_1 = x_t + (1-t)\,v`; undefined where
    :math:`\sigma_t\dot\alpha_t = \dot\sigma_t\alpha_t`, e.g. at :math:`t = 0` for polynomial schedules). Paths with a
    scheduler :math:`\kappa_t` on a manifold (geodesic paths): one geodesic step to the end,
    :math:`\hat x_1 = \exp_{x_t}\big(\tfrac{1-\kappa_t}{\dot\kappa_t} v\big)`.

    Args:
        path: The training path.
        x_t: Points ``[B, *D]``.
        velocity: Velocities at ``x_t`` (tangent representation), ``[B, *T]``.
        t: Times ``[B]``.

    Returns:
        :math:`\hat x_1`, ``[B, *D]``.

    """
    if isinstance(path, AffinePath):
        return path.velocity_to_x1(velocity, x_t, t)
    scheduler = getattr(path, "scheduler", None)
    if scheduler is None:
        raise TypeError(f"cannot predict x1 for {type(path).__name__}: it has no scheduler kappa_t")
    s = scheduler(expand_t(t, velocity))
    # kappa'_t can vanish at t = 0 (polynomial schedules): bound the step instead of dividing by zero
    return path.manifold.exp(x_t, (1 - s.alpha_t) / s.d_alpha_t.clamp_min(1e-6) * velocity)


class ObjectiveGuidance(Guidance):
    r"""FlowChef-style steering by a differentiable objective on the predicted clean sample.

    .. math::
        \tilde v(x_t, t) = v(x_t, t) - c\,\lambda(t)\, \mathrm{proj}_{x_t}\nabla J(\hat x_1),\qquad
        \hat x_1 = \hat x_1(x_t, v(x_t, t)),

    i.e. every step also descends :math:`J` by :math:`h\,c\,\lambda(t)` times its gradient. The gradient is
    taken with respect to :math:`\hat x_1` only (the Jacobian :math:`\partial\hat x_1/\partial x_t` is replaced
    by the identity, FlowChef's gradient skipping): the network is evaluated once per step, never differentiated.
    On manifolds the ambient gradient is projected to the tangent space at :math:`x_t` (needs points and
    tangents in the same coordinates, e.g. torus or sphere).

    Args:
        objective: ``J(x1_hat, **cond) -> [B]`` (lower is better), differentiable in ``x1_hat``.
        scale: Guidance strength :math:`c \ge 0` (0 = unguided).
        schedule: :math:`\lambda(t)`: a name in :data:`GUIDANCE_SCHEDULES` or a callable ``[B] -> [B]``.
        t_range: Guidance is applied only for ``t_range[0] <= t < t_range[1]``.
        max_grad_norm: Optional per-sample clip of :math:`\|\nabla J\|` (robust to steep objectives).

    """

    def __init__(
        self,
        objective: Callable[..., Tensor],
        scale: float = 1.0,
        schedule: str | Callable[[Tensor], Tensor] = "constant",
        t_range: Sequence[float] = (0.0, 1.0),
        max_grad_norm: float | None = None,
    ) -> None:
        if isinstance(schedule, str) and schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"schedule must be one of {GUIDANCE_SCHEDULES} or a callable, got {schedule!r}")
        if scale < 0:
            raise ValueError(f"guidance scale must be >= 0, got {scale}")
        if len(t_range) != 2 or not 0.0 <= t_range[0] < t_range[1] <= 1.0:
            raise ValueError(f"t_range must be (t_lo, t_hi) with 0 <= t_lo < t_hi <= 1, got {t_range}")
        self.objective, self.scale, self.schedule = objective, float(scale), schedule
        self.t_range = (float(t_range[0]), float(t_range[1]))
        self.max_grad_norm = max_grad_norm

    def weight(self, t: Tensor) -> Tensor:
        r""":math:`c\,\lambda(t)`, zero outside ``t_range``; ``[B]``."""
        if callable(self.schedule):
            lam = self.schedule(t)
        elif self.schedule == "constant":
            lam = torch.ones_like(t)
        elif self.schedule == "increasing":
            lam = t
        else:
            lam = 1 - t
        inside = (t >= self.t_range[0]) & (t < self.t_range[1])
        return self.scale * lam * inside.to(t.dtype)

    def objective_grad(self, x1_hat: Tensor, **cond: Any) -> Tensor:
        r""":math:`\nabla J(\hat x_1)` (``[B, *D]``), computed on a detached copy."""
        with torch.enable_grad():
            x = x1_hat.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.objective(x, **cond).sum(), x)
        if self.max_grad_norm is not None:
            norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
            grad = grad * expand_t((self.max_grad_norm / norm).clamp(max=1.0), grad)
        return grad

    def guide(self, velocity: Velocity, path: ProbPath) -> Velocity:
        """The guided velocity for a model trained on ``path``."""
        manifold = None if isinstance(path, AffinePath) else path.manifold
        if manifold is not None and manifold.point_dim != manifold.tangent_dim:
            raise ValueError(
                f"ObjectiveGuidance needs points and tangents in the same coordinates; {manifold!r} has "
                f"point_dim={manifold.point_dim}, tangent_dim={manifold.tangent_dim}"
            )

        def guided(x: Tensor, t: Tensor, **cond: Any) -> Tensor:
            v = velocity(x, t, **cond)
            lam = self.weight(t)
            if not bool((lam != 0).any()):
                return v
            grad = self.objective_grad(predict_x1(path, x, v.detach(), t), **cond)
            if manifold is not None:
                grad = manifold.proju(x, grad)
            return v - expand_t(lam, v) * grad

        return guided
