"""Product manifolds for sets (N residues x (R^3 x SO(3))) with padding masks; centre-of-mass helpers."""

from __future__ import annotations

import pytest
import torch

from flowsci.manifolds import (
    SO3,
    Euclidean,
    FlatTorus,
    Product,
    Sphere,
    center_of_mass,
    fill_padding,
    mask_tangent,
    masked_mean,
    quaternion_apply,
    quaternion_multiply,
    random_quaternion,
    remove_com,
    riemannian_mse,
    scatter_center_of_mass,
    scatter_remove_com,
)
from flowsci.paths.geodesic import GeodesicPath
from flowsci.testing.manifolds import (
    assert_equivariant,
    assert_on_manifold,
    assert_path_endpoints,
    assert_tangent,
)

FRAMES = Product([Euclidean(3), SO3()])


def _lengths_mask(lengths: list[int], n: int) -> torch.Tensor:
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def test_product_dimensions_and_split() -> None:
    assert (FRAMES.point_dim, FRAMES.tangent_dim) == (7, 6)
    x = FRAMES.random_base((2, 5))
    trans, rot = FRAMES.split_point(x)
    assert trans.shape == (2, 5, 3) and rot.shape == (2, 5, 4)
    assert_on_manifold(SO3(), rot)
    v = torch.randn(2, 5, 6)
    assert [p.shape[-1] for p in FRAMES.split_tangent(v)] == [3, 3]
    assert repr(FRAMES) == "Product([Euclidean(dim=3), SO3()])"
    with pytest.raises(ValueError, match="fixed dimensions"):
        Product([Euclidean(), SO3()])
    with pytest.raises(ValueError, match="at least one"):
        Product([])


def test_product_operations_are_factorwise() -> None:
    m = Product([Euclidean(3), SO3(), FlatTorus(2), Sphere(2)])
    g = torch.Generator().manual_seed(0)
    x, y = (
        m.random_base(20, generator=g, dtype=torch.float64),
        m.random_base(20, generator=g, dtype=torch.float64),
    )
    parts = list(zip(m.manifolds, m.split_point(x), m.split_point(y), strict=True))
    torch.testing.assert_close(m.log(x, y), torch.cat([f.log(a, b) for f, a, b in parts], -1))
    torch.testing.assert_close(m.dist(x, y) ** 2, sum(f.dist(a, b) ** 2 for f, a, b in parts))
    torch.testing.assert_close(m.geodesic(x, y, 0.3), torch.cat([f.geodesic(a, b, 0.3) for f, a, b in parts], -1))
    v = m.log(x, y)
    torch.testing.assert_close(m.inner(x, v, v), m.dist(x, y) ** 2)


def test_residue_frames_path_with_padding() -> None:
    """Padded residues filled with the origin stay there, carry zero velocity and never enter the loss."""
    g = torch.Generator().manual_seed(1)
    mask = _lengths_mask([5, 3, 1], 6)
    x1 = fill_padding(FRAMES, FRAMES.random_base((3, 6), generator=g, dtype=torch.float64), mask)
    x0 = fill_padding(FRAMES, FRAMES.random_base((3, 6), generator=g, dtype=torch.float64), mask)
    path = GeodesicPath(FRAMES)
    assert_path_endpoints(path, x0, x1, atol=1e-10)
    s = path.sample(x0, x1, torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64))
    origin = FRAMES.origin((), dtype=torch.float64)
    assert torch.equal(s.x_t[~mask], origin.expand(int((~mask).sum()), 7))
    assert torch.equal(s.dx_t[~mask], torch.zeros(int((~mask).sum()), 6, dtype=torch.float64))
    assert_tangent(FRAMES, s.x_t, s.dx_t)
    # The loss ignores anything predicted on padding and averages over real residues only.
    pred = s.dx_t + 0.1
    loss = riemannian_mse(FRAMES, s.x_t, pred, s.dx_t, mask)
    garbage = pred.clone()
    garbage[~mask] = 1e6
    torch.testing.assert_close(riemannian_mse(FRAMES, s.x_t, garbage, s.dx_t, mask), loss)
    torch.testing.assert_close(loss, torch.full((3,), 0.01, dtype=torch.float64))


