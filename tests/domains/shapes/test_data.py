import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from flowsci.domains.shapes import data as sdata
from flowsci.domains.shapes.data import (
    CLASSES,
    ProceduralShape,
    ShapesDataModule,
    normalise,
    procedural_set,
    read_mesh,
    real_mesh_dir,
    sdf_oracle,
)
from flowsci.errors import InputError


@pytest.mark.parametrize("fmt", ["obj", "ply", "stl", "off", "glb"])
def test_read_mesh_round_trip_and_normalisation(tmp_path, fmt):
    mesh = trimesh.creation.box(extents=(2.0, 1.0, 4.0))
    mesh.apply_translation((5, -3, 1))
    p = tmp_path / f"box.{fmt}"
    mesh.export(p)
    out = read_mesh(p)
    assert len(out.faces) == 12
    lo, hi = out.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    assert np.max(hi - lo) / 2 == pytest.approx(0.9)
    raw = read_mesh(p, normalize=False)
    np.testing.assert_allclose(raw.bounds, mesh.bounds, atol=1e-5)


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("empty.obj", "", "empty"),
        ("garbage.obj", b"\x00\x01\x02 not a mesh \xff", "no triangles|not a readable"),
        ("novert.obj", "# nothing\n", "no triangles"),
        ("nan.obj", "v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN or Inf"),
        ("inf.obj", "v inf 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN or Inf"),
        ("point.obj", "v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n", "zero extent"),
        ("truncated.glb", b"glTF\x02\x00\x00\x00", "not a readable|no triangles"),
        ("mesh.xyz", "1 2 3\n", "unknown mesh format"),
    ],
)
def test_read_mesh_rejects_bad_files(tmp_path, name, content, problem):
    p = _write(tmp_path, name, content)
    with pytest.raises(InputError, match=problem) as err:
        read_mesh(p)
    assert name in str(err.value)


def test_read_mesh_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_mesh(tmp_path / "absent.obj")


def test_read_mesh_face_index_out_of_range(tmp_path, monkeypatch):
    bad = trimesh.Trimesh(vertices=np.eye(3), faces=np.array([[0, 1, 5]]), process=False)
    monkeypatch.setattr(trimesh, "load", lambda *a, **k: bad)
    p = _write(tmp_path, "oob.obj", "v 0 0 0\n")
    with pytest.raises(InputError, match="out of range"):
        read_mesh(p)


def test_obj_168_is_rejected_by_name():
    p = real_mesh_dir() / "obj_168.obj"
    if not p.is_file():
        pytest.skip("staged pybullet meshes not present")
    with pytest.raises(InputError, match=r"obj_168\.obj.*NaN"):
        read_mesh(p)


