"""SO(3) manifold: edge cases of the double cover, angles near pi, matrix-geodesic agreement, equivariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm, logm

from flowsci.manifolds import (
    SO3,
    axis_angle_to_quaternion,
    quaternion_apply,
    quaternion_multiply,
    quaternion_to_matrix,
    random_quaternion,
)
from flowsci.testing.manifolds import assert_equivariant, assert_on_manifold


def _hat(w: np.ndarray) -> np.ndarray:
    return np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]])


def test_antipodal_quaternions_are_the_same_rotation() -> None:
    m = SO3()
    q = random_quaternion(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert m.log(q, -q).abs().max() < 1e-12
    assert m.dist(q, -q).max() < 1e-7
    g = m.geodesic(q, -q, torch.rand(50, 1, dtype=torch.float64))
    assert m.dist(g, q).max() < 1e-7
    # log and dist are invariant under the sign of either argument.
    p = random_quaternion(50, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for a, b in ((q, -p), (-q, p), (-q, -p)):
        torch.testing.assert_close(m.log(a, b), m.log(q, p))
        torch.testing.assert_close(m.dist(a, b), m.dist(q, p))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("delta", [1e-2, 1e-4, 1e-6, 0.0, -1e-4])
def test_angles_near_pi(dtype: torch.dtype, delta: float) -> None:
    """Rotations by pi - delta (delta < 0: just beyond pi) keep their angle and round-trip through exp."""
    m = SO3()
    g = torch.Generator().manual_seed(2)
    axis = torch.randn(200, 3, generator=g, dtype=torch.float64)
    angle = torch.full((200,), math.pi - delta, dtype=torch.float64)
    q0 = random_quaternion(200, generator=g, dtype=torch.float64)
    q1 = quaternion_multiply(q0, axis_angle_to_quaternion(axis, angle))
    q0, q1 = q0.to(dtype), q1.to(dtype)
    v = m.log(q0, q1)
    tol = 2e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(v.norm(dim=-1), (math.pi - abs(delta)) * torch.ones(200, dtype=dtype), atol=tol, rtol=0)
    torch.testing.assert_close(m.dist(q0, q1), v.norm(dim=-1), atol=tol, rtol=0)
    assert m.dist(m.exp(q0, v), q1).max() < 2 * tol
    x_t = m.geodesic(q0, q1, 0.5)
    torch.testing.assert_close(m.dist(q0, x_t), 0.5 * v.norm(dim=-1), atol=tol, rtol=0)


@pytest.mark.parametrize("angle", [1e-8, 1e-6, 1e-3])
def test_tiny_rotations_float32(angle: float) -> None:
    """Near the identity the log keeps relative precision (no arccos clamp)."""
    m = SO3()
    axis = torch.tensor([[0.3, -0.5, 0.8]])
    q1 = axis_angle_to_quaternion(axis, torch.tensor([angle]))
    v = m.log(m.origin(1), q1)
    torch.testing.assert_close(v, angle * torch.nn.functional.normalize(axis, dim=-1), atol=0, rtol=1e-5)


def test_geodesic_agrees_with_matrix_interpolation() -> None:
    """SLERP equals R_t = R_0 expm(t logm(R_0^T R_1)) (body-frame matrix geodesic)."""
    m = SO3()
    g = torch.Generator().manual_seed(3)
    q0 = random_quaternion(20, generator=g, dtype=torch.float64)
    q1 = random_quaternion(20, generator=g, dtype=torch.float64)
    r0, r1 = quaternion_to_matrix(q0).numpy(), quaternion_to_matrix(q1).numpy()
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        ours = quaternion_to_matrix(m.geodesic(q0, q1, t)).numpy()
        for n in range(20):
            rel = np.real(logm(r0[n].T @ r1[n]))
            # scipy's logm loses a few digits for angles close to pi, hence 1e-7.
            np.testing.assert_allclose(ours[n], r0[n] @ expm(t * rel), atol=1e-7, rtol=0)


def test_tangent_is_body_angular_velocity() -> None:
    """exp_q(w) = R(q) expm(hat(w)): the tangent is the body-frame rotation vector; dist is the angle."""
    m = SO3()
    g = torch.Generator().manual_seed(4)
    q = random_quaternion(10, generator=g, dtype=torch.float64)
    w = torch.randn(10, 3, generator=g, dtype=torch.float64)
    got = quaternion_to_matrix(m.exp(q, w)).numpy()
    for n in range(10):
        np.testing.assert_allclose(got[n], quaternion_to_matrix(q[n]).numpy() @ expm(_hat(w[n].numpy())), atol=1e-12)
    r = quaternion_to_matrix(q).numpy()
    p = random_quaternion(10, generator=g, dtype=torch.float64)
    rp = quaternion_to_matrix(p).numpy()
    angles = [math.acos(np.clip((np.trace(r[n].T @ rp[n]) - 1) / 2, -1, 1)) for n in range(10)]
    np.testing.assert_allclose(m.dist(q, p).numpy(), angles, atol=1e-7)


def test_geodesic_velocity_integrates_to_target() -> None:
    """Constant body velocity omega = log_{q0}(q1) drives q0 to q1 in unit time (exact Lie-group steps)."""
    m = SO3()
    g = torch.Generator().manual_seed(5)
    q0, q1 = random_quaternion(30, generator=g), random_quaternion(30, generator=g)
    q = q0
    for k in range(10):
        t = torch.full((30, 1), k / 10)
        _, v = m.geodesic_with_velocity(q0, q1, t)
        q = m.exp(q, 0.1 * v)
        assert_on_manifold(m, q, 1e-6)
    assert m.dist(q, q1).max() < 1e-5


def test_left_invariance_and_right_equivariance() -> None:
    """Global rotation g (left): geodesics rotate, body velocities are invariant; right: velocities rotate by R^T."""
    m = SO3()
    gen = torch.Generator().manual_seed(6)
    q0 = random_quaternion(40, generator=gen, dtype=torch.float64)
    q1 = random_quaternion(40, generator=gen, dtype=torch.float64)
    g = random_quaternion(1, generator=gen, dtype=torch.float64)

    def left(x: torch.Tensor) -> torch.Tensor:
        return quaternion_multiply(g, x)

    def right(x: torch.Tensor) -> torch.Tensor:
        return quaternion_multiply(x, g)

    def identity(x: torch.Tensor) -> torch.Tensor:
        return x

    def rot_t(v: torch.Tensor) -> torch.Tensor:
        return quaternion_apply(g * torch.tensor([1.0, -1, -1, -1], dtype=torch.float64), v)

    def geo(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return m.geodesic(a, b, 0.3)

    assert_equivariant(geo, [q0, q1], [left, left], left, manifold=m, atol=1e-7)
    assert_equivariant(geo, [q0, q1], [right, right], right, manifold=m, atol=1e-7)
    assert_equivariant(m.log, [q0, q1], [left, left], identity, atol=1e-10)
    assert_equivariant(m.log, [q0, q1], [right, right], rot_t, atol=1e-10)


def test_dist_is_bi_invariant() -> None:
    m = SO3()
    gen = torch.Generator().manual_seed(7)
    q0, q1, a, b = (random_quaternion(40, generator=gen, dtype=torch.float64) for _ in range(4))
    moved = m.dist(
        quaternion_multiply(a, quaternion_multiply(q0, b)), quaternion_multiply(a, quaternion_multiply(q1, b))
    )
    torch.testing.assert_close(moved, m.dist(q0, q1), atol=1e-7, rtol=0)
