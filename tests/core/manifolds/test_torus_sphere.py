"""Flat torus and sphere edge cases: boundary crossing, wrapping round-off, antipodes, rotation equivariance."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.manifolds import (
    Euclidean,
    FlatTorus,
    Sphere,
    quaternion_to_matrix,
    random_quaternion,
    wrap,
    wrap_diff,
)
from flowsci.testing.manifolds import assert_equivariant, assert_on_manifold, assert_tangent


def test_torus_log_takes_shortest_way_across_the_boundary() -> None:
    m = FlatTorus(2)
    x = torch.tensor([[0.95, 0.02], [0.1, 0.5]], dtype=torch.float64)
    y = torch.tensor([[0.05, 0.98], [0.9, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(m.log(x, y), torch.tensor([[0.1, -0.04], [-0.2, 0.0]], dtype=torch.float64))
    mid = m.geodesic(x, y, 0.5)
    torch.testing.assert_close(mid, torch.tensor([[0.0, 0.0], [0.0, 0.5]], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(m.dist(x, y), torch.tensor([math.hypot(0.1, 0.04), 0.2], dtype=torch.float64))


def test_torus_path_crossing_boundary_is_continuous() -> None:
    """Along the geodesic the unwrapped coordinate moves linearly: consecutive points differ by v * dt."""
    m = FlatTorus(3)
    g = torch.Generator().manual_seed(0)
    x = m.random_base(50, generator=g, dtype=torch.float64)
    y = m.random_base(50, generator=g, dtype=torch.float64)
    v = m.log(x, y)
    ts = torch.linspace(0, 1, 21, dtype=torch.float64)
    pts = [m.geodesic(x, y, t) for t in ts]
    for a, b in zip(pts[:-1], pts[1:], strict=True):
        assert_on_manifold(m, b, 0.0)
        torch.testing.assert_close(wrap_diff(b - a), v / 20, atol=1e-12, rtol=0)


def test_wrap_guards_float32_round_off() -> None:
    x = torch.tensor([-1e-9, -1.0, 1.0, 2.5, -0.25, 0.9999999], dtype=torch.float32)
    w = wrap(x)
    assert ((w >= 0) & (w < 1)).all()
    torch.testing.assert_close(w[1:5], torch.tensor([0.0, 0.0, 0.5, 0.75]))
    d = wrap_diff(torch.tensor([0.5, -0.5, 0.49, 1.7], dtype=torch.float64))
    torch.testing.assert_close(d, torch.tensor([-0.5, -0.5, 0.49, -0.3], dtype=torch.float64))


def test_torus_exp_accepts_long_vectors() -> None:
    m = FlatTorus(1)
    x = torch.tensor([[0.3]], dtype=torch.float64)
    torch.testing.assert_close(
        m.exp(x, torch.tensor([[2.45]], dtype=torch.float64)), torch.tensor([[0.75]], dtype=torch.float64)
    )


def test_torus_translation_equivariance() -> None:
    m = FlatTorus(3)
    g = torch.Generator().manual_seed(1)
    x, y = (
        m.random_base(40, generator=g, dtype=torch.float64),
        m.random_base(40, generator=g, dtype=torch.float64),
    )
    shift = torch.rand(3, generator=g, dtype=torch.float64)

    def move(p: torch.Tensor) -> torch.Tensor:
        return wrap(p + shift)

    assert_equivariant(lambda a, b: m.geodesic(a, b, 0.7), [x, y], [move, move], move, manifold=m, atol=1e-12)
    assert_equivariant(m.log, [x, y], [move, move], lambda v: v, atol=1e-12)


def test_sphere_antipodal_log_has_length_pi() -> None:
    for dim in (1, 2, 4):
        m = Sphere(dim)
        for dtype in (torch.float32, torch.float64):
            x = m.random_base(30, generator=torch.Generator().manual_seed(dim), dtype=dtype)
            v = m.log(x, -x)
            assert_tangent(m, x, v, 1e-5)
            torch.testing.assert_close(v.norm(dim=-1), torch.full((30,), math.pi, dtype=dtype))
            assert (m.exp(x, v) + x).abs().max() < 1e-5
            assert_on_manifold(m, m.geodesic(x, -x, 0.5), 1e-5)
            torch.testing.assert_close(m.dist(x, -x), torch.full((30,), math.pi, dtype=dtype))


def test_sphere_near_antipodal_and_near_identical_float32() -> None:
    m = Sphere(2)
    x = torch.tensor([[0.0, 0.0, 1.0]])
    for angle in (1e-7, 1e-4, math.pi - 1e-3, math.pi - 1e-5):
        y = torch.tensor([[math.sin(angle), 0.0, math.cos(angle)]])
        v = m.log(x, y)
        torch.testing.assert_close(v, torch.tensor([[angle, 0.0, 0.0]]), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(m.dist(x, y), torch.tensor([angle]), atol=1e-6, rtol=1e-6)


def test_sphere_s2_geodesic_is_great_circle() -> None:
    m = Sphere(2)
    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[1 / 3]], dtype=torch.float64)
    x_t, v_t = m.geodesic_with_velocity(x, y, t)
    torch.testing.assert_close(
        x_t, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0]], dtype=torch.float64)
    )
    # speed pi/2, direction tangent to the great circle
    torch.testing.assert_close(
        v_t,
        math.pi / 2 * torch.tensor([[-math.sin(math.pi / 6), math.cos(math.pi / 6), 0.0]], dtype=torch.float64),
    )


def test_sphere_rotation_equivariance() -> None:
    m = Sphere(2)
    g = torch.Generator().manual_seed(2)
    x, y = (
        m.random_base(40, generator=g, dtype=torch.float64),
        m.random_base(40, generator=g, dtype=torch.float64),
    )
    r = quaternion_to_matrix(random_quaternion(1, generator=g, dtype=torch.float64))[0]

    def rot(p: torch.Tensor) -> torch.Tensor:
        return p @ r.T

    assert_equivariant(lambda a, b: m.geodesic(a, b, 0.35), [x, y], [rot, rot], rot, manifold=m, atol=1e-12)
    assert_equivariant(m.log, [x, y], [rot, rot], rot, atol=1e-12)
    assert_equivariant(lambda a, b: m.geodesic_with_velocity(a, b, 0.6)[1], [x, y], [rot, rot], rot, atol=1e-12)


def test_euclidean_is_dimension_agnostic_and_rotation_equivariant() -> None:
    m = Euclidean()
    x, y = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(m.geodesic(x, y, 0.25), 0.75 * x + 0.25 * y)
    torch.testing.assert_close(m.dist(x, y), (x - y).norm(dim=-1))
    r = quaternion_to_matrix(random_quaternion(1, dtype=torch.float64))[0]
    a, b = torch.randn(20, 3, dtype=torch.float64), torch.randn(20, 3, dtype=torch.float64)

    def rot(p: torch.Tensor) -> torch.Tensor:
        return p @ r.T

    assert_equivariant(m.log, [a, b], [rot, rot], rot, atol=1e-12)
    with pytest.raises(ValueError, match="explicit dim"):
        m.random_base(3)


def test_sphere_transport_to_antipode_falls_back_to_projection() -> None:
    m = Sphere(2)
    x = m.random_base(10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    v = m.proju(x, torch.randn(10, 3, dtype=torch.float64))
    torch.testing.assert_close(m.transport(x, -x, v), v)  # T_x S^2 = T_{-x} S^2
    assert torch.isfinite(m.transport(x, x, v)).all()
