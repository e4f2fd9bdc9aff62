"""GeodesicPath: end points, finite-difference velocity, the RFM target log_{x_t}(x1)/(1-t), schedules."""

from __future__ import annotations

import pytest
import torch

from flowsci.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from flowsci.paths import CondOTPath, PolynomialScheduler
from flowsci.paths.geodesic import GeodesicPath
from flowsci.testing.manifolds import assert_path_endpoints, assert_path_velocity

MANIFOLDS = {
    "euclidean": lambda: Euclidean(3),
    "torus": lambda: FlatTorus(3),
    "sphere": lambda: Sphere(2),
    "so3": lambda: SO3(),
    "frames": lambda: Product([Euclidean(3), SO3()]),
    "crystal": lambda: Product([FlatTorus(3), Euclidean(6)]),
}


@pytest.fixture(params=list(MANIFOLDS), ids=list(MANIFOLDS))
def manifold(request: pytest.FixtureRequest) -> Manifold:
    return MANIFOLDS[request.param]()


def _pairs(m: Manifold, seed: int, shape: tuple[int, ...] = (16, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return m.random_base(shape, generator=g, dtype=torch.float64), m.random_base(
        shape, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_end_points(manifold: Manifold, dtype: torch.dtype) -> None:
    x0, x1 = (x.to(dtype) for x in _pairs(manifold, 0))
    assert_path_endpoints(GeodesicPath(manifold), x0, x1, atol=2e-5 if dtype == torch.float32 else 1e-10)
    assert_path_endpoints(
        GeodesicPath(manifold, PolynomialScheduler(2.0)),
        x0,
        x1,
        atol=2e-5 if dtype == torch.float32 else 1e-10,
    )


@pytest.mark.parametrize("scheduler", [None, PolynomialScheduler(3.0)], ids=["condot", "poly3"])
def test_velocity_matches_finite_differences(manifold: Manifold, scheduler: PolynomialScheduler | None) -> None:
    x0, x1 = _pairs(manifold, 1)
    t = torch.linspace(0.05, 0.95, 16, dtype=torch.float64)
    assert_path_velocity(GeodesicPath(manifold, scheduler), x0, x1, t, h=1e-5, atol=1e-7, rtol=1e-6)


def test_target_is_riemannian_fm_conditional_field(manifold: Manifold) -> None:
    """dx_t = log_{x_t}(x1) / (1 - t) for the constant-speed path (Chen & Lipman 2024)."""
    x0, x1 = _pairs(manifold, 2)
    t = torch.rand(16, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.95
    s = GeodesicPath(manifold).sample(x0, x1, t)
    assert s.x_t.shape == x0.shape and s.dx_t.shape == (*x0.shape[:-1], manifold.tangent_dim)
    torch.testing.assert_close(s.dx_t, manifold.log(s.x_t, x1) / (1 - t[:, None, None]), atol=1e-9, rtol=0)
    assert s.x0 is x0 and s.x1 is x1 and s.t is t


def test_target_is_finite_at_t_equal_one(manifold: Manifold) -> None:
    """At t = 1 the velocity is the reversed log from the end point: -log_{x1}(x0)."""
    x0, x1 = _pairs(manifold, 4)
    s = GeodesicPath(manifold).sample(x0, x1, torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(s.dx_t, -manifold.log(x1, x0), atol=1e-9, rtol=0)


def test_euclidean_geodesic_path_equals_condot_path() -> None:
    x0, x1 = torch.randn(8, 4, 3, dtype=torch.float64), torch.randn(8, 4, 3, dtype=torch.float64)
    t = torch.rand(8, dtype=torch.float64)
    a, b = GeodesicPath(Euclidean(3)).sample(x0, x1, t), CondOTPath().sample(x0, x1, t)
    torch.testing.assert_close(a.x_t, b.x_t)
    torch.testing.assert_close(a.dx_t, b.dx_t)


def test_schedule_reparametrises_time() -> None:
    m = SO3()
    x0, x1 = _pairs(m, 5, (10,))
    t = torch.rand(10, dtype=torch.float64)
    fast = GeodesicPath(m, PolynomialScheduler(2.0)).sample(x0, x1, t)
    plain = GeodesicPath(m).sample(x0, x1, t**2)
    assert m.dist(fast.x_t, plain.x_t).max() < 1e-12
    torch.testing.assert_close(fast.dx_t, 2 * t[:, None] * plain.dx_t)


def test_bad_shapes_raise() -> None:
    path = GeodesicPath(SO3())
    q = SO3().random_base(4)
    with pytest.raises(ValueError, match="same shape"):
        path.sample(q, q[:2], torch.rand(4))
    with pytest.raises(ValueError, match=r"t must have shape \[B\]"):
        path.sample(q, q, torch.rand(4, 1))
    assert "SO3()" in repr(path)
