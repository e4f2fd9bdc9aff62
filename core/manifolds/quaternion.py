r"""Unit-quaternion algebra for rotations (scalar-first ``(w, x, y, z)``, Hamilton convention).

A unit quaternion :math:`q = (\cos\tfrac\theta2, \sin\tfrac\theta2\, \hat n)` represents the active rotation
by angle :math:`\theta` about the unit axis :math:`\hat n`, acting on vectors as :math:`v \mapsto q (0, v)
q^*`; :math:`q` and :math:`-q` are the same rotation (double cover :math:`S^3 \to SO(3)`). Composition is the
Hamilton product, :math:`R(p \otimes q) = R(p) R(q)`. The rotation vector (axis-angle) is :math:`\omega =
\theta \hat n`.

All functions broadcast over leading axes, keep the dtype/device of their inputs and have finite gradients at
the identity. The exponential/logarithm use ``atan2`` and a Taylor series for :math:`\sin\theta/\theta`, which
keeps them accurate near the identity and near rotations by :math:`\pi` (cf. ReQFlow, Yue et al. 2025, whose
SLERP-exp path :func:`quaternion_slerp` implements).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.manifolds._utils import resolve_dtype, safe_norm, sinc
from flowsci.manifolds.base import ShapeLike, as_shape

__all__ = [
    "axis_angle_to_quaternion",
    "matrix_to_quaternion",
    "quaternion_apply",
    "quaternion_canonical",
    "quaternion_conjugate",
    "quaternion_exp",
    "quaternion_log",
    "quaternion_multiply",
    "quaternion_normalize",
    "quaternion_slerp",
    "quaternion_to_axis_angle",
    "quaternion_to_matrix",
    "quaternion_to_rotvec",
    "random_quaternion",
    "rotvec_to_quaternion",
]


def quaternion_multiply(p: Tensor, q: Tensor) -> Tensor:
    r"""Hamilton product :math:`p \otimes q`.

    .. math::
        (p_w q_w - \mathbf p \cdot \mathbf q,\ p_w \mathbf q + q_w \mathbf p + \mathbf p \times \mathbf q)

    Args:
        p: Quaternions ``[..., 4]``.
        q: Quaternions ``[..., 4]`` (broadcast against ``p``).

    Returns:
        ``[..., 4]``.
    """
    pw, pv = p[..., :1], p[..., 1:]
    qw, qv = q[..., :1], q[..., 1:]
    pv, qv = torch.broadcast_tensors(pv, qv)
    w = pw * qw - (pv * qv).sum(-1, keepdim=True)
    v = pw * qv + qw * pv + torch.linalg.cross(pv, qv, dim=-1)
    return torch.cat([w, v], dim=-1)


def quaternion_conjugate(q: Tensor) -> Tensor:
    r"""Conjugate :math:`q^* = (w, -\mathbf v)` (the inverse of a unit quaternion), ``[..., 4]``."""
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quaternion_normalize(q: Tensor) -> Tensor:
    r"""Project onto the unit sphere :math:`S^3`: :math:`q / \|q\|`, ``[..., 4]``."""
    return q / safe_norm(q)[0]


def quaternion_canonical(q: Tensor) -> Tensor:
    r"""Representative with non-negative scalar part: :math:`\operatorname{sign}(w)\, q` (``+q`` if w = 0)."""
    return torch.where(q[..., :1] < 0, -q, q)


def quaternion_apply(q: Tensor, v: Tensor) -> Tensor:
    r"""Rotate vectors: the vector part of :math:`q \otimes (0, v) \otimes q^*`.

    Args:
        q: Unit quaternions ``[..., 4]``.
        v: Vectors ``[..., 3]``.

    Returns:
        Rotated vectors ``[..., 3]``.
    """
    zero = torch.zeros_like(v[..., :1])
    qv = quaternion_multiply(q, torch.cat([zero, v], dim=-1))
    return quaternion_multiply(qv, quaternion_conjugate(q))[..., 1:]


def quaternion_exp(v: Tensor) -> Tensor:
    r"""Exponential of the pure quaternion :math:`(0, v)`: :math:`(\cos\|v\|, \frac{\sin\|v\|}{\|v\|} v)`.

    Args:
        v: Half-angle vectors ``[..., 3]`` (a rotation by :math:`\omega` is ``quaternion_exp(omega / 2)``).

    Returns:
        Unit quaternions ``[..., 4]``.
    """
    theta, sq = safe_norm(v)
    theta = torch.where(sq > 0, theta, torch.zeros_like(theta))
    return torch.cat([torch.cos(theta), sinc(theta) * v], dim=-1)


def quaternion_log(q: Tensor) -> Tensor:
    r"""Principal logarithm of a unit quaternion: :math:`v` with :math:`q = \exp((0, v))`, :math:`|v|\le\pi`.

    .. math::
        v = \frac{\theta}{\|\mathbf q_v\|} \mathbf q_v,\qquad
        \theta = \operatorname{atan2}(\|\mathbf q_v\|, q_w).

    ``atan2`` is accurate for every angle and :math:`\theta/\|\mathbf q_v\| \to 1` at the identity, so no
    clamping is needed. At :math:`q = -1` the direction is undefined (returns 0); rotation code first maps
    :math:`q` to :func:`quaternion_canonical`, so :math:`\|v\| \le \pi/2`.

    Args:
        q: Unit quaternions ``[..., 4]``.

    Returns:
        Vectors ``[..., 3]``.
    """
    qv = q[..., 1:]
    s, sq = safe_norm(qv)
    theta = torch.atan2(torch.where(sq > 0, s, torch.zeros_like(s)), q[..., :1])
    return torch.where(sq > 0, theta / s, torch.ones_like(s)) * qv


def rotvec_to_quaternion(omega: Tensor) -> Tensor:
    r"""Rotation vector :math:`\omega = \theta \hat n` to the unit quaternion :math:`\exp((0, \omega/2))`.

    Returns ``[..., 4]``.
    """
    return quaternion_exp(0.5 * omega)


def quaternion_to_rotvec(q: Tensor) -> Tensor:
    r"""Rotation vector :math:`\omega = 2 \log(\pm q)`, angle :math:`|\omega| \in [0, \pi]`, ``[..., 3]``."""
    return 2 * quaternion_log(quaternion_canonical(q))


def axis_angle_to_quaternion(axis: Tensor, angle: Tensor) -> Tensor:
    r"""Quaternion :math:`(\cos\tfrac\theta2, \sin\tfrac\theta2\, \hat n)` of the rotation by ``angle``.

    Args:
        axis: Axes ``[..., 3]`` (normalised here).
        angle: Angles in radians ``[...]``.

    Returns:
        Unit quaternions ``[..., 4]``.
    """
    n = axis / safe_norm(axis)[0]
    half = 0.5 * angle.unsqueeze(-1)
    return torch.cat([torch.cos(half), torch.sin(half) * n], dim=-1)


def quaternion_to_axis_angle(q: Tensor) -> tuple[Tensor, Tensor]:
    r"""Unit axis ``[..., 3]`` and angle ``[...]`` in :math:`[0, \pi]` of a rotation.

    At the identity the axis is undefined and :math:`e_x` is returned.
    """
    omega = quaternion_to_rotvec(q)
    angle, sq = safe_norm(omega)
    ex = torch.zeros_like(omega)
    ex[..., 0] = 1
    axis = torch.where(sq > 0, omega / angle, ex)
    return axis, torch.where(sq > 0, angle, torch.zeros_like(angle)).squeeze(-1)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrix :math:`R(q)` with :math:`R(q) v = q (0, v) q^*`; ``q`` need not be normalised.

    Args:
        q: Quaternions ``[..., 4]``.

    Returns:
        Matrices ``[..., 3, 3]``.
    """
    w, x, y, z = q.unbind(-1)
    two_s = 2 / (q * q).sum(-1)
    m = torch.stack(
        [
            1 - two_s * (y * y + z * z),
            two_s * (x * y - z * w),
            two_s * (x * z + y * w),
            two_s * (x * y + z * w),
            1 - two_s * (x * x + z * z),
            two_s * (y * z - x * w),
            two_s * (x * z - y * w),
            two_s * (y * z + x * w),
            1 - two_s * (x * x + y * y),
        ],
        dim=-1,
    )
    return m.reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(m: Tensor) -> Tensor:
    r"""Unit quaternion (canonical, :math:`w \ge 0`) of a rotation matrix, by Shepperd's method.

    Of the four expressions :math:`4w^2 = 1 + \operatorname{tr} R`, :math:`4x^2 = 1 + R_{00} - R_{11} -
    R_{22}`, ... the largest (:math:`\ge 1/4`) is used and the other components follow from the off-diagonal
    entries, which is stable for every angle including :math:`\pi` (Shepperd, J. Guid. Control 1978).

    Args:
        m: Rotation matrices ``[..., 3, 3]``.

    Returns:
        Unit quaternions ``[..., 4]`` with non-negative scalar part.
    """
    r00, r01, r02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    r10, r11, r12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    r20, r21, r22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    sq4 = torch.stack(
        [1 + r00 + r11 + r22, 1 + r00 - r11 - r22, 1 - r00 + r11 - r22, 1 - r00 - r11 + r22], dim=-1
    )  # 4 w^2, 4 x^2, 4 y^2, 4 z^2
    # Candidate k has 4 q_k^2 as its k-th entry and 4 q_k q_j elsewhere; only the largest k is used.
    candidates = torch.stack(
        [
            torch.stack([sq4[..., 0], r21 - r12, r02 - r20, r10 - r01], dim=-1),
            torch.stack([r21 - r12, sq4[..., 1], r01 + r10, r02 + r20], dim=-1),
            torch.stack([r02 - r20, r01 + r10, sq4[..., 2], r12 + r21], dim=-1),
            torch.stack([r10 - r01, r02 + r20, r12 + r21, sq4[..., 3]], dim=-1),
        ],
        dim=-2,
    )  # [..., 4, 4]: row k = 4 q_k * q
    best = sq4.argmax(-1)
    row = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return quaternion_canonical(quaternion_normalize(row))


