"""Non-finite and degenerate input to the manifolds: NaN out (never a finite value), projx of zero gives origin.

A product manifold acts factor-wise, so there the factor holding the bad coordinate becomes NaN.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowsci.manifolds import SO3, Euclidean, FlatTorus, Product, Sphere
from flowsci.testing.manifolds import assert_on_manifold

MANIFOLDS = [SO3(), Sphere(2), FlatTorus(3), Euclidean(3), Product([FlatTorus(3), SO3(), Euclidean(2)])]
BAD = [float("nan"), float("inf"), -float("inf")]


def _poisoned(x: torch.Tensor, value: float, coord: int = 0) -> torch.Tensor:
    x = x.clone()
    x[0, coord] = value
    return x


def _assert_row0_nan_rest_finite(m, out: torch.Tensor, coord: int) -> None:
    row = out[0]
    if isinstance(m, Product) and row.ndim:  # factor-wise: the factor holding the bad coordinate
        row = m.split_tangent(row)[0 if coord == 0 else -1] if row.shape[-1] == m.tangent_dim else row
        row = m.split_point(out[0])[0 if coord == 0 else -1] if out.shape[-1] == m.point_dim else row
    assert torch.isnan(row).all(), f"non-finite input gave {out[0]}"
    assert torch.isfinite(out[1:]).all()


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("coord", [0, -1])
def test_nonfinite_input_gives_nan_in_every_coordinate(m, value, coord) -> None:
    g = torch.Generator().manual_seed(0)
    x, y = m.random_base(4, generator=g), m.random_base(4, generator=g)
    v = m.log(x, y)
    bad_x, bad_y, bad_v = _poisoned(x, value, coord), _poisoned(y, value, coord), _poisoned(v, value, coord)
    for out in (
        m.log(bad_x, y),
        m.log(x, bad_y),
        m.exp(bad_x, v),
        m.exp(x, bad_v),
        m.projx(bad_x),
        m.dist(bad_x, y),
        m.dist(x, bad_y),
        m.geodesic(x, bad_y, 0.3),
        m.geodesic_with_velocity(bad_x, y, 0.3)[0],
        m.geodesic_with_velocity(x, bad_y, 0.7)[1],
        m.norm(x, bad_v),
    ):
        _assert_row0_nan_rest_finite(m, out, coord)


@pytest.mark.parametrize("m", [SO3(), Sphere(2), Sphere(1)], ids=repr)
def test_projx_of_zero_is_the_origin(m) -> None:
    for dtype in (torch.float32, torch.float64):
        zero = torch.zeros(3, m.point_dim, dtype=dtype)
        p = m.projx(zero)
        torch.testing.assert_close(p, m.origin(3, dtype=dtype))
        assert_on_manifold(m, p)


@pytest.mark.parametrize("m", [SO3(), Sphere(3)], ids=repr)
@pytest.mark.parametrize("scale", [1e-30, 1e-40, 1e30, 1e38])
def test_projx_of_tiny_and_huge_vectors_stays_on_the_manifold(m, scale) -> None:
    x = torch.tensor([[1.0, -2.0, 0.5, 2.0]])[..., : m.point_dim] * scale
    p = m.projx(x)
    assert_on_manifold(m, p, 1e-6)
    torch.testing.assert_close(p, m.projx(x / scale))


def test_torus_projx_of_huge_values_is_in_the_unit_cube() -> None:
    p = FlatTorus(3).projx(torch.tensor([[1e30, -1e30, -1e-30], [3e38, 0.5, -0.5]]))
    assert ((p >= 0) & (p < 1)).all()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.floats(allow_nan=True, allow_infinity=True, width=32, min_value=None, max_value=None), min_size=4, max_size=4
    )
)
def test_projx_is_on_the_manifold_or_all_nan(coords) -> None:
    """Any float32 vector: ``projx`` is a point of the manifold, or NaN everywhere if an entry is non-finite."""
    x = torch.tensor([coords], dtype=torch.float32)
    for m, xi in ((SO3(), x), (Sphere(2), x[..., :3]), (FlatTorus(4), x)):
        p = m.projx(xi)
        if torch.isfinite(xi).all():
            assert_on_manifold(m, p, 1e-5)
        else:
            assert torch.isnan(p).all()