def _has_pysdf():
    try:
        import pysdf  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = [
    "pcu",
    pytest.param("pysdf", marks=pytest.mark.skipif(not _has_pysdf(), reason="pysdf not installed (needs Eigen)")),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sdf_oracle_sign_and_distance_on_sphere(backend):
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    sdf = sdf_oracle(mesh, backend=backend)
    pts = np.array([[0, 0, 0], [0.9, 0, 0], [0, 0.2, 0]])
    np.testing.assert_allclose(sdf(pts), [-0.5, 0.4, -0.3], atol=5e-3)
    q = np.random.default_rng(0).uniform(-1, 1, size=(2000, 3))
    exact = np.linalg.norm(q, axis=1) - 0.5  # analytic sphere; the mesh is inscribed (chord error < 3e-3)
    d = sdf(q)
    far = np.abs(exact) > 5e-3
    assert (np.sign(d[far]) == np.sign(exact[far])).all()
    np.testing.assert_allclose(d, exact, atol=5e-3)


@pytest.mark.skipif(not _has_pysdf(), reason="pysdf not installed (needs Eigen)")
def test_sdf_oracle_backends_agree_on_a_closed_mesh_and_auto_picks_pysdf(monkeypatch):
    mesh = ProceduralShape.random(CLASSES.index("torus"), 3).mesh(48)[0]
    q = np.random.default_rng(1).uniform(-1, 1, size=(3000, 3))
    a, b = sdf_oracle(mesh, backend="pysdf")(q), sdf_oracle(mesh, backend="pcu")(q)
    clear = np.abs(b) > 1e-3
    assert (np.sign(a[clear]) == np.sign(b[clear])).all()  # same sign convention: negative inside
    np.testing.assert_allclose(a, b, atol=5e-3)
    assert sdf_oracle(mesh).backend == "pysdf"
    coarse = trimesh.creation.box(extents=(1, 1, 1))  # diagonals sqrt(2) = 71 x 0.02: 7 rounds, 4^7 x the faces
    assert sdata.refinement_factor(coarse.vertices, coarse.faces) == 4.0**7
    assert sdf_oracle(coarse).backend == "pcu"
    monkeypatch.setitem(sys.modules, "pysdf", None)  # as if pysdf were not installed
    assert sdf_oracle(mesh).backend == "pcu"


def test_refinement_factor_and_pysdf_error_bound():
    box = trimesh.creation.box(extents=(1, 1, 1))  # longest edge of every face: the diagonal sqrt(2)
    assert sdata.refinement_factor(box.vertices, box.faces, max_edge=0.5) == 16.0  # ceil(log2(2.83)) = 2 rounds
    if not _has_pysdf():
        pytest.skip("pysdf not installed (needs Eigen)")
    q = np.random.default_rng(0).uniform(-0.75, 0.75, size=(4000, 3))
    exact = sdata._box(q, (0.5, 0.5, 0.5))
    for edge in (0.2, 0.05):
        d = sdata._Oracle(box.vertices, box.faces, "pysdf", max_edge=edge)(q)
        assert np.all(np.sign(d) == np.sign(exact))
        err = np.abs(d) - np.abs(exact)  # distance to some triangle: not below the true one, at most an edge above
        assert err.min() > -1e-5 and err.max() <= edge * 1.0 + 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_sdf_oracle_sign_on_overlapping_parts(backend):
    # two overlapping closed boxes, not merged: the inside of the overlap must read negative (winding number 2;
    # ray parity over the whole mesh, pysdf's own sign, reads it as outside)
    a = trimesh.creation.box(extents=(1, 1, 1))
    b = trimesh.creation.box(extents=(1, 1, 1))
    b.apply_translation((0.5, 0, 0))
    union = trimesh.util.concatenate([a, b])
    sdf = sdf_oracle(union, backend=backend)
    pts = np.array([[0.25, 0, 0], [-0.3, 0, 0], [0.8, 0, 0], [2, 0, 0], [0.25, 0.7, 0]])
    d = sdf(pts)
    assert (d[:3] < 0).all() and (d[3:] > 0).all()
    np.testing.assert_allclose(np.abs(d[1:]), [0.2, 0.2, 1.0, 0.2], atol=2e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sdf_oracle_inverted_inner_shell_is_a_cavity(backend):
    outer = trimesh.creation.icosphere(subdivisions=3, radius=0.8)
    inner = trimesh.creation.icosphere(subdivisions=3, radius=0.4)
    inner.invert()  # inward-facing: the winding numbers cancel inside it
    d = sdf_oracle(trimesh.util.concatenate([outer, inner]), backend=backend)(np.array([[0, 0, 0], [0.6, 0, 0]]))
    assert d[0] > 0 > d[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sdf_oracle_sign_on_open_mesh_is_robust(backend):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    holed = trimesh.Trimesh(sphere.vertices, sphere.faces[5:], process=False)  # a few triangles missing
    assert not holed.is_watertight
    d = sdf_oracle(holed, backend=backend)(np.array([[0, 0, 0], [0.1, 0.1, 0.1], [0.8, 0, 0]]))
    assert d[0] < 0 and d[1] < 0 and d[2] > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_sdf_oracle_sign_ignores_face_orientation(backend):
    inverted = trimesh.creation.box(extents=(1, 1, 1))
    inverted.invert()
    d = sdf_oracle(inverted, backend=backend)(np.array([[0.0, 0, 0], [2, 0, 0]]))
    assert d[0] < 0 < d[1]


def test_sdf_oracle_rejects_wrong_sign_and_open_surfaces(monkeypatch):
    box = trimesh.creation.box(extents=(1, 1, 1))
    good = sdata._Oracle.__call__
    monkeypatch.setattr(sdata._Oracle, "__call__", lambda self, p: -good(self, p))  # a backend with the wrong sign
    with pytest.raises(InputError, match="negative far outside"):
        sdf_oracle(box)
    monkeypatch.undo()
    plane = trimesh.Trimesh(vertices=[[0, 0, 0], [1, 0, 0], [0, 1, 0]], faces=[[0, 1, 2]])
    with pytest.raises(InputError, match="encloses no volume"):
        sdf_oracle(plane)


def test_normalise_formula():
    mesh = trimesh.creation.box(extents=(2, 4, 1))
    mesh.apply_translation((1, 2, 3))
    out, centre, a = normalise(mesh, 0.5)
    np.testing.assert_allclose(centre, [1, 2, 3])
    assert a == pytest.approx(0.25)
    np.testing.assert_allclose(out.vertices, (mesh.vertices - centre) * a)


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_procedural_classes_are_closed_and_seeded(label):
    shape = ProceduralShape.random(label, 3)
    assert shape == ProceduralShape.random(label, 3)
    assert shape != ProceduralShape.random(label, 4)
    mesh, sdf = shape.mesh(40)
    assert mesh.is_watertight and len(mesh.faces) > 0
    assert np.abs(mesh.bounds).max() == pytest.approx(0.9, abs=1e-6)
    pts = mesh.sample(300, seed=0) if "seed" in mesh.sample.__code__.co_varnames else mesh.sample(300)
    assert np.abs(sdf(pts)).max() < 0.06  # the marching-cubes surface sits on the analytic zero set
    assert (sdf(np.array([[0.99, 0.99, 0.99]])) > 0).all()


def test_procedural_rejects_unknown_label():
    with pytest.raises(InputError, match="label"):
        ProceduralShape.random(10, 0)


def test_procedural_set_round_robin():
    s = procedural_set(4, seed=1, classes=[2, 7], resolution=24)
    assert s.labels == [2, 7, 2, 7] and len(s.meshes) == 4


def _dm(tmp_path, **kw):
    args = dict(n=16, k=3, classes=["torus", "chair"], train_per_class=2, val_per_class=1, batch_size=2, workers=1)
    args.update(kw)
    return ShapesDataModule(cache_dir=str(tmp_path / "cache"), progress=False, **args)


def test_datamodule_procedural_batches_and_cache(tmp_path, monkeypatch):
    dm = _dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x1"].shape == (2, 16, 4 + 27) and batch["y"].dtype == torch.long
    assert set(dm.train["labels"].tolist()) == {CLASSES.index("torus"), CLASSES.index("chair")}
    mean, std = dm.statistics()
    assert mean.shape == (31,) and (std > 0).all()
    assert torch.all(mean[4:] == mean[4])  # one shared scale for the SDF values
    # a second module with the same settings loads the cache and never fits
    monkeypatch.setattr(sdata, "fit_many", lambda *a, **k: (_ for _ in ()).throw(AssertionError("refit")))
    dm2 = _dm(tmp_path)
    dm2.setup("fit")
    np.testing.assert_array_equal(dm2.train["matrices"], dm.train["matrices"])


@pytest.mark.parametrize(("rep", "shape"), [("grid", (8, 64)), ("points", (64, 3))])
def test_datamodule_baseline_representations(tmp_path, rep, shape):
    dm = _dm(tmp_path, representation=rep, grid=8, patch=4, points=64)
    dm.setup("fit")
    assert tuple(dm.train["matrices"].shape[1:]) == shape


def test_datamodule_folder_skips_broken_meshes(tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    for i in range(4):
        m = trimesh.creation.icosphere(subdivisions=2, radius=0.3 + 0.1 * i)
        m.export(folder / f"ok_{i}.obj")
    (folder / "obj_168.obj").write_text("v nan nan nan\nv nan nan nan\nv nan nan nan\nf 1 2 3\n")
    dm = ShapesDataModule(
        source=str(folder), n=16, k=3, val_fraction=0.2, batch_size=2, workers=1, cache_dir=str(tmp_path / "c"),
        progress=False,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="obj_168.obj"):
        dm.setup("fit")
    assert [name for name, _ in dm.skipped] == ["obj_168.obj"]
    assert "y" not in next(iter(dm.train_dataloader()))
    assert not dm.conditional
    ref = dm.reference(2)
    assert ref.labels is None and len(ref) >= 1


@pytest.mark.parametrize(
    "kwargs",
    [{"source": "nowhere/at/all"}, {"classes": ["spaceship"]}, {"n": 0}, {"k": 1}, {"representation": "voxels"}],
)
def test_datamodule_rejects_bad_arguments(kwargs):
    with pytest.raises(InputError):
        ShapesDataModule(**kwargs)


def test_shipped_reference_is_real_and_held_out():
    from flowsci.domains.shapes import DOMAIN

    ref = DOMAIN.reference(3)
    assert len(ref) == 3 and all(m.is_watertight or len(m.faces) > 0 for m in ref.meshes)
    shipped = {p.name for p in sdata.shipped_meshes()}
    assert "obj_168.obj" not in shipped
    if real_mesh_dir().is_dir():
        train, _ = ShapesDataModule(source="pybullet").mesh_files()
        assert shipped.isdisjoint({Path(p).name for p in train})
