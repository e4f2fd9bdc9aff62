"""Quaternion algebra against scipy.spatial.transform.Rotation (scalar-last there, scalar-first here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation, Slerp

from flowsci.manifolds import (
    axis_angle_to_quaternion,
    matrix_to_quaternion,
    quaternion_apply,
    quaternion_canonical,
    quaternion_conjugate,
    quaternion_exp,
    quaternion_log,
    quaternion_multiply,
    quaternion_slerp,
    quaternion_to_axis_angle,
    quaternion_to_matrix,
    quaternion_to_rotvec,
    random_quaternion,
    rotvec_to_quaternion,
)

TOL = {torch.float32: 2e-6, torch.float64: 1e-13}


def _scipy(q: torch.Tensor) -> Rotation:
    return Rotation.from_quat(q.double().numpy()[..., [1, 2, 3, 0]])


def _from_scipy(r: Rotation, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(r.as_quat()[..., [3, 0, 1, 2]]).to(dtype)


def _same_rotation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|<a, b>| = 1 for the same rotation; returns 1 - |<a, b>| (>= 0)."""
    return 1 - (a * b).sum(-1).abs()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_conversions_match_scipy(dtype: torch.dtype) -> None:
    q = random_quaternion(500, generator=torch.Generator().manual_seed(0), dtype=dtype)
    np.testing.assert_allclose(quaternion_to_matrix(q).double().numpy(), _scipy(q).as_matrix(), atol=10 * TOL[dtype])
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    assert back.dtype == dtype and (back[..., 0] >= 0).all()
    torch.testing.assert_close(back, quaternion_canonical(q), atol=10 * TOL[dtype], rtol=0)


def test_matrix_to_quaternion_at_pi_and_identity() -> None:
    """Shepperd's branch selection: rotations by exactly pi (trace -1) and the identity."""
    axes = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3]], dtype=torch.float64)
    for angle in (math.pi, 0.0, math.pi - 1e-7):
        q = axis_angle_to_quaternion(axes, torch.full((5,), angle, dtype=torch.float64))
        back = matrix_to_quaternion(quaternion_to_matrix(q))
        assert _same_rotation(back, q).max() < 1e-13


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hamilton_product_composes_rotations(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    p, q = random_quaternion(200, generator=g, dtype=dtype), random_quaternion(200, generator=g, dtype=dtype)
    pq = quaternion_multiply(p, q)
    torch.testing.assert_close(
        quaternion_to_matrix(pq),
        quaternion_to_matrix(p) @ quaternion_to_matrix(q),
        atol=10 * TOL[dtype],
        rtol=0,
    )
    expected = _from_scipy(_scipy(p) * _scipy(q), dtype)
    assert _same_rotation(pq, expected).max() < 10 * TOL[dtype]
    identity = torch.tensor([1.0, 0, 0, 0], dtype=dtype)
    torch.testing.assert_close(quaternion_multiply(p, quaternion_conjugate(p)), identity.expand_as(p))
    v = torch.randn(200, 3, generator=g, dtype=dtype)
    torch.testing.assert_close(
        quaternion_apply(p, v),
        (quaternion_to_matrix(p) @ v.unsqueeze(-1)).squeeze(-1),
        atol=10 * TOL[dtype],
        rtol=0,
    )


def test_hamilton_product_unit_table() -> None:
    one, i, j, k = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(quaternion_multiply(i, j), k)
    torch.testing.assert_close(quaternion_multiply(j, k), i)
    torch.testing.assert_close(quaternion_multiply(k, i), j)
    torch.testing.assert_close(quaternion_multiply(i, i), -one)
    torch.testing.assert_close(quaternion_multiply(j, i), -k)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rotvec_and_axis_angle_match_scipy(dtype: torch.dtype) -> None:
    q = random_quaternion(500, generator=torch.Generator().manual_seed(2), dtype=dtype)
    rv = quaternion_to_rotvec(q)
    np.testing.assert_allclose(rv.double().numpy(), _scipy(q).as_rotvec(), atol=20 * TOL[dtype])
    assert _same_rotation(rotvec_to_quaternion(rv), q).max() < 10 * TOL[dtype]
    axis, angle = quaternion_to_axis_angle(q)
    assert angle.shape == (500,) and ((angle >= 0) & (angle <= math.pi)).all()
    torch.testing.assert_close(axis.norm(dim=-1), torch.ones(500, dtype=dtype))
    assert _same_rotation(axis_angle_to_quaternion(axis, angle), q).max() < 10 * TOL[dtype]


def test_axis_angle_of_identity_is_finite() -> None:
    axis, angle = quaternion_to_axis_angle(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
    torch.testing.assert_close(angle, torch.zeros(2))
    torch.testing.assert_close(axis.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-9, 1e-5, 1e-3, 0.3, 1.5, math.pi - 1e-3])
def test_exp_log_round_trip_across_angles(dtype: torch.dtype, scale: float) -> None:
    """Small-angle series and atan2 keep exp/log accurate from the identity to pi (half-angle up to pi)."""
    g = torch.Generator().manual_seed(3)
    direction = torch.nn.functional.normalize(torch.randn(100, 3, generator=g, dtype=torch.float64), dim=-1)
    v = (scale * direction).to(dtype)
    q = quaternion_exp(v)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(100, dtype=dtype), atol=TOL[dtype], rtol=0)
    back = quaternion_log(q)
    # Relative accuracy near the identity, absolute near pi (where the angle itself is O(1)).
    torch.testing.assert_close(back, v, atol=4 * TOL[dtype] * max(scale, 1e-3), rtol=4 * TOL[dtype])


