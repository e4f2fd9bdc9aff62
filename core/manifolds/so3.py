"""The rotation group SO(3) as unit quaternions, with body-frame angular-velocity tangents."""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.manifolds._utils import nan_where_nonfinite, resolve_dtype, safe_norm, unit_or
from flowsci.manifolds.base import Manifold, ShapeLike, as_shape
from flowsci.manifolds.quaternion import (
    quaternion_canonical,
    quaternion_conjugate,
    quaternion_exp,
    quaternion_log,
    quaternion_multiply,
    quaternion_normalize,
    quaternion_slerp,
    random_quaternion,
)

__all__ = ["SO3"]


class SO3(Manifold):
    r"""SO(3) with the bi-invariant metric whose geodesic distance is the rotation angle.

    Points are unit quaternions ``[..., 4]`` in ``(w, x, y, z)`` order (:math:`q \equiv -q`). A tangent
    vector at :math:`q` is stored as the body-frame angular velocity :math:`\omega \in \mathbb R^3`
    (``[..., 3]``): a curve :math:`q(t)` has :math:`\dot q = \tfrac12 q \otimes (0, \omega)`. Then (ReQFlow,
    Yue et al. 2025)

    .. math::
        \exp_q(\omega) = q \otimes \exp\big((0, \omega/2)\big),\qquad
        \log_q(p) = 2 \log\big(\pm (q^* \otimes p)\big),\qquad
        d(q, p) = \|\log_q p\| = \angle(R_q^\top R_p) \in [0, \pi],

    where the sign makes the scalar part non-negative (shortest rotation). The geodesic is SLERP in
    exponential form, :math:`q_t = q_0 \otimes \exp(t \log(q_0^* \otimes q_1))`, with constant body velocity
    :math:`\dot q_t \leftrightarrow \omega = \log_{q_0} q_1`, and :math:`\log_{q_t}(q_1)/(1-t) = \omega`. The
    metric is :math:`\langle \omega_1, \omega_2\rangle` (half the Frobenius metric on matrices). Left
    multiplication :math:`q \mapsto g \otimes q` (a global rotation of a frame) leaves tangents unchanged. The
    prior is the Haar measure.
    """

    def __init__(self) -> None:
        self.point_dim = 4
        self.tangent_dim = 3

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`q \otimes \exp((0, \omega/2))`, renormalised."""
        return nan_where_nonfinite(quaternion_normalize(quaternion_multiply(x, quaternion_exp(0.5 * v))), x, v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Body-frame rotation vector of :math:`q^* \otimes p` with angle in :math:`[0, \pi]`."""
        rel = quaternion_multiply(quaternion_conjugate(x), y)
        return nan_where_nonfinite(2 * quaternion_log(quaternion_canonical(quaternion_normalize(rel))), x, y)

    def proju(self, x: Tensor, v: Tensor) -> Tensor:
        r"""Identity: every :math:`\omega \in \mathbb R^3` is a tangent vector in the body frame."""
        return v

    def projx(self, x: Tensor) -> Tensor:
        """Normalise to a unit quaternion (the sign is kept); the identity for a zero quaternion."""
        return unit_or(x, self.origin((), device=x.device, dtype=x.dtype))

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Rotation angle :math:`2\operatorname{atan2}(|\mathbf r_v|, |r_w|)`, :math:`r = q^* \otimes p`."""
        rel = quaternion_multiply(quaternion_conjugate(x), y)
        s, sq = safe_norm(rel[..., 1:], keepdim=False)
        angle = 2 * torch.atan2(torch.where(sq > 0, s, torch.zeros_like(s)), rel[..., 0].abs())
        return nan_where_nonfinite(angle, x, y, reduced=True)

    def geodesic(self, x: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        """Shortest-path SLERP :func:`~flowsci.manifolds.quaternion.quaternion_slerp`."""
        return nan_where_nonfinite(quaternion_slerp(x, y, t), x, y)

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        r"""Left-invariant transport: the body angular velocity is kept, :math:`\omega \mapsto \omega`.

        This is the transport of the (−) Cartan–Schouten connection. Its geodesics are the same
        one-parameter subgroups :math:`q \exp(t\omega)`, and it is the frame used by Lie-group
        Runge–Kutta (Munthe-Kaas) methods.
        """
        del x, y
        return v

    def geodesic_with_velocity(self, x: Tensor, y: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""SLERP point and its constant body angular velocity :math:`\omega = \log_{q_0} q_1`."""
        omega = self.log(x, y)
        x_t = self.exp(x, torch.as_tensor(t).to(omega) * omega)
        return x_t, omega.expand_as(x_t[..., 1:])

    def random_base(
        self,
        shape: ShapeLike,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Haar-uniform rotations ``[*shape, 4]``."""
        return random_quaternion(shape, generator=generator, device=device, dtype=dtype)

    def origin(
        self, shape: ShapeLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Identity rotation :math:`(1, 0, 0, 0)` broadcast to ``[*shape, 4]``."""
        q = torch.zeros((*as_shape(shape), 4), device=device, dtype=resolve_dtype(dtype))
        q[..., 0] = 1
        return q

    def __repr__(self) -> str:
        return "SO3()"
