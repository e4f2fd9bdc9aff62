"""The public manifold assertions pass on correct inputs and fail, with a useful message, on wrong ones."""

from __future__ import annotations

import pytest
import torch

from flowsci.manifolds import SO3, Euclidean, FlatTorus, Sphere
from flowsci.paths import CondOTPath, PathSample, ProbPath
from flowsci.paths.geodesic import GeodesicPath
from flowsci.testing.manifolds import (
    assert_equivariant,
    assert_on_manifold,
    assert_path_endpoints,
    assert_path_velocity,
    assert_tangent,
)


def test_assert_on_manifold() -> None:
    m = Sphere(2)
    x = m.random_base(5)
    assert assert_on_manifold(m, x) < 1e-6
    with pytest.raises(AssertionError, match="point off Sphere"):
        assert_on_manifold(m, 1.01 * x)
    with pytest.raises(AssertionError, match="last axis 4, expected 3"):
        assert_on_manifold(m, torch.ones(5, 4))
    with pytest.raises(AssertionError, match="non-finite"):
        assert_on_manifold(m, torch.full((5, 3), float("nan")))
    with pytest.raises(AssertionError, match="point off FlatTorus"):
        assert_on_manifold(FlatTorus(1), torch.tensor([[1.0]]))


def test_assert_tangent() -> None:
    m = Sphere(2)
    x = m.random_base(5)
    assert_tangent(m, x, m.proju(x, torch.randn(5, 3)))
    with pytest.raises(AssertionError, match="not tangent"):
        assert_tangent(m, x, x)
    with pytest.raises(AssertionError, match="expected 3"):
        assert_tangent(SO3(), SO3().random_base(5), torch.zeros(5, 4))


class _BrokenPath(ProbPath):
    """Geodesic x_t but a velocity that is off by a factor 2 and an end point that misses x1."""

    def __init__(self) -> None:
        self.manifold = SO3()
        self.inner = GeodesicPath(self.manifold)

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> PathSample:
        s = self.inner.sample(x0, x1, 0.9 * t)
        return PathSample(x0=x0, x1=x1, t=t, x_t=s.x_t, dx_t=2 * s.dx_t)


def test_path_assertions_detect_wrong_paths() -> None:
    m = SO3()
    x0, x1 = m.random_base(6, dtype=torch.float64), m.random_base(6, dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 6, dtype=torch.float64)
    assert assert_path_endpoints(GeodesicPath(m), x0, x1, atol=1e-10) < 1e-10
    assert_path_velocity(GeodesicPath(m), x0, x1, t, h=1e-5, atol=1e-7)
    with pytest.raises(AssertionError, match="t=1.0 vs end point"):
        assert_path_endpoints(_BrokenPath(), x0, x1)
    with pytest.raises(AssertionError, match="finite difference"):
        assert_path_velocity(_BrokenPath(), x0, x1, t, h=1e-5)
    e0, e1 = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    assert_path_velocity(CondOTPath(), e0, e1, t, h=1e-5, atol=1e-7)
    assert_path_endpoints(CondOTPath(), e0, e1, atol=1e-12)


def test_assert_equivariant() -> None:
    x = torch.randn(10, 3)

    def double(v: torch.Tensor) -> torch.Tensor:
        return 2 * v

    assert_equivariant(lambda a: a.sum(-1, keepdim=True), [x], [double], double)
    with pytest.raises(AssertionError, match="equivariance"):
        assert_equivariant(lambda a: a.square(), [x], [double], double)
    with pytest.raises(ValueError, match="1 inputs but 2"):
        assert_equivariant(lambda a: a, [x], [double, double], double)
    with pytest.raises(AssertionError, match="shapes differ"):
        assert_equivariant(lambda a: a if a.shape[0] == 10 else a[:0], [x], [lambda v: v[:5]], lambda v: v)
    q = SO3().random_base(4)
    assert_equivariant(lambda a: a, [q], [lambda v: -v], lambda v: v, manifold=SO3())  # q ~ -q on SO(3)
    assert_equivariant(lambda a: a, [x], [lambda v: v], lambda v: v, manifold=Euclidean(3))
