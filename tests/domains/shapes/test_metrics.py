import numpy as np
import pytest
import torch
import trimesh

from flowsci.domains.shapes.data import ShapeSet
from flowsci.domains.shapes.metrics import (
    chamfer_distance,
    chamfer_l1,
    cloud_set,
    coverage_mmd_1nna,
    emd,
    evaluate,
    fscore,
    is_valid,
    normalise_cloud,
    pairwise_chamfer,
    sample_points,
    shape_statistics,
    validity_rate,
)
from flowsci.errors import InputError


def test_chamfer_closed_forms():
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert chamfer_distance(x, x) == pytest.approx(0, abs=1e-12)
    c = np.array([[0.1, -0.2, 0.3]])
    assert chamfer_distance(np.zeros((1, 3)), c) == pytest.approx(2 * (c**2).sum())  # mean form, both ways


def test_pairwise_matches_single_and_is_symmetric():
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(3, 40, 3, generator=g, dtype=torch.float64)
    ys = torch.randn(4, 30, 3, generator=g, dtype=torch.float64)
    d = pairwise_chamfer(xs, ys, chunk=3)
    assert d[1, 2].item() == pytest.approx(chamfer_distance(xs[1], ys[2]))
    dd = pairwise_chamfer(xs, xs)
    torch.testing.assert_close(dd, dd.T)


def test_emd_permutation_and_translation():
    x = np.random.default_rng(1).normal(size=(64, 3))
    assert emd(x, x[::-1]) == pytest.approx(0, abs=1e-12)
    shift = np.array([0.3, 0.4, 0.0])
    assert emd(x, x + shift) == pytest.approx(0.5)  # small shift: identity matching is optimal


def test_set_metrics_known_answers():
    # disjoint sets: every NN is in its own set -> 1-NNA = 100 %
    far = np.full((3, 3), 100.0)
    near = np.ones((3, 3)) - np.eye(3)
    r = coverage_mmd_1nna(far, near, near)
    assert r["1nna"] == 1.0 and r["mmd"] == 100.0
    # copies of the reference: each NN is its copy in the other set -> 1-NNA = 0 (memorisation), full coverage
    copy = np.ones((3, 3)) - np.eye(3)
    r = coverage_mmd_1nna(copy, 2 * near, 2 * near)
    assert r["1nna"] == 0.0 and r["cov"] == 1.0 and r["mmd"] == 0.0
    # an unscorable (empty) sample counts as told apart and covers nothing
    d = copy.copy()
    d[0] = np.inf
    gg = 2 * near
    gg[0, :] = gg[:, 0] = np.inf
    r = coverage_mmd_1nna(d, gg, 2 * near)
    assert r["cov"] == pytest.approx(2 / 3) and r["1nna"] == pytest.approx(1 / 6)


def test_one_nna_near_half_for_same_distribution():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(400, 2))
    d = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    g, r = slice(0, 200), slice(200, 400)
    res = coverage_mmd_1nna(d[g, r], d[g, g], d[r, r])
    assert 0.4 < res["1nna"] < 0.6


def test_validity():
    sphere = trimesh.creation.icosphere(2)
    two = trimesh.util.concatenate([sphere, sphere.copy().apply_translation((3, 0, 0))])
    open_mesh = trimesh.Trimesh(sphere.vertices, sphere.faces[1:])
    assert is_valid(sphere)
    assert not is_valid(two) and not is_valid(open_mesh) and not is_valid(trimesh.Trimesh())
    assert validity_rate([sphere, two]) == 0.5


def test_sampling_and_normalisation():
    box = trimesh.creation.box(extents=(2, 1, 1))
    pts = sample_points(box, 256, seed=0)
    assert pts.shape == (256, 3) and len(np.unique(pts, axis=0)) == 256
    n = normalise_cloud(pts * 3 + 7)
    assert np.abs(n).max() == pytest.approx(1.0)
    assert sample_points(trimesh.Trimesh(), 8).shape == (0, 3)


def test_point_clouds_are_scored_like_meshes_and_never_padded():
    sphere = trimesh.creation.icosphere(3, radius=0.7)
    raw = sample_points(sphere, 64, seed=3)
    cloud = trimesh.PointCloud(raw * 2.0 + 1.0)  # another scale and place: normalisation must undo both
    cg, ok = cloud_set([cloud, sphere], 64)
    assert ok.all() and cg.shape == (2, 64, 3)
    np.testing.assert_allclose(np.sort(cg[0].numpy(), axis=0), np.sort(normalise_cloud(raw), axis=0), atol=1e-12)
    assert np.abs(cg.numpy()).max(axis=(1, 2)) == pytest.approx([1.0, 1.0])
    # a 64-point cloud is not padded to 128 points against dense references
    with pytest.raises(InputError, match="64 points, fewer than the 128"):
        evaluate(ShapeSet([cloud], None, ()), ShapeSet([sphere], None, ()), num_points=128)


def test_fidelity_scores():
    x = np.random.default_rng(0).uniform(size=(500, 3))
    assert chamfer_l1(x, x) == 0 and fscore(x, x) == 1.0
    assert fscore(x, x + 1.0) == 0.0


def test_evaluate_table_per_class():
    s = trimesh.creation.icosphere(2)
    b = trimesh.creation.box()
    gen = ShapeSet([s, b, s, trimesh.Trimesh()], [0, 1, 0, 1], ["sphere", "box"])
    ref = ShapeSet([s, b, s, b], [0, 1, 0, 1], ["sphere", "box"])
    table = evaluate(gen, ref, num_points=64, emd_subset=2, emd_points=32)
    assert list(table.index) == ["all", "sphere", "box"]
    assert table.loc["all", "validity"] == 0.75
    assert table.loc["sphere", "mmd_cd"] < 0.15  # 64-point sampling noise only
    assert {"mmd_emd", "cov_emd", "1nna_emd"} <= set(table.columns)
    with pytest.raises(ValueError):
        evaluate([], ref)


def test_shape_statistics_closed_forms():
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))  # half-extents 1, 0.5, 0.25
    cyl = trimesh.creation.cylinder(radius=0.5, height=2.0, sections=256)  # axis along z
    sphere = trimesh.creation.icosphere(4)
    two = trimesh.util.concatenate([box, box.copy().apply_translation((5.0, 0.0, 0.0))])
    stats = shape_statistics(ShapeSet([box, cyl, sphere, trimesh.Trimesh(), two], [0, 1, 2, 0, 0], ["b", "c", "s"]))
    assert list(stats["label"]) == ["b", "c", "s", "b", "b"]
    np.testing.assert_allclose(stats.loc[0, ["ext_x", "ext_y", "ext_z", "fill"]].to_numpy(float), [1, 0.5, 0.25, 1])
    np.testing.assert_allclose(stats.loc[1, ["ext_x", "ext_y", "ext_z"]].to_numpy(float), [0.5, 0.5, 1], atol=1e-4)
    assert stats.loc[1, "fill"] == pytest.approx(np.pi / 4, rel=1e-3)  # polygonal section: pi/4 from below
    assert stats.loc[2, "fill"] == pytest.approx(np.pi / 6, rel=3e-3)
    assert stats.loc[3].isna()[["ext_x", "fill"]].all() and stats.loc[3, "components"] == 0
    assert list(stats["components"]) == [1, 1, 1, 0, 2]
    open_box = trimesh.Trimesh(box.vertices, box.faces[:-1])  # a missing triangle: no volume
    assert np.isnan(shape_statistics([open_box]).loc[0, "fill"])