def test_small_angle_series_matches_high_precision() -> None:
    """exp near the identity in float32 matches the float64 closed form to machine precision."""
    v64 = torch.tensor([[1e-4, -2e-4, 3e-5], [5e-3, 1e-3, -2e-3], [0.0, 0.0, 0.0]], dtype=torch.float64)
    theta = v64.norm(dim=-1, keepdim=True)
    ref = torch.cat([torch.cos(theta), torch.where(theta > 0, torch.sin(theta) / theta, 1.0) * v64], dim=-1)
    torch.testing.assert_close(quaternion_exp(v64.float()).double(), ref, atol=1e-7, rtol=0)
    torch.testing.assert_close(quaternion_exp(v64), ref, atol=1e-16, rtol=0)


def test_exp_log_gradients_finite_at_identity() -> None:
    v = torch.zeros(4, 3, dtype=torch.float64, requires_grad=True)
    quaternion_exp(v).sum().backward()
    torch.testing.assert_close(v.grad, torch.ones(4, 3, dtype=torch.float64))  # d/dv of sinc(|v|) v at 0 is I
    q = torch.tensor([[1.0, 0, 0, 0]] * 4, dtype=torch.float64, requires_grad=True)
    quaternion_log(q).sum().backward()
    assert torch.isfinite(q.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_slerp_matches_scipy(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    q0 = random_quaternion(64, generator=g, dtype=torch.float64)
    q1 = random_quaternion(64, generator=g, dtype=torch.float64)
    ts = np.linspace(0, 1, 7)
    for n in range(64):
        pair = Rotation.from_quat(torch.stack([q0[n], q1[n]]).numpy()[:, [1, 2, 3, 0]])
        ref = _from_scipy(Slerp([0, 1], pair)(ts), torch.float64)
        ours = quaternion_slerp(q0[n].to(dtype), q1[n].to(dtype), torch.from_numpy(ts).to(dtype)[:, None])
        assert _same_rotation(ours.double(), ref).max() < 10 * TOL[dtype]


def test_slerp_flips_to_shortest_path_and_hits_end_points() -> None:
    g = torch.Generator().manual_seed(5)
    q0 = random_quaternion(100, generator=g, dtype=torch.float64)
    q1 = random_quaternion(100, generator=g, dtype=torch.float64)
    # Sign of q1 does not change the rotations on the path.
    for t in (0.0, 0.3, 1.0):
        a, b = quaternion_slerp(q0, q1, t), quaternion_slerp(q0, -q1, t)
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(quaternion_slerp(q0, q1, 0.0), q0)
    assert _same_rotation(quaternion_slerp(q0, q1, 1.0), q1).max() < 1e-14
    # Half way, the relative rotation is half the (shortest) angle.
    half = quaternion_slerp(q0, q1, 0.5)
    full_angle = quaternion_to_axis_angle(quaternion_multiply(quaternion_conjugate(q0), q1))[1]
    half_angle = quaternion_to_axis_angle(quaternion_multiply(quaternion_conjugate(q0), half))[1]
    torch.testing.assert_close(half_angle, full_angle / 2)


def test_haar_sampling_moments() -> None:
    """Haar measure: E[R] = 0, rotation angle density (1 - cos a)/pi, uniform axis."""
    q = random_quaternion(40000, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    r = quaternion_to_matrix(q)
    assert r.mean(0).abs().max() < 0.02
    _, angle = quaternion_to_axis_angle(q)
    # E[angle] under (1 - cos a)/pi on [0, pi] is pi/2 + 2/pi; E[cos a] = -1/2.
    assert abs(angle.mean().item() - (math.pi / 2 + 2 / math.pi)) < 0.02
    assert abs(torch.cos(angle).mean().item() + 0.5) < 0.01
    # Invariance: the left-translated sample has the same angle distribution (two-sample KS distance).
    g = random_quaternion(1, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    shifted = quaternion_to_axis_angle(quaternion_multiply(g, q[:20000]))[1].sort().values
    base = angle[20000:].sort().values
    grid = torch.linspace(0, math.pi, 200, dtype=torch.float64)
    ks = (torch.searchsorted(shifted, grid) - torch.searchsorted(base, grid)).abs().max() / 20000
    assert ks < 0.02


def test_functions_follow_input_dtype_and_shape() -> None:
    q = random_quaternion((2, 3), dtype=torch.float64)
    assert quaternion_to_matrix(q).shape == (2, 3, 3, 3)
    assert quaternion_log(q).dtype == torch.float64
    assert quaternion_slerp(q, q, torch.rand(2, 3, 1, dtype=torch.float64)).shape == (2, 3, 4)


def test_conventions_match_e3nn() -> None:
    """Cross-check against e3nn.o3 (same scalar-first Hamilton convention), when the proteins extra is installed."""
    o3 = pytest.importorskip("e3nn.o3", reason="e3nn (flowsci[proteins] extra) not installed")
    g = torch.Generator().manual_seed(8)
    q, p = (random_quaternion(100, generator=g, dtype=torch.float64) for _ in range(2))
    torch.testing.assert_close(quaternion_to_matrix(q), o3.quaternion_to_matrix(q))
    torch.testing.assert_close(quaternion_multiply(q, p), o3.compose_quaternion(q, p))
    axis, angle = quaternion_to_axis_angle(q)
    assert _same_rotation(o3.axis_angle_to_quaternion(axis, angle), q).max() < 1e-14
    r = o3.rand_matrix(100, dtype=torch.float64)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(r)), r)
