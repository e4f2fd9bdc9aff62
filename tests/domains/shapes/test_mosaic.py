import concurrent.futures as cf

import numpy as np
import pytest
import torch
import trimesh

from flowsci.domains.shapes.mosaic import (
    MosaicCache,
    MosaicSDF,
    farthest_point_sampling,
    fit_many,
    patch_disagreement,
)
from flowsci.errors import InputError


def _sphere(r=0.7):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=r)
    return mesh, lambda x: np.linalg.norm(np.asarray(x), axis=-1) - r


def _box(b=(0.6, 0.4, 0.5)):
    mesh = trimesh.creation.box(extents=2 * np.asarray(b))
    b = np.asarray(b)

    def sdf(x):
        q = np.abs(np.asarray(x)) - b
        return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)

    return mesh, sdf


def test_partition_of_unity_reproduces_linear_field_exactly():
    # trilinear interpolation is exact for affine functions, and the weights sum to one
    mesh, _ = _sphere()
    a, b = np.array([0.3, -0.5, 0.8]), 0.1

    def plane(x):
        return np.asarray(x) @ a + b

    m = MosaicSDF.fit(mesh, n=64, k=3, sdf=plane)
    pts, _ = trimesh.sample.sample_surface(mesh, 500, seed=1)
    np.testing.assert_allclose(m.sdf(pts).numpy(), plane(pts), atol=1e-5)


def test_patch_disagreement_zero_for_affine_field_and_grows_with_noise():
    mesh, sdf = _sphere()
    plane = MosaicSDF.fit(mesh, n=48, k=3, sdf=lambda x: np.asarray(x) @ np.array([0.3, -0.5, 0.8]) + 0.1)
    assert patch_disagreement(plane) < 1e-5  # every patch interpolates the same affine field exactly
    fit = MosaicSDF.fit(mesh, n=48, k=4, sdf=sdf)
    clean = patch_disagreement(fit)
    noise = torch.randn(fit.values.shape, generator=torch.Generator().manual_seed(0))
    noisy = MosaicSDF(fit.centers, fit.scales, fit.values + 0.05 * noise)
    assert clean < 0.01 < patch_disagreement(noisy)


@pytest.mark.parametrize("shape", [_sphere, _box])
def test_blend_reproduces_analytic_sdf_near_surface(shape):
    mesh, sdf = shape()
    m = MosaicSDF.fit(mesh, n=128, k=5, sdf=sdf)
    pts, _ = trimesh.sample.sample_surface(mesh, 2000, seed=0)
    near = pts + np.random.default_rng(0).normal(scale=0.01, size=pts.shape)
    err = np.abs(m.sdf(near).numpy() - sdf(near))
    h = 2 * float(m.scales[0]) / (m.k - 1)  # grid spacing: trilinear error is O(h^2 * curvature)
    assert err.mean() < 0.05 * h
    assert err.max() < 0.5 * h


def test_uncovered_points_read_outside_constant():
    mesh, sdf = _sphere(0.3)
    m = MosaicSDF.fit(mesh, n=32, k=3, sdf=sdf)
    far = np.array([[0.95, 0.95, 0.95], [-0.9, 0.9, 0.0]])
    np.testing.assert_allclose(m.sdf(far).numpy(), m.outside)


def test_grid_scatter_matches_point_queries():
    mesh, sdf = _sphere()
    m = MosaicSDF.fit(mesh, n=48, k=4, sdf=sdf)
    r = 20
    grid = m.to_grid(r, bound=1.0, fill=False)
    g = np.linspace(-1, 1, r)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    np.testing.assert_allclose(grid.reshape(-1), m.sdf(pts).numpy(), atol=1e-5)


def test_to_mesh_is_closed_and_close_to_sphere():
    mesh, sdf = _sphere()
    m = MosaicSDF.fit(mesh, n=128, k=5, sdf=sdf)
    out = m.to_mesh(48)
    assert out.is_watertight
    assert np.abs(np.linalg.norm(out.vertices, axis=1) - 0.7).max() < 0.03


def test_matrix_and_npz_round_trip(tmp_path):
    mesh, sdf = _sphere()
    m = MosaicSDF.fit(mesh, n=16, k=3, sdf=sdf)
    x = m.to_matrix()
    assert x.shape == (16, 4 + 27)
    m2 = MosaicSDF.from_matrix(x)
    assert torch.equal(m2.to_matrix(), x)
    m.save(tmp_path / "m.npz")
    assert torch.equal(MosaicSDF.load(tmp_path / "m.npz").to_matrix(), x)


