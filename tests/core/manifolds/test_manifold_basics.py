"""Generic laws every manifold must satisfy, on random inputs in float32 and float64."""

from __future__ import annotations

import pytest
import torch

from flowsci.manifolds import SO3, Euclidean, FlatTorus, Manifold, Product, Sphere
from flowsci.testing.manifolds import assert_on_manifold, assert_tangent

MANIFOLDS = {
    "euclidean": lambda: Euclidean(3),
    "torus": lambda: FlatTorus(3),
    "sphere2": lambda: Sphere(2),
    "sphere5": lambda: Sphere(5),
    "so3": lambda: SO3(),
    "product": lambda: Product([Euclidean(3), SO3(), FlatTorus(2), Sphere(2)]),
}
DTYPES = {torch.float32: 2e-5, torch.float64: 1e-11}


def _small_tangent(m: Manifold, x: torch.Tensor, g: torch.Generator, scale: float = 0.4) -> torch.Tensor:
    """Random tangent vectors at x inside the injectivity radius of every manifold used here."""
    v = torch.randn((*x.shape[:-1], m.tangent_dim), generator=g, dtype=x.dtype)
    return m.proju(x, scale * v / (1 + v.norm(dim=-1, keepdim=True)))


@pytest.fixture(params=list(MANIFOLDS), ids=list(MANIFOLDS))
def manifold(request: pytest.FixtureRequest) -> Manifold:
    return MANIFOLDS[request.param]()


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_random_base_and_origin_are_points(manifold: Manifold, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    x = manifold.random_base((7, 3), generator=g, dtype=dtype)
    assert x.shape == (7, 3, manifold.point_dim) and x.dtype == dtype
    assert_on_manifold(manifold, x, DTYPES[dtype])
    o = manifold.origin((2,), dtype=dtype)
    assert o.shape == (2, manifold.point_dim)
    assert_on_manifold(manifold, o, 0.0)
    assert torch.allclose(manifold.dist(o, o), torch.zeros(2, dtype=dtype))


def test_random_base_is_seeded(manifold: Manifold) -> None:
    a = manifold.random_base(5, generator=torch.Generator().manual_seed(3))
    b = manifold.random_base(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_log_exp_round_trip(manifold: Manifold, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    x = manifold.random_base(200, generator=g, dtype=dtype)
    v = _small_tangent(manifold, x, g)
    y = manifold.exp(x, v)
    assert_on_manifold(manifold, y, DTYPES[dtype])
    w = manifold.log(x, y)
    assert_tangent(manifold, x, w, DTYPES[dtype])
    torch.testing.assert_close(w, v, atol=10 * DTYPES[dtype], rtol=0)
    torch.testing.assert_close(manifold.dist(x, y), manifold.norm(x, v), atol=10 * DTYPES[dtype], rtol=0)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_exp_log_round_trip_random_pairs(manifold: Manifold, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(2)
    x = manifold.random_base(300, generator=g, dtype=dtype)
    y = manifold.random_base(300, generator=g, dtype=dtype)
    v = manifold.log(x, y)
    assert_tangent(manifold, x, v, DTYPES[dtype])
    err = manifold.dist(manifold.exp(x, v), y)
    assert err.max() < 20 * DTYPES[dtype]
    # Distance is symmetric and equals the length of the log.
    torch.testing.assert_close(manifold.dist(x, y), manifold.dist(y, x), atol=20 * DTYPES[dtype], rtol=0)
    torch.testing.assert_close(manifold.dist(x, y), manifold.norm(x, v), atol=20 * DTYPES[dtype], rtol=0)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_geodesic_end_points_and_constant_speed(manifold: Manifold, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(4)
    x = manifold.random_base(100, generator=g, dtype=dtype)
    y = manifold.random_base(100, generator=g, dtype=dtype)
    tol = 20 * DTYPES[dtype]
    assert manifold.dist(manifold.geodesic(x, y, 0.0), x).max() < tol
    assert manifold.dist(manifold.geodesic(x, y, 1.0), y).max() < tol
    d = manifold.dist(x, y)
    for s in (0.25, 0.5, 0.8):
        z = manifold.geodesic(x, y, torch.full((100, 1), s, dtype=dtype))
        assert_on_manifold(manifold, z, DTYPES[dtype])
        # A minimising geodesic splits the distance proportionally.
        torch.testing.assert_close(manifold.dist(x, z), s * d, atol=tol, rtol=0)
        torch.testing.assert_close(manifold.dist(z, y), (1 - s) * d, atol=tol, rtol=0)


def test_identical_points(manifold: Manifold) -> None:
    x = manifold.random_base(50, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert manifold.log(x, x).abs().max() < 1e-12
    assert manifold.dist(x, x).abs().max() < 1e-7
    x_t, v_t = manifold.geodesic_with_velocity(x, x, torch.rand(50, 1, dtype=torch.float64))
    assert manifold.dist(x_t, x).max() < 1e-7
    assert v_t.abs().max() < 1e-12


def test_identical_points_have_finite_gradients(manifold: Manifold) -> None:
    x = manifold.random_base(10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = x.clone().requires_grad_(True)
    (manifold.log(x, y).square().sum() + manifold.dist(x, y).sum()).backward()
    assert torch.isfinite(y.grad).all()
    v = torch.zeros(10, manifold.tangent_dim, dtype=torch.float64, requires_grad=True)
    manifold.exp(x, v).sum().backward()
    assert torch.isfinite(v.grad).all()


def test_geodesic_velocity_matches_log(manifold: Manifold) -> None:
    """Closed-form velocity equals the Riemannian FM target log_{x_t}(x1) / (1 - t)."""
    g = torch.Generator().manual_seed(7)
    x = manifold.random_base(100, generator=g, dtype=torch.float64)
    y = manifold.random_base(100, generator=g, dtype=torch.float64)
    t = torch.rand(100, 1, generator=g, dtype=torch.float64) * 0.9
    x_t, v_t = manifold.geodesic_with_velocity(x, y, t)
    torch.testing.assert_close(x_t, manifold.geodesic(x, y, t), atol=1e-12, rtol=0)
    torch.testing.assert_close(v_t, manifold.log(x_t, y) / (1 - t), atol=1e-9, rtol=0)


def test_generic_velocity_matches_closed_form(manifold: Manifold) -> None:
    """The ABC's generic geodesic velocity agrees with each subclass's closed form, also at t = 0 and 1."""
    g = torch.Generator().manual_seed(8)
    x = manifold.random_base(60, generator=g, dtype=torch.float64)
    y = manifold.random_base(60, generator=g, dtype=torch.float64)
    t = torch.cat([torch.zeros(1, 1), torch.ones(1, 1), torch.rand(58, 1, generator=g)]).double()
    _, closed = manifold.geodesic_with_velocity(x, y, t)
    _, generic = Manifold.geodesic_with_velocity(manifold, x, y, t)
    torch.testing.assert_close(generic, closed, atol=1e-9, rtol=0)


def test_inner_is_bilinear_and_symmetric(manifold: Manifold) -> None:
    g = torch.Generator().manual_seed(9)
    x = manifold.random_base(20, generator=g, dtype=torch.float64)
    u, v, w = (_small_tangent(manifold, x, g) for _ in range(3))
    torch.testing.assert_close(manifold.inner(x, u, v), manifold.inner(x, v, u))
    torch.testing.assert_close(manifold.inner(x, 2 * u + w, v), 2 * manifold.inner(x, u, v) + manifold.inner(x, w, v))
    assert (manifold.norm(x, u) >= 0).all()


def test_proju_and_projx_are_idempotent(manifold: Manifold) -> None:
    g = torch.Generator().manual_seed(10)
    x = manifold.projx(torch.randn(30, manifold.point_dim, generator=g, dtype=torch.float64) * 3)
    torch.testing.assert_close(manifold.projx(x), x)
    v = manifold.proju(x, torch.randn(30, manifold.tangent_dim, generator=g, dtype=torch.float64))
    torch.testing.assert_close(manifold.proju(x, v), v)


def test_repr_names_class(manifold: Manifold) -> None:
    assert type(manifold).__name__ in repr(manifold)


def test_operations_follow_input_device(manifold: Manifold) -> None:
    """On the shape-only ``meta`` device any tensor created on a fixed device would raise or leak."""
    x = manifold.random_base((4, 5), device="meta")
    y = manifold.random_base((4, 5), device="meta")
    v = manifold.log(x, y)
    outs = [
        v,
        manifold.exp(x, v),
        manifold.dist(x, y),
        manifold.inner(x, v, v),
        manifold.geodesic(x, y, 0.3),
        *manifold.geodesic_with_velocity(x, y, torch.rand(4, 1, 1, device="meta")),
        manifold.projx(x),
        manifold.proju(x, v),
        manifold.origin(3, device="meta"),
    ]
    assert {o.device.type for o in outs} == {"meta"}


def test_transport_is_an_isometry_that_carries_geodesic_velocities(manifold: Manifold) -> None:
    """Along a geodesic, transporting the initial velocity gives the velocity at x_t; inner products are kept."""
    g = torch.Generator().manual_seed(11)
    x = manifold.random_base(50, generator=g, dtype=torch.float64)
    y = manifold.random_base(50, generator=g, dtype=torch.float64)
    t = torch.rand(50, 1, generator=g, dtype=torch.float64)
    _, v0 = manifold.geodesic_with_velocity(x, y, torch.zeros_like(t))
    x_t, v_t = manifold.geodesic_with_velocity(x, y, t)
    torch.testing.assert_close(manifold.transport(x, x_t, v0), v_t, atol=1e-10, rtol=0)
    u, w = _small_tangent(manifold, x, g), _small_tangent(manifold, x, g)
    pu, pw = manifold.transport(x, y, u), manifold.transport(x, y, w)
    assert_tangent(manifold, y, pu, 1e-12)
    torch.testing.assert_close(manifold.inner(y, pu, pw), manifold.inner(x, u, w), atol=1e-12, rtol=0)