def test_riemannian_mse_projects_and_reduces() -> None:
    m = Sphere(2)
    x = m.random_base(4, dtype=torch.float64)
    target = m.proju(x, torch.randn(4, 3, dtype=torch.float64))
    normal = 5 * x  # a purely normal error is projected away
    torch.testing.assert_close(riemannian_mse(m, x, target + normal, target), torch.zeros(4, dtype=torch.float64))
    e = Euclidean(3)
    a, b = torch.randn(4, 7, 3), torch.randn(4, 7, 3)
    torch.testing.assert_close(riemannian_mse(e, a, a, b), ((a - b) ** 2).mean(dim=(1, 2)))
    flat = riemannian_mse(e, a[:, 0], a[:, 0], b[:, 0], torch.tensor([True, False, True, True]))
    assert flat[1] == 0 and flat.shape == (4,)


def test_remove_com_with_mask() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 6, 3, generator=g, dtype=torch.float64) + 10
    mask = _lengths_mask([6, 4, 2], 6)
    centred = remove_com(x, mask)
    torch.testing.assert_close(masked_mean(centred, mask, dim=1), torch.zeros(3, 3, dtype=torch.float64))
    assert torch.equal(centred[~mask], torch.zeros(int((~mask).sum()), 3, dtype=torch.float64))
    # Padding values do not leak into the centre.
    x2 = x.clone()
    x2[~mask] = -1e3
    torch.testing.assert_close(remove_com(x2, mask), centred)
    torch.testing.assert_close(center_of_mass(x, mask)[1, 0], x[1, :4].mean(0))
    torch.testing.assert_close(remove_com(x), x - x.mean(1, keepdim=True))
    with pytest.raises(ValueError, match="mask shape"):
        remove_com(x, mask[:, :5])


def test_masked_mean_and_mask_tangent() -> None:
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, 5.0, 7.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 5.0]))
    torch.testing.assert_close(masked_mean(x, None, dim=1), x.mean(1))
    torch.testing.assert_close(masked_mean(x, torch.zeros_like(mask), dim=1), torch.zeros(2))
    v = torch.ones(2, 3, 6)
    assert mask_tangent(v, mask).sum() == 5 * 6
    assert mask_tangent(v, None) is v
    assert fill_padding(FRAMES, FRAMES.random_base((2, 3)), None).shape == (2, 3, 7)


def test_scatter_com_matches_dense() -> None:
    g = torch.Generator().manual_seed(3)
    lengths = [4, 1, 3]
    mask = _lengths_mask(lengths, 4)
    dense = torch.randn(3, 4, 3, generator=g, dtype=torch.float64)
    flat = dense[mask]
    batch = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    torch.testing.assert_close(scatter_center_of_mass(flat, batch), center_of_mass(dense, mask)[:, 0])
    torch.testing.assert_close(scatter_remove_com(flat, batch), remove_com(dense, mask)[mask])
    assert scatter_center_of_mass(flat, batch, num_graphs=5)[3:].abs().max() == 0


def test_frames_are_se3_equivariant() -> None:
    """A global rigid motion (g, b): x -> R_g x + b, q -> g q moves geodesics; log maps translations by R_g and
    leaves body angular velocities unchanged."""
    g_ = torch.Generator().manual_seed(4)
    x0, x1 = (
        FRAMES.random_base((4, 5), generator=g_, dtype=torch.float64),
        FRAMES.random_base((4, 5), generator=g_, dtype=torch.float64),
    )
    g = random_quaternion(1, generator=g_, dtype=torch.float64)
    b = torch.randn(3, generator=g_, dtype=torch.float64)

    def move(x: torch.Tensor) -> torch.Tensor:
        trans, rot = FRAMES.split_point(x)
        return torch.cat([quaternion_apply(g, trans) + b, quaternion_multiply(g, rot)], -1)

    def rotate_tangent(v: torch.Tensor) -> torch.Tensor:
        dv, omega = FRAMES.split_tangent(v)
        return torch.cat([quaternion_apply(g, dv), omega], -1)

    path = GeodesicPath(FRAMES)
    t = torch.rand(4, generator=g_, dtype=torch.float64)
    assert_equivariant(lambda a, c: path.sample(a, c, t).x_t, [x0, x1], [move, move], move, manifold=FRAMES, atol=1e-10)
    assert_equivariant(lambda a, c: path.sample(a, c, t).dx_t, [x0, x1], [move, move], rotate_tangent, atol=1e-10)
    assert_equivariant(FRAMES.log, [x0, x1], [move, move], rotate_tangent, atol=1e-10)