def test_from_matrix_makes_scales_positive():
    x = torch.zeros(4, 4 + 8)
    x[:, 3] = torch.tensor([-0.2, 0.0, 0.1, 0.3])
    m = MosaicSDF.from_matrix(x)
    assert (m.scales > 0).all() and float(m.scales[0]) == pytest.approx(0.2)


@pytest.mark.parametrize(
    "content", [b"", b"garbage bytes", b"PK\x03\x04truncated"], ids=["empty", "garbage", "truncated-zip"]
)
def test_load_rejects_bad_files(tmp_path, content):
    p = tmp_path / "bad.npz"
    p.write_bytes(content)
    with pytest.raises(InputError, match="bad.npz"):
        MosaicSDF.load(p)


def test_load_rejects_nan_and_missing(tmp_path):
    np.savez(tmp_path / "nan.npz", centers=np.full((2, 3), np.nan), scales=np.ones(2), values=np.zeros((2, 2, 2, 2)))
    with pytest.raises(InputError, match="NaN"):
        MosaicSDF.load(tmp_path / "nan.npz")
    np.savez(tmp_path / "miss.npz", centers=np.zeros((2, 3)))
    with pytest.raises(InputError, match="missing"):
        MosaicSDF.load(tmp_path / "miss.npz")
    with pytest.raises(InputError, match="no such file"):
        MosaicSDF.load(tmp_path / "absent.npz")


@pytest.mark.parametrize("shape", [(5, 11), (3,), (2, 4 + 27)])
def test_from_matrix_rejects_bad_shapes(shape):
    x = torch.zeros(shape)
    if shape == (2, 31):
        x[0, 0] = float("nan")
    with pytest.raises(InputError, match="matrix"):
        MosaicSDF.from_matrix(x)


def test_fit_rejects_empty_mesh_and_bad_sizes():
    with pytest.raises(InputError):
        MosaicSDF.fit(trimesh.Trimesh(), n=8, k=3, sdf=lambda x: x[:, 0])
    with pytest.raises(InputError):
        MosaicSDF.fit(_sphere()[0], n=8, k=1, sdf=lambda x: x[:, 0])


def test_fps_spreads_points():
    pts = np.concatenate([np.zeros((100, 3)), np.eye(3)])
    idx = farthest_point_sampling(pts, 4, seed=0)
    assert len(set(idx.tolist())) == 4
    assert {100, 101, 102} <= set(idx.tolist())


def test_finetune_lowers_sdf_error():
    mesh, sdf = _box()
    m0 = MosaicSDF.fit(mesh, n=32, k=3, sdf=sdf, alpha=1.2)
    m1 = MosaicSDF.fit(mesh, n=32, k=3, sdf=sdf, alpha=1.2, steps=30, lr=3e-3)
    pts, _ = trimesh.sample.sample_surface(mesh, 2000, seed=5)
    e0 = np.abs(m0.sdf(pts).numpy() - sdf(pts)).mean()
    e1 = np.abs(m1.sdf(pts).numpy() - sdf(pts)).mean()
    assert e1 < e0


def _square(x):
    if x == 3:
        raise ValueError("boom")
    return np.array([x * x])


def test_fit_many_serial_and_executor_agree_and_report_failures():
    serial = fit_many(_square, range(5), workers=1, progress=False)
    with cf.ThreadPoolExecutor(2) as ex:
        pooled = fit_many(_square, range(5), client=ex, progress=False)
    for a, b in zip(serial, pooled, strict=True):
        if isinstance(a, Exception):
            assert isinstance(b, ValueError)
        else:
            np.testing.assert_array_equal(a, b)
    assert isinstance(serial[3], ValueError)


def test_cache_round_trip_and_corrupt_entry(tmp_path):
    cache = MosaicCache(tmp_path)
    key = MosaicCache.key({"a": 1})
    assert cache.load(key) is None
    cache.save(key, matrices=np.ones((2, 3, 12), dtype=np.float32))
    assert cache.load(key)["matrices"].shape == (2, 3, 12)
    cache.path(key).write_bytes(b"junk")
    assert cache.load(key) is None
