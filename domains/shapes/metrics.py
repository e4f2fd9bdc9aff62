r"""Point-cloud metrics of 3D generation (PointFlow / LION / Mosaic-SDF supp. A.1 conventions).

* Point clouds: ``N`` points per shape, area-weighted surface samples (``4 N``) then farthest-point sampling to
  ``N``; every cloud (generated and reference alike) is normalised by its own bounding box: centre at 0, largest
  half-extent 1 (:func:`normalise_cloud`).
* Chamfer distance, the squared-L2 mean form (stated: this is PointFlow's form, **not** multiplied by 10^3):

  .. math::
      \mathrm{CD}(X, Y) = \frac1{|X|}\sum_{x\in X}\min_{y\in Y}\|x-y\|^2
      + \frac1{|Y|}\sum_{y\in Y}\min_{x\in X}\|x-y\|^2.

* EMD: :math:`\min_\varphi \frac1{|X|}\sum_x \|x - \varphi(x)\|_2` over bijections (exact assignment,
  ``scipy.optimize.linear_sum_assignment``; use ``N <= 1024`` and a subset of shapes).
* Set metrics for a distance ``D`` between generated :math:`S_g` and reference :math:`S_r`:
  MMD :math:`= \frac1{|S_r|}\sum_{Y\in S_r}\min_{X\in S_g} D(X, Y)` (lower better);
  COV :math:`= |\{\arg\min_{Y\in S_r} D(X,Y) : X\in S_g\}| / |S_r|` (higher better);
  1-NNA: leave-one-out 1-NN accuracy on :math:`S_g\cup S_r` (ideal 50 %).
* Validity: the mesh is non-empty, closed (watertight) and a single connected component.
* Representation fidelity: Chamfer-L1 (mean unsquared NN distance, averaged both ways) and F-score at
  :math:`\tau = 0.01`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from flowsci.domains.shapes.mosaic import farthest_point_sampling
from flowsci.errors import InputError

__all__ = [
    "chamfer_distance",
    "chamfer_l1",
    "cloud_set",
    "coverage_mmd_1nna",
    "emd",
    "evaluate",
    "fscore",
    "is_valid",
    "normalise_cloud",
    "num_components",
    "pairwise_chamfer",
    "sample_points",
    "shape_statistics",
    "validity_rate",
]


def sample_points(shape: Any, num: int = 2048, seed: int = 0, oversample: int = 4) -> np.ndarray:
    """``num`` surface points of a mesh (area-weighted ``oversample * num`` samples, then FPS) -> ``[num, 3]``.

    A point cloud (no faces) is sub-sampled by FPS; an empty shape gives ``[0, 3]``.

    Raises:
        InputError: a point cloud with fewer than ``num`` points. Padding it by repetition would compare a sparse
            cloud with dense references: its Chamfer distances to other sparse clouds grow, so in 1-NNA its nearest
            neighbour tends to be a reference and the sparse set looks like the data. Generate ``num`` points or
            evaluate at a smaller ``num``.

    """
    verts = np.asarray(getattr(shape, "vertices", np.zeros((0, 3))), dtype=np.float64)
    if len(verts) == 0:
        return np.zeros((0, 3))
    if hasattr(shape, "faces") and len(shape.faces):
        import trimesh

        pts, _ = trimesh.sample.sample_surface(shape, oversample * num, seed=seed)
        pts = np.asarray(pts, dtype=np.float64)
    else:
        pts = verts
        if len(pts) < num:
            raise InputError(
                "point cloud", f"has {len(pts)} points, fewer than the {num} per shape of the metric; generate at "
                f"least {num} points or evaluate with num_points <= {len(pts)}"
            )  # fmt: skip
    return pts[farthest_point_sampling(pts, num, seed=seed)]


def normalise_cloud(points: np.ndarray) -> np.ndarray:
    """Centre the bounding box at 0 and scale its largest half-extent to 1."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 0:
        return p
    lo, hi = p.min(0), p.max(0)
    return (p - (lo + hi) / 2) / max(float((hi - lo).max()) / 2, 1e-12)