def quaternion_slerp(q0: Tensor, q1: Tensor, t: Tensor | float) -> Tensor:
    r"""Shortest-path SLERP in exponential form: :math:`q_t = q_0 \otimes \exp(t \log(q_0^* \otimes q_1))`.

    ``q1`` is first replaced by ``-q1`` where :math:`\langle q_0, q_1\rangle < 0` so the path is the shortest
    rotation (angle :math:`\le \pi`). The body-frame angular velocity is constant,
    :math:`\omega = 2\log(q_0^* \otimes q_1)`, i.e. :math:`\dot q_t = \tfrac12 q_t \otimes (0, \omega)`
    (ReQFlow, Yue et al. 2025; Shoemake 1985).

    Args:
        q0: Unit quaternions ``[..., 4]`` at :math:`t = 0`.
        q1: Unit quaternions ``[..., 4]`` at :math:`t = 1`.
        t: Fractions broadcastable to ``q0[..., :1]``; values outside :math:`[0, 1]` extrapolate.

    Returns:
        Unit quaternions ``[..., 4]`` (:math:`q_0` at ``t = 0`` and the sign-aligned :math:`\pm q_1` at
        ``t = 1``).
    """
    q1 = torch.where((q0 * q1).sum(-1, keepdim=True) < 0, -q1, q1)
    rel = quaternion_multiply(quaternion_conjugate(q0), q1)
    half = quaternion_log(quaternion_normalize(rel))
    step = quaternion_exp(torch.as_tensor(t).to(half) * half)
    return quaternion_normalize(quaternion_multiply(q0, step))


def random_quaternion(
    shape: ShapeLike,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Haar-uniform random rotations as unit quaternions: normalised 4-D standard normals (Shoemake 1992).

    Args:
        shape: Batch shape.
        generator: Optional random generator (on ``device``).
        device: Device of the result.
        dtype: Floating dtype (default: ``torch.get_default_dtype()``).

    Returns:
        Unit quaternions ``[*shape, 4]``.
    """
    g = torch.randn((*as_shape(shape), 4), generator=generator, device=device, dtype=resolve_dtype(dtype))
    return quaternion_normalize(g)
