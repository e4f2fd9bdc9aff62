r"""Shape data: mesh readers, normalisation, the SDF oracle, the procedural class-labelled family and the data module.

* :func:`read_mesh` reads OBJ, PLY, STL, OFF, GLB/GLTF through trimesh and rejects broken files with ONE
  :class:`~flowsci.errors.InputError` naming the file and the problem (missing, empty, garbage, no faces,
  NaN/Inf vertices, face indices out of range, zero extent, absurd size).
* :func:`normalise` centres the bounding box and scales the largest half-extent to ``0.9`` (inside ``[-1, 1]^3``
  with room for the mosaic's patch cubes).
* :func:`sdf_oracle` is the ground-truth SDF (negative inside): pysdf where it is installed and the mesh is fine
  enough (its distance is made exact to one split edge, its sign a per-part winding number), else
  point-cloud-utils' ``signed_distance_to_mesh`` (exact distance, sign from the fast generalised winding number);
  both are right on open meshes and on unions of overlapping parts. The oracle checks the sign on points far
  outside the shape and that the mesh encloses volume, so a wrong-signed field never passes in silence.
* :class:`ProceduralShape`: ten seeded, class-labelled CSG shapes with analytic SDFs (:data:`CLASSES`).
* :class:`ShapesDataModule`: mosaics of the procedural family (class-conditional) or of a folder of meshes
  (unconditional, e.g. the staged pybullet objects), fitted in parallel once and cached on disk.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from flowsci.domains.shapes.mosaic import MosaicCache, MosaicSDF, fit_many, marching_cubes_mesh
from flowsci.errors import InputError, require

__all__ = [
    "CLASSES",
    "MESH_SUFFIXES",
    "ProceduralShape",
    "ShapeSet",
    "ShapesDataModule",
    "fit_item",
    "list_meshes",
    "normalise",
    "procedural_set",
    "read_mesh",
    "real_mesh_dir",
    "refinement_factor",
    "sdf_oracle",
    "shipped_meshes",
]

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off", ".glb", ".gltf")
CLASSES = (
    "ellipsoid",
    "rounded_box",
    "cylinder",
    "cone",
    "torus",
    "capsule",
    "mug",
    "table",
    "chair",
    "dumbbell",
)
"""The procedural classes (label = index)."""
MAX_FILE_BYTES = 512 * 2**20
MAX_FACES = 5_000_000
SAMPLE_DATA = Path(__file__).parent / "sample_data"


# --------------------------------------------------------------------------------------------- reading meshes
def read_mesh(path: str | os.PathLike, normalize: bool = True) -> Any:
    """Read one mesh file as a ``trimesh.Trimesh`` (a multi-geometry scene is concatenated).

    Args:
        path: ``.obj``, ``.ply``, ``.stl``, ``.off``, ``.glb`` or ``.gltf``.
        normalize: Apply :func:`normalise` (centre, largest half-extent 0.9).

    Raises:
        InputError: naming the file: missing, empty, unknown suffix, unparsable, no faces, non-finite vertices,
            face indices out of range, zero extent, over 512 MiB or 5M faces.

    """
    trimesh = require("trimesh", "shapes")
    p = Path(path)
    if p.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(p, f"unknown mesh format {p.suffix!r}; readable: {list(MESH_SUFFIXES)}")
    if not p.is_file():
        raise InputError(p, "no such file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(p, "is empty (0 bytes)")
    if size > MAX_FILE_BYTES:
        raise InputError(p, f"is {size / 2**20:.0f} MiB, over the {MAX_FILE_BYTES // 2**20} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mesh = trimesh.load(p, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types on garbage
        raise InputError(p, f"not a readable {p.suffix} mesh: {type(err).__name__}: {err}") from err
    verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))))
    if len(faces) == 0 or len(verts) == 0:
        raise InputError(p, "holds no triangles (empty, truncated or not a mesh)")
    if len(faces) > MAX_FACES:
        raise InputError(p, f"has {len(faces)} faces, over the {MAX_FACES} limit")
    bad = ~np.isfinite(verts).all(axis=1)
    if bad.any():
        raise InputError(p, f"{int(bad.sum())} of {len(verts)} vertices are NaN or Inf")
    if faces.min() < 0 or faces.max() >= len(verts):
        raise InputError(p, "face indices out of range")
    if float(np.ptp(verts, axis=0).max()) <= 0:
        raise InputError(p, "all vertices coincide (zero extent)")
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    return normalise(mesh)[0] if normalize else mesh


def normalise(mesh: Any, half_extent: float = 0.9) -> tuple[Any, np.ndarray, float]:
    """Centre the bounding box at 0 and scale the largest half-extent to ``half_extent``.

    Returns:
        ``(mesh', centre [3], a)`` with ``v' = a (v - centre)``.

    """
    trimesh = require("trimesh", "shapes")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = v.min(0), v.max(0)
    centre = (lo + hi) / 2
    a = half_extent / max(float((hi - lo).max()) / 2, 1e-12)
    return trimesh.Trimesh(vertices=(v - centre) * a, faces=np.asarray(mesh.faces), process=False), centre, a


def list_meshes(folder: str | os.PathLike) -> list[Path]:
    """Mesh files (known suffixes) in ``folder``, sorted by name.

    Raises:
        InputError: not a folder, or no mesh files in it.

    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(root, "is not a folder of meshes")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
    if not files:
        raise InputError(root, f"holds no mesh files ({', '.join(MESH_SUFFIXES)})")
    return files


def real_mesh_dir() -> Path:
    """The staged pybullet objects (``../shared/data/shapes/pybullet_random_objects/meshes`` from the repository)."""
    env = os.environ.get("FLOWSCI_SHAPES_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent.parent / "shared" / "data" / "shapes" / "pybullet_random_objects" / "meshes"
        if cand.is_dir():
            return cand
    return Path("../shared/data/shapes/pybullet_random_objects/meshes")


def shipped_meshes() -> list[Path]:
    """The small real meshes shipped in ``sample_data/`` (``obj_*.obj``) (held out of the training split)."""
    return sorted(SAMPLE_DATA.glob("obj_*.obj"))


# --------------------------------------------------------------------------------------------- SDF oracle
class _Oracle:
    r"""Picklable ground-truth SDF of a mesh (negative inside).

    ``pysdf`` backend: pysdf measures the distance to the triangles around the *nearest vertex* only, which is
    wrong by up to the triangle size on coarse meshes (0.2 on a pybullet object normalised to ``[-0.9, 0.9]^3``);
    the mesh is therefore first split until no edge is longer than ``max_edge`` times its largest extent
    (``trimesh.remesh.subdivide_to_size``), which bounds the error: the result is the distance to some triangle,
    so at least the true distance, and at most the true distance plus one edge. The sign is the generalised
    winding number of closed parts, :math:`|\sum_c o_c\,[x \in c]| \ge 1`, with one
    pysdf inside test (ray parity, majority of several rays) per connected component ``c`` and ``o_c`` the sign of
    its enclosed volume. pysdf's own sign is the parity over the whole mesh, which reads a point inside two
    overlapping parts as outside; per component, parity is right, overlapping parts add up and an inverted inner
    shell (a cavity) cancels its outer shell, as with point-cloud-utils' winding number. A mesh of one component
    takes pysdf's signed distance directly.
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, backend: str, max_edge: float = 0.02) -> None:
        self.v = np.ascontiguousarray(vertices, dtype=np.float64)
        self.f = np.ascontiguousarray(faces, dtype=np.int64)
        self.backend, self.max_edge = backend, float(max_edge)
        self._impl: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"v": self.v, "f": self.f, "backend": self.backend, "max_edge": self.max_edge, "_impl": None}

    def _pysdf(self) -> tuple[Any, list[tuple[Any, float]]]:
        """The pysdf of the whole mesh and ``(pysdf, orientation)`` per connected component (empty if only one)."""
        import pysdf
        import trimesh

        edge = self.max_edge * float(np.ptp(self.v, axis=0).max())
        v, f = trimesh.remesh.subdivide_to_size(self.v, self.f, max_edge=edge, max_iter=20)
        whole = pysdf.SDF(np.asarray(v, np.float32), np.asarray(f, np.uint32))
        merged = trimesh.Trimesh(self.v, self.f, process=True)  # welds duplicated vertices (STL, soups)
        parts = merged.split(only_watertight=False) if len(merged.faces) else []
        if len(parts) <= 1:
            return whole, []
        out = []
        for c in parts:
            part = pysdf.SDF(np.asarray(c.vertices, np.float32), np.asarray(c.faces, np.uint32))
            out.append((part, -1.0 if c.volume < 0 else 1.0))
        return whole, out

    def __call__(self, points: np.ndarray) -> np.ndarray:
        q = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
        if self.backend == "pysdf":
            if self._impl is None:
                self._impl = self._pysdf()
            whole, parts = self._impl
            qf = np.ascontiguousarray(q, dtype=np.float32)
            d = -np.asarray(whole(qf), dtype=np.float64)  # pysdf: positive inside
            if not parts:
                return d
            winding = sum(o * np.asarray(c.contains(qf), dtype=np.float64) for c, o in parts)
            return np.where(np.abs(winding) >= 0.5, -np.abs(d), np.abs(d))
        import point_cloud_utils as pcu

        d, _, _ = pcu.signed_distance_to_mesh(q, self.v, self.f.astype(np.int32))
        return np.asarray(d, dtype=np.float64)


def refinement_factor(vertices: np.ndarray, faces: np.ndarray, max_edge: float = 0.02) -> float:
    r"""Estimated face count after splitting every edge to ``max_edge`` x the largest extent, over the face count.

    A face whose longest edge is ``e`` is split into :math:`4^{\lceil \log_2(e / h) \rceil}` faces
    (``trimesh.remesh.subdivide_to_size`` halves edges per round).
    """
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    if len(f) == 0:
        return 1.0
    h = max_edge * float(np.ptp(v, axis=0).max())
    longest = np.linalg.norm(v[f] - v[np.roll(f, 1, axis=1)], axis=-1).max(1)
    return float((4.0 ** np.ceil(np.log2(np.maximum(longest / max(h, 1e-12), 1.0)))).mean())


AUTO_MAX_REFINEMENT = 20.0
"""``backend="auto"`` leaves pysdf for point-cloud-utils above this :func:`refinement_factor`: on coarse CAD-like
meshes (the pybullet objects: 150-570x) the split mesh makes pysdf slower than point-cloud-utils."""


def sdf_oracle(mesh: Any, backend: str = "auto", check: bool = True) -> Callable[[np.ndarray], np.ndarray]:
    """Ground-truth signed distance of ``mesh`` (negative inside) as a picklable callable ``[Q, 3] -> [Q]``.

    Args:
        mesh: A ``trimesh.Trimesh`` (need not be watertight: the sign comes from the generalised winding number).
        backend: ``"pysdf"``, ``"pcu"`` or ``"auto"``: pysdf if it is importable and the mesh needs at most
            :data:`AUTO_MAX_REFINEMENT` x its faces to bound pysdf's distance error (see :class:`_Oracle`), else
            point-cloud-utils. Both read negative inside.
        check: Verify the sign: the 8 corners of the enlarged bounding box must read positive and some point of
            the bounding box must read negative (the mesh encloses volume).

    Raises:
        InputError: the sign check fails (inverted or open mesh without an inside).

    """
    if backend == "auto":
        try:
            import pysdf  # noqa: F401

            fine = refinement_factor(mesh.vertices, mesh.faces) <= AUTO_MAX_REFINEMENT
            backend = "pysdf" if fine else "pcu"
        except ImportError:
            backend = "pcu"
    if backend not in ("pysdf", "pcu"):
        raise InputError("backend", f"must be 'auto', 'pysdf' or 'pcu', got {backend!r}")
    if backend == "pcu":
        require("point_cloud_utils", "shapes")
    oracle = _Oracle(np.asarray(mesh.vertices), np.asarray(mesh.faces), backend)
    if check:
        v = oracle.v
        lo, hi = v.min(0), v.max(0)
        pad = 0.25 * (hi - lo).max()
        corners = np.array(np.meshgrid(*[[lo[i] - pad, hi[i] + pad] for i in range(3)], indexing="ij")).reshape(3, -1).T
        name = getattr(mesh, "metadata", {}).get("file_name", "mesh")
        if (oracle(corners) <= 0).any():
            raise InputError(name, "signed distance is negative far outside the shape (inverted or broken mesh)")
        rng = np.random.default_rng(0)
        probe = np.concatenate([rng.uniform(lo, hi, size=(4000, 3)), v[:: max(1, len(v) // 200)] * 0.98])
        if not (oracle(probe) < 0).any():
            raise InputError(name, "encloses no volume (an open surface?): no point reads inside")
    return oracle


# --------------------------------------------------------------------------------------------- procedural family
def _len(a: np.ndarray) -> np.ndarray:
    return np.sqrt((a * a).sum(-1))


def _box(p: np.ndarray, b: Sequence[float], r: float = 0.0) -> np.ndarray:
    q = np.abs(p) - np.asarray(b) + r
    return _len(np.maximum(q, 0.0)) + np.minimum(q.max(-1), 0.0) - r


def _cyl(p: np.ndarray, r: float, h: float) -> np.ndarray:
    d = np.stack([np.hypot(p[:, 0], p[:, 2]) - r, np.abs(p[:, 1]) - h], -1)
    return np.minimum(d.max(-1), 0.0) + _len(np.maximum(d, 0.0))


def _ellipsoid(p: np.ndarray, r: Sequence[float]) -> np.ndarray:
    r = np.asarray(r)
    k0, k1 = _len(p / r), _len(p / r**2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _cone(p: np.ndarray, r1: float, r2: float, h: float) -> np.ndarray:
    """Capped cone (frustum) along y, radius ``r1`` at ``y = -h`` and ``r2`` at ``y = h`` (exact SDF)."""
    qx, qy = np.hypot(p[:, 0], p[:, 2]), p[:, 1]
    k1 = np.array([r2, h])
    k2 = np.array([r2 - r1, 2 * h])
    rr = np.where(qy < 0, r1, r2)
    ca = np.stack([qx - np.minimum(qx, rr), np.abs(qy) - h], -1)
    q = np.stack([qx, qy], -1)
    t = np.clip(((k1 - q) * k2).sum(-1) / (k2 * k2).sum(), 0.0, 1.0)
    cb = q - k1 + k2 * t[:, None]
    s = np.where((cb[:, 0] < 0) & (ca[:, 1] < 0), -1.0, 1.0)
    return s * np.sqrt(np.minimum((ca * ca).sum(-1), (cb * cb).sum(-1)))


def _torus(p: np.ndarray, big: float, small: float, plane: str = "xz") -> np.ndarray:
    a, b, c = (0, 2, 1) if plane == "xz" else (0, 1, 2)
    return np.hypot(np.hypot(p[:, a], p[:, b]) - big, p[:, c]) - small


def _capsule(p: np.ndarray, a: Sequence[float], b: Sequence[float], r: float) -> np.ndarray:
    a, b = np.asarray(a), np.asarray(b)
    pa, ba = p - a, b - a
    h = np.clip((pa @ ba) / (ba @ ba), 0.0, 1.0)
    return _len(pa - h[:, None] * ba) - r


@dataclass(frozen=True)
class ProceduralShape:
    """One seeded shape of the procedural family: an analytic SDF (negative inside), upright along ``y``.

    Union is ``min``, subtraction ``max(a, -b)``: the sign is exact, the distance exact outside unions and a
    bound elsewhere. ``ProceduralShape.random(label, seed)`` draws the parameters.

    Attributes:
        label: Class index into :data:`CLASSES`.
        params: The class's parameters (plain floats).

    """

    label: int
    params: tuple[float, ...]

    @classmethod
    def random(cls, label: int, seed: int) -> ProceduralShape:
        """Draw the parameters of class ``label`` from a generator seeded by ``(label, seed)``."""
        if not 0 <= label < len(CLASSES):
            raise InputError("label", f"must be in 0..{len(CLASSES) - 1}, got {label}")
        u = np.random.default_rng([int(label), int(seed)]).uniform
        name = CLASSES[label]
        ranges = {
            "ellipsoid": [(0.35, 1.0)] * 3,
            "rounded_box": [(0.3, 1.0)] * 3 + [(0.05, 0.5)],
            "cylinder": [(0.3, 0.8), (0.3, 1.0)],
            "cone": [(0.5, 0.9), (0.0, 0.3), (0.4, 0.9)],
            "torus": [(0.55, 0.8), (0.12, 0.3)],
            "capsule": [(0.3, 0.7), (0.15, 0.35)],
            "mug": [(0.4, 0.6), (0.45, 0.8), (0.06, 0.1), (0.2, 0.3), (0.05, 0.08)],
            "table": [(0.6, 1.0), (0.4, 1.0), (0.04, 0.08), (0.5, 0.9), (0.04, 0.08)],
            "chair": [(0.35, 0.55), (0.35, 0.55), (0.4, 0.6), (0.5, 0.8), (0.03, 0.06)],
            "dumbbell": [(0.5, 0.8), (0.06, 0.12), (0.2, 0.35)],
        }[name]
        return cls(int(label), tuple(float(u(lo, hi)) for lo, hi in ranges))

    @property
    def name(self) -> str:
        """Class name."""
        return CLASSES[self.label]

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Signed distance at ``points`` ``[Q, 3]`` (negative inside) -> ``[Q]``."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        a = self.params
        name = self.name
        if name == "ellipsoid":
            return _ellipsoid(p, a[:3])
        if name == "rounded_box":
            b = a[:3]
            return _box(p, b, a[3] * min(b))
        if name == "cylinder":
            return _cyl(p, a[0], a[1])
        if name == "cone":
            return _cone(p, a[0], a[1], a[2])
        if name == "torus":
            return _torus(p, a[0], a[1])
        if name == "capsule":
            return _capsule(p, (-a[0], 0, 0), (a[0], 0, 0), a[1])
        if name == "mug":
            big, h, wall, hr, hs = a
            body = np.maximum(_cyl(p, big, h), -_cyl(p - np.array([0, wall, 0]), big - wall, h))
            handle = np.maximum(_torus(p - np.array([big, 0, 0]), hr, hs, plane="xy"), -p[:, 0] + big - wall)
            return np.minimum(body, handle)
        if name == "table":
            tx, tz, th, legh, legr = a
            top = _box(p - np.array([0, legh, 0]), (tx, th, tz))
            d = top
            for sx in (-1, 1):
                for sz in (-1, 1):
                    c = np.array([sx * (tx - 2 * legr), 0.0, sz * (tz - 2 * legr)])
                    d = np.minimum(d, _cyl(p - c, legr, legh))
            return d
        if name == "chair":
            sx, sz, legh, backh, t = a
            d = _box(p - np.array([0, legh, 0]), (sx, t, sz))
            for ix in (-1, 1):
                for iz in (-1, 1):
                    d = np.minimum(d, _box(p - np.array([ix * (sx - t), 0, iz * (sz - t)]), (t, legh, t)))
            back = _box(p - np.array([0, legh + backh, -(sz - t)]), (sx, backh, t))
            return np.minimum(d, back)
        if name == "dumbbell":
            half, barr, ball = a
            bar = _capsule(p, (-half, 0, 0), (half, 0, 0), barr)
            balls = np.minimum(_len(p - np.array([half, 0, 0])), _len(p + np.array([half, 0, 0]))) - ball
            return np.minimum(bar, balls)
        raise AssertionError(name)

    def mesh(self, resolution: int = 64) -> tuple[Any, Callable[[np.ndarray], np.ndarray]]:
        """Normalised marching-cubes mesh (grid of at least 48^3) and the normalised SDF ``x -> a S(x / a + c)``."""
        bound = 1.6  # every class fits in [-1.5, 1.5]^3 before normalisation
        resolution = max(int(resolution), 48)  # thinner grids lose the chair's and table's legs
        g = np.linspace(-bound, bound, resolution)
        pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        grid = self(pts).reshape(resolution, resolution, resolution)
        raw = marching_cubes_mesh(grid, (-bound,) * 3, g[1] - g[0])
        norm, centre, a = normalise(raw)
        return norm, _ScaledSdf(self, centre, a)


@dataclass(frozen=True)
class _ScaledSdf:
    base: Callable[[np.ndarray], np.ndarray]
    centre: np.ndarray
    a: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.a * self.base(np.asarray(x) / self.a + self.centre)


# --------------------------------------------------------------------------------------------- shape sets
@dataclass
class ShapeSet:
    """Meshes with optional class labels: the native objects of samples and references.

    Attributes:
        meshes: ``trimesh.Trimesh`` objects (normalised into ``[-1, 1]^3``; an empty mesh marks a failed decode).
        labels: Class index per mesh, or ``None`` (unconditional).
        class_names: Names of the class indices.
        names: Source names (file names, ``"chair_0007"``...).
        extras: Timings and other per-set values (``sample_s``, ``mesh_s``).

    """

    meshes: list[Any]
    labels: list[int] | None = None
    class_names: Sequence[str] = CLASSES
    names: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.meshes)


def procedural_set(num: int, seed: int, classes: Sequence[int] | None = None, resolution: int = 64) -> ShapeSet:
    """``num`` procedural meshes, classes assigned round-robin over ``classes`` (default all ten), seeded."""
    classes = list(range(len(CLASSES))) if classes is None else list(classes)
    meshes, labels, names = [], [], []
    for i in range(num):
        c = classes[i % len(classes)]
        shape = ProceduralShape.random(c, seed * 100_003 + i)
        meshes.append(shape.mesh(resolution)[0])
        labels.append(c)
        names.append(f"{CLASSES[c]}_{i:04d}")
    return ShapeSet(meshes, labels, CLASSES, names)


def fit_item(item: dict[str, Any]) -> np.ndarray:
    """Fit one shape to its mosaic matrix ``[n, 4 + k^3]`` (the picklable job of :func:`fit_many`).

    ``item``: ``{"kind": "procedural", "label", "seed", "n", "k", "steps"}`` or ``{"kind": "mesh", "path", "n",
    "k", "steps"}``.
    """
    n, k, steps = int(item["n"]), int(item["k"]), int(item.get("steps", 0))
    if item["kind"] == "procedural":
        mesh, sdf = ProceduralShape.random(int(item["label"]), int(item["seed"])).mesh(int(item.get("mc", 48)))
    else:
        mesh = read_mesh(item["path"])
        sdf = sdf_oracle(mesh)
    rep = item.get("rep", "mosaic")
    if rep == "grid":  # dense truncated SDF over [-1, 1]^3, as patch tokens [(R/p)^3, p^3]
        r, p = int(item["grid"]), int(item["patch"])
        g = np.linspace(-1.0, 1.0, r)
        pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
        trunc = 3 * (g[1] - g[0])
        vals = np.clip(sdf(pts), -trunc, trunc).reshape(r, r, r)
        m = r // p
        return vals.reshape(m, p, m, p, m, p).transpose(0, 2, 4, 1, 3, 5).reshape(m**3, p**3).astype(np.float32)
    if rep == "points":
        from flowsci.domains.shapes.metrics import sample_points

        return sample_points(mesh, int(item["points"]), seed=int(item.get("fit_seed", 0))).astype(np.float32)
    return MosaicSDF.fit(mesh, n, k, sdf=sdf, steps=steps, seed=int(item.get("fit_seed", 0))).to_matrix().numpy()


class _MatrixDataset(Dataset):
    def __init__(self, matrices: np.ndarray, labels: np.ndarray | None) -> None:
        self.x = torch.as_tensor(matrices, dtype=torch.float32)
        self.y = None if labels is None else torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        out = {"x1": self.x[i]}
        if self.y is not None:
            out["y"] = self.y[i]
        return out


class ShapesDataModule(pl.LightningDataModule):
    """Mosaic matrices of the procedural family (class-conditional) or of a folder of meshes (unconditional).

    Mosaics are fitted once in :meth:`prepare_data` (local processes, or the Dask ``client``), with a progress
    bar, and cached as ``.npz`` under ``cache_dir`` (default ``~/.cache/flowsci/shapes``, never in git); every rank
    loads them in :meth:`setup`. Broken meshes (e.g. ``obj_168.obj``, all-NaN vertices) are skipped and reported
    (``self.skipped``: ``(file, problem)`` pairs, also logged as a warning).

    Batches are dicts ``{"x1": [B, n, 4 + k^3]}`` plus ``"y": [B]`` class indices for the procedural source.

    Args:
        source: ``"procedural"``, ``"pybullet"`` (the staged real meshes) or a folder of mesh files.
        n: Patches per mosaic.
        k: Grid size per patch axis.
        classes: Procedural class names to use (default all of :data:`CLASSES`).
        train_per_class: Procedural training shapes per class.
        val_per_class: Procedural validation shapes per class.
        val_fraction: Folder sources: fraction held out for validation (seeded split).
        max_meshes: Folder sources: use at most this many files (after the split order; ``None``: all).
        fit_steps: Adam fine-tuning steps of each fit (0: initialisation only).
        representation: ``"mosaic"`` (Mosaic-SDF), or the baselines' ``"grid"`` (dense truncated SDF ``grid^3`` as
            ``patch^3`` tokens) and ``"points"`` (``points`` surface samples).
        grid: Grid size of the ``"grid"`` representation.
        patch: Patch size of the ``"grid"`` representation.
        points: Points per shape of the ``"points"`` representation.
        seed: Seed of the shapes and of the split.
        batch_size: Batch size.
        workers: Fitting processes (default: CPU count).
        cache_dir: Cache folder.
        num_workers: DataLoader workers.
        progress: Progress bar while fitting.

    """

    def __init__(
        self,
        source: str = "procedural",
        n: int = 128,
        k: int = 5,
        classes: list[str] | None = None,
        train_per_class: int = 16,
        val_per_class: int = 4,
        val_fraction: float = 0.1,
        max_meshes: int | None = None,
        fit_steps: int = 0,
        representation: str = "mosaic",
        grid: int = 24,
        patch: int = 4,
        points: int = 512,
        seed: int = 0,
        batch_size: int = 16,
        workers: int | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if source != "procedural" and source != "pybullet" and not Path(source).is_dir():
            raise InputError("source", f"must be 'procedural', 'pybullet' or a folder of meshes, got {source!r}")
        unknown = sorted(set(classes or ()) - set(CLASSES))
        if unknown:
            raise InputError("classes", f"unknown classes {unknown}; known: {list(CLASSES)}")
        if n < 1 or k < 2 or batch_size < 1:
            raise InputError("n/k/batch_size", f"need n >= 1, k >= 2, batch_size >= 1; got {n}, {k}, {batch_size}")
        if representation not in ("mosaic", "grid", "points") or grid % patch:
            raise InputError(
                "representation", f"must be mosaic, grid or points (grid % patch == 0); got {representation}"
            )
        self.representation, self.grid, self.patch, self.points = representation, int(grid), int(patch), int(points)
        self.source, self.n, self.k = source, int(n), int(k)
        self.class_ids = [CLASSES.index(c) for c in classes] if classes else list(range(len(CLASSES)))
        self.train_per_class, self.val_per_class = int(train_per_class), int(val_per_class)
        self.val_fraction, self.max_meshes = float(val_fraction), max_meshes
        self.fit_steps, self.seed, self.batch_size = int(fit_steps), int(seed), int(batch_size)
        self.workers, self.num_workers, self.progress = workers, int(num_workers), progress
        self.cache = MosaicCache(cache_dir)
        self.skipped: list[tuple[str, str]] = []
        self.train: dict[str, np.ndarray] | None = None
        self.val: dict[str, np.ndarray] | None = None

    # ----------------------------------------------------------------- what is fitted
    @property
    def conditional(self) -> bool:
        """Whether batches carry class labels."""
        return self.source == "procedural"

    @property
    def class_names(self) -> list[str]:
        """Names of the label indices (all ten procedural classes; unused ones simply never appear)."""
        return list(CLASSES) if self.conditional else []

    def mesh_files(self) -> tuple[list[Path], list[Path]]:
        """Folder sources: the seeded ``(train, val)`` split of the mesh files."""
        folder = real_mesh_dir() if self.source == "pybullet" else Path(self.source)
        files = list_meshes(folder)
        order = np.random.default_rng(self.seed).permutation(len(files))
        n_val = max(1, round(self.val_fraction * len(files)))
        val = [files[i] for i in order[:n_val]]
        train = [files[i] for i in order[n_val:]]
        if self.max_meshes is not None:
            train = train[: self.max_meshes]
            val = val[: max(1, self.max_meshes // 8)]
        return train, val

    def _items(self, split: str) -> list[dict[str, Any]]:
        base: dict[str, Any] = {"n": self.n, "k": self.k, "steps": self.fit_steps, "rep": self.representation}
        if self.representation == "grid":
            base.update(grid=self.grid, patch=self.patch)
        elif self.representation == "points":
            base.update(points=self.points)
        if self.conditional:
            per = self.train_per_class if split == "train" else self.val_per_class
            offset = 0 if split == "train" else 1_000_000
            return [
                {**base, "kind": "procedural", "label": c, "seed": offset + self.seed * 10_007 + i}
                for c in self.class_ids
                for i in range(per)
            ]
        train, val = self.mesh_files()
        return [{**base, "kind": "mesh", "path": str(p)} for p in (train if split == "train" else val)]

    def _key(self, split: str, items: list[dict[str, Any]]) -> str:
        return MosaicCache.key({"v": 1, "split": split, "items": items})

    def _build(self, split: str, client: Any = None) -> dict[str, np.ndarray]:
        items = self._items(split)
        key = self._key(split, items)
        cached = self.cache.load(key)
        if cached is not None:
            return cached
        results = fit_many(fit_item, items, workers=self.workers, client=client, progress=self.progress)
        good, labels, names, skipped = [], [], [], []
        for item, res in zip(items, results, strict=True):
            name = Path(item["path"]).name if item["kind"] == "mesh" else f"{CLASSES[item['label']]}_{item['seed']}"
            if isinstance(res, BaseException):
                skipped.append((name, str(res)))
                continue
            good.append(res)
            labels.append(item.get("label", -1))
            names.append(name)
        if not good:
            raise InputError(
                self.source, f"no shape of the {split} split could be fitted; first problems: {skipped[:3]}"
            )
        arrays = {
            "matrices": np.stack(good).astype(np.float32),
            "labels": np.asarray(labels, dtype=np.int64),
            "names": np.asarray(names, dtype=str),
            "skipped": np.asarray([f"{a}: {b}" for a, b in skipped], dtype=str),
        }
        self.cache.save(key, **arrays)
        return arrays

    # ----------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Fit and cache the mosaics of both splits (rank 0 only under DDP)."""
        for split in ("train", "val"):
            self._build(split)

    def setup(self, stage: str | None = None) -> None:
        """Load the cached mosaics (fitting them if :meth:`prepare_data` was not called)."""
        if self.train is not None:
            return
        self.train, self.val = self._build("train"), self._build("val")
        self.skipped = [tuple(s.split(": ", 1)) for s in [*self.train["skipped"], *self.val["skipped"]]]
        for name, problem in self.skipped:
            log.warning("shapes: skipped %s (%s)", name, problem)
            warnings.warn(f"shapes data: skipped {name}: {problem}", stacklevel=2)

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-column mean and standard deviation ``[d]`` of the training matrices (over shapes and rows)."""
        self.setup()
        mats = torch.as_tensor(self.train["matrices"]).double()
        x = mats.reshape(-1, mats.shape[-1])
        mean = x.mean(0)
        std = x.std(0).clamp_min(1e-3)
        first = {"mosaic": 4, "grid": 0, "points": 3}[self.representation]
        if first < x.shape[1]:  # SDF values share one scale (keeps the field's geometry isotropic)
            mean[first:] = x[:, first:].mean()
            std[first:] = x[:, first:].std().clamp_min(1e-3)
        return mean.float(), std.float()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        self.setup()
        arrays = self.train if split == "train" else self.val
        labels = arrays["labels"] if self.conditional else None
        return DataLoader(
            _MatrixDataset(arrays["matrices"], labels),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches."""
        return self._loader("val", False)

    # ----------------------------------------------------------------- evaluation data
    def reference(self, num: int, seed: int = 0, resolution: int = 64) -> ShapeSet:
        """Held-out reference meshes: procedural test shapes (seeded, class round-robin) or validation meshes."""
        if self.conditional:
            classes = self.class_ids
            meshes, labels, names = [], [], []
            for i in range(num):
                c = classes[i % len(classes)]
                meshes.append(ProceduralShape.random(c, 2_000_000 + seed * 100_003 + i).mesh(resolution)[0])
                labels.append(c)
                names.append(f"{CLASSES[c]}_{i:04d}")
            return ShapeSet(meshes, labels, CLASSES, names)
        _, val = self.mesh_files()
        rng = np.random.default_rng(seed)
        picked = [val[i] for i in rng.permutation(len(val))]
        meshes, names = [], []
        for p in picked:
            try:
                meshes.append(read_mesh(p))
                names.append(p.name)
            except InputError as err:
                log.warning("shapes: skipped %s", err)
            if len(meshes) == num:
                break
        return ShapeSet(meshes, None, (), names)