def chamfer_distance(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Squared-L2 mean Chamfer distance (module docstring) between ``[N, 3]`` and ``[M, 3]``."""
    a, b = torch.as_tensor(np.asarray(x), dtype=torch.float64), torch.as_tensor(np.asarray(y), dtype=torch.float64)
    d = torch.cdist(a, b).pow(2)
    return float(d.min(1).values.mean() + d.min(0).values.mean())


def pairwise_chamfer(xs: torch.Tensor, ys: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """All Chamfer distances between clouds ``xs [A, N, 3]`` and ``ys [B, M, 3]`` -> ``[A, B]`` (float64)."""
    xs, ys = xs.double(), ys.double()
    out = torch.empty(xs.shape[0], ys.shape[0], dtype=torch.float64)
    for i in range(xs.shape[0]):
        for j in range(0, ys.shape[0], chunk):
            yb = ys[j : j + chunk]
            d = torch.cdist(xs[i].expand(yb.shape[0], -1, -1), yb).pow(2)  # [b, N, M]
            out[i, j : j + chunk] = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    return out


def emd(x: np.ndarray, y: np.ndarray) -> float:
    """Exact EMD (mean matched Euclidean distance, equal sizes) by linear assignment."""
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"EMD needs clouds of equal size, got {a.shape} and {b.shape}")
    cost = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    r, c = linear_sum_assignment(cost)
    return float(cost[r, c].mean())


def coverage_mmd_1nna(d_gr: np.ndarray, d_gg: np.ndarray, d_rr: np.ndarray) -> dict[str, float]:
    """MMD, COV and 1-NNA from distance matrices ``gen x ref``, ``gen x gen``, ``ref x ref``.

    Returns:
        ``{"mmd", "cov", "1nna"}`` (COV and 1-NNA as fractions in [0, 1]).

    """
    d_gr, d_gg, d_rr = (np.asarray(m, dtype=np.float64) for m in (d_gr, d_gg, d_rr))
    g, r = d_gr.shape
    finite = np.isfinite(d_gr).any(1)  # generated shapes that could be scored (empty ones cannot)
    mmd = float(d_gr.min(0).mean())
    cov = float(len(np.unique(d_gr[finite].argmin(1))) / r) if finite.any() else 0.0
    big = np.inf
    dg = d_gg.copy()
    np.fill_diagonal(dg, big)
    dr = d_rr.copy()
    np.fill_diagonal(dr, big)
    # generated point correct if its NN (excluding itself) is generated; reference likewise
    gen_ok = (dg.min(1) < d_gr.min(1)) | ~finite  # an unscorable sample counts as told apart
    ref_ok = dr.min(1) < d_gr.min(0)
    nna = float((gen_ok.sum() + ref_ok.sum()) / (g + r))
    return {"mmd": mmd, "cov": cov, "1nna": nna}


def num_components(mesh: Any) -> int:
    """Connected components of a mesh's faces (face adjacency); 0 for a mesh without faces."""
    import trimesh

    return len(trimesh.graph.connected_components(mesh.face_adjacency, nodes=np.arange(len(mesh.faces))))


def is_valid(mesh: Any) -> bool:
    """Non-empty, closed (watertight) and one connected component; point clouds: non-empty and finite."""
    verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))))
    if len(verts) == 0 or not np.isfinite(verts).all():
        return False
    if not hasattr(mesh, "faces"):
        return True
    if len(mesh.faces) == 0 or not mesh.is_watertight:
        return False
    return num_components(mesh) == 1


def validity_rate(meshes: Sequence[Any]) -> float:
    """Fraction of :func:`is_valid` meshes."""
    return float(np.mean([is_valid(m) for m in meshes])) if len(meshes) else 0.0


def shape_statistics(shapes: Any) -> Any:
    r"""Simple per-shape statistics for diagnosing *which* property separates generated from reference shapes.

    The point-cloud metrics normalise every cloud by its bounding box, so what they see of a shape is its aspect
    (the bounding-box half-extents relative to the largest) and how it fills that box. Per shape:

    * ``ext_x``, ``ext_y``, ``ext_z`` — bounding-box half-extents divided by the largest one (in ``(0, 1]``; the
      procedural classes are upright along ``y``, so ``ext_y`` is a cylinder's height over its largest extent);
    * ``fill`` — enclosed volume over bounding-box volume (box 1, cylinder :math:`\pi/4`, sphere
      :math:`\pi/6`; rounded edges and dents lower it); NaN for a mesh that is not watertight;
    * ``components`` — connected components of the mesh (0 for an empty shape, 1 for a point cloud).

    Args:
        shapes: A :class:`~flowsci.domains.shapes.data.ShapeSet`, a
            :class:`~flowsci.domains.shapes.flow.ShapeSolution` or a list of meshes.

    Returns:
        A ``pandas.DataFrame`` with one row per shape: ``label`` (class name, or ``None``), the columns above;
        an empty shape has NaN statistics.

    """
    import pandas as pd

    s = _as_set(shapes)
    names = list(s.class_names)
    rows = []
    for i, mesh in enumerate(s.meshes):
        label = None if s.labels is None else (names[s.labels[i]] if s.labels[i] < len(names) else str(s.labels[i]))
        verts = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), dtype=np.float64)
        row: dict[str, Any] = {"label": label, "ext_x": np.nan, "ext_y": np.nan, "ext_z": np.nan, "fill": np.nan}
        row["components"] = 0
        if len(verts):
            half = (verts.max(0) - verts.min(0)) / 2
            big = max(float(half.max()), 1e-12)
            row.update(ext_x=half[0] / big, ext_y=half[1] / big, ext_z=half[2] / big)
            faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))))
            if len(faces):
                if mesh.is_watertight:
                    row["fill"] = abs(float(mesh.volume)) / float(np.prod(2 * np.maximum(half, 1e-12)))
                row["components"] = num_components(mesh)
            else:
                row["components"] = 1
        rows.append(row)
    return pd.DataFrame(rows, columns=["label", "ext_x", "ext_y", "ext_z", "fill", "components"])


def chamfer_l1(x: np.ndarray, y: np.ndarray) -> float:
    """Chamfer-L1: mean unsquared NN distance, averaged over both directions."""
    from scipy.spatial import cKDTree

    return float(0.5 * (cKDTree(y).query(x)[0].mean() + cKDTree(x).query(y)[0].mean()))


def fscore(x: np.ndarray, y: np.ndarray, tau: float = 0.01) -> float:
    """F-score at threshold ``tau``: harmonic mean of precision (x near y) and recall (y near x)."""
    from scipy.spatial import cKDTree

    p = float((cKDTree(y).query(x)[0] < tau).mean())
    r = float((cKDTree(x).query(y)[0] < tau).mean())
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def cloud_set(shapes: Sequence[Any], num_points: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Normalised clouds ``[S, N, 3]`` of the shapes and a mask of the non-empty ones (empty -> zeros)."""
    clouds = np.zeros((len(shapes), num_points, 3))
    ok = np.zeros(len(shapes), dtype=bool)
    for i, s in enumerate(shapes):
        pts = sample_points(s, num_points, seed=seed + i)
        if len(pts):
            clouds[i], ok[i] = normalise_cloud(pts), True
    return torch.as_tensor(clouds), ok


def _as_set(obj: Any) -> Any:
    from flowsci.domains.shapes.data import ShapeSet

    if isinstance(obj, ShapeSet):
        return obj
    if hasattr(obj, "to_shapeset"):
        return obj.to_shapeset()
    return ShapeSet(list(obj), None, ())


def evaluate(
    samples: Any, reference: Any, num_points: int = 2048, emd_subset: int = 0, emd_points: int = 512, seed: int = 0
) -> Any:
    """Score generated shapes against reference shapes; one row per class plus ``"all"``.

    Args:
        samples: A :class:`~flowsci.domains.shapes.flow.ShapeSolution`, a
            :class:`~flowsci.domains.shapes.data.ShapeSet` or a list of meshes.
        reference: The same kinds (labels are needed for per-class rows).
        num_points: Points per cloud ``N``.
        emd_subset: Also compute MMD/COV/1-NNA with EMD on the first ``emd_subset`` shapes of each set (0: off).
        emd_points: Points per cloud for EMD.
        seed: Seed of the surface sampling.

    Returns:
        A ``pandas.DataFrame`` indexed by class (``"all"`` first) with columns ``n_gen``, ``n_ref``, ``mmd_cd``,
        ``cov_cd``, ``1nna_cd`` (fractions), ``validity`` and, with ``emd_subset``, ``mmd_emd``, ``cov_emd``,
        ``1nna_emd``. Empty samples count against validity, never cover a reference and count as told apart
        in 1-NNA.

    """
    import pandas as pd

    gen, ref = _as_set(samples), _as_set(reference)
    if len(gen) == 0 or len(ref) == 0:
        raise ValueError("evaluate needs at least one generated and one reference shape")
    cg, okg = cloud_set(gen.meshes, num_points, seed)
    cr, _ = cloud_set(ref.meshes, num_points, seed + 100_000)
    d_gr = pairwise_chamfer(cg, cr).numpy()
    d_gg = pairwise_chamfer(cg, cg).numpy()
    d_rr = pairwise_chamfer(cr, cr).numpy()
    d_gr[~okg] = np.inf
    d_gg[~okg] = np.inf
    d_gg[:, ~okg] = np.inf
    valid = np.array([is_valid(m) for m in gen.meshes])
    groups: list[tuple[str, np.ndarray, np.ndarray]] = [("all", np.arange(len(gen)), np.arange(len(ref)))]
    if gen.labels is not None and ref.labels is not None:
        names = list(ref.class_names) or list(gen.class_names)
        for c in sorted(set(ref.labels)):
            gi = np.flatnonzero(np.asarray(gen.labels) == c)
            ri = np.flatnonzero(np.asarray(ref.labels) == c)
            if len(gi) and len(ri):
                groups.append((names[c] if c < len(names) else str(c), gi, ri))
    rows = {}
    for name, gi, ri in groups:
        row = coverage_mmd_1nna(d_gr[np.ix_(gi, ri)], d_gg[np.ix_(gi, gi)], d_rr[np.ix_(ri, ri)])
        rows[name] = {
            "n_gen": len(gi),
            "n_ref": len(ri),
            "mmd_cd": row["mmd"],
            "cov_cd": row["cov"],
            "1nna_cd": row["1nna"],
            "validity": float(valid[gi].mean()),
        }
    if emd_subset:
        m = min(emd_subset, len(gen), len(ref))
        eg, _ = cloud_set(gen.meshes[:m], emd_points, seed)
        er, _ = cloud_set(ref.meshes[:m], emd_points, seed + 100_000)

        def mat(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
            return np.array([[emd(x.numpy(), y.numpy()) for y in b] for x in a])

        e = coverage_mmd_1nna(mat(eg, er), mat(eg, eg), mat(er, er))
        rows["all"].update({"mmd_emd": e["mmd"], "cov_emd": e["cov"], "1nna_emd": e["1nna"]})
    return pd.DataFrame.from_dict(rows, orient="index")
