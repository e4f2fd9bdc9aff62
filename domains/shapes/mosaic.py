r"""Mosaic-SDF (Yariv et al., CVPR 2024): a shape as a set of ``n`` local ``k^3`` SDF grids near its surface.

A mosaic is :math:`X = \{(p_i, s_i, V_i)\}_{i=1}^n` with centre :math:`p_i \in \mathbb{R}^3`, half-width
:math:`s_i > 0` and values :math:`V_i \in \mathbb{R}^{k\times k\times k}` sampled at the nodes
:math:`p_i + s_i G`, :math:`G = \{-1, -1 + h, \dots, 1\}^3`, :math:`h = 2/(k-1)`. Its matrix form is
:math:`X \in \mathbb{R}^{n \times (3 + 1 + k^3)}` (rows ``[p, s, vec(V)]``, ``V`` flattened in ``ij`` order:
node ``(a, b, c)`` sits at ``p + s (G_a, G_b, G_c)``).

The global SDF blends the local trilinear interpolants :math:`F_i(x) = \mathrm{Trilerp}((x - p_i)/s_i; V_i)` with
L∞ tent weights normalised to a partition of unity,

.. math::
    \hat w_i(x) = \max\!\big(0,\, 1 - \|x - p_i\|_\infty / s_i\big),\qquad
    F(x; X) = \frac{\sum_i \hat w_i(x) F_i(x)}{\sum_j \hat w_j(x)},

and reads as the positive constant ``outside`` where no grid covers ``x`` (so marching cubes closes the surface
whenever the covered band contains the zero set). Sign convention everywhere in this package: **negative
inside**.

Fitting (:meth:`MosaicSDF.fit`): farthest-point centres on the surface, one shared half-width
``s = alpha * r`` (``r`` = covering radius of the centres over dense surface samples), values from the true SDF at
the nodes, then optionally Adam on :math:`\frac1{|Y|}\sum_Y |F(y) - S(y)| + \lambda \frac1{|Y_0|}\sum_{Y_0}
\|\nabla F(y) - N(y)\|_1` (surface + near-surface samples ``Y``, surface samples ``Y_0`` with normals ``N``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowsci.errors import InputError, require
from flowsci.io import atomic_write

__all__ = [
    "MosaicCache",
    "MosaicSDF",
    "default_cache_dir",
    "farthest_point_sampling",
    "fit_many",
    "marching_cubes_mesh",
    "mosaic_sdf",
    "patch_disagreement",
]

SdfFn = Callable[[np.ndarray], np.ndarray]
"""``sdf(points [Q, 3]) -> [Q]`` signed distance, negative inside."""


def farthest_point_sampling(points: np.ndarray | Tensor, num: int, seed: int = 0) -> np.ndarray:
    """Indices of ``num`` farthest points of ``points`` ``[N, 3]`` (greedy FPS from a seeded random start).

    Written here (O(N·num), vectorised in torch) because the FPS libraries on PyPI are either CUDA-only or not in
    our dependency set.

    Returns:
        ``[num]`` int64 indices (all ``N`` indices if ``num >= N``).

    """
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    n = pts.shape[0]
    if num >= n:
        return np.arange(n)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.empty(num, dtype=torch.long)
    idx[0] = torch.randint(n, (1,), generator=gen)
    dist = ((pts - pts[idx[0]]) ** 2).sum(-1)
    for i in range(1, num):
        idx[i] = torch.argmax(dist)
        dist = torch.minimum(dist, ((pts - pts[idx[i]]) ** 2).sum(-1))
    return idx.numpy()


def _grid_offsets(k: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Reference lattice ``G`` as ``[k^3, 3]`` points in ``[-1, 1]^3`` (``ij`` order)."""
    g = torch.linspace(-1.0, 1.0, k, dtype=dtype)
    return torch.stack(torch.meshgrid(g, g, g, indexing="ij"), dim=-1).reshape(-1, 3)


def _trilerp(values: Tensor, patch: Tensor, rel: Tensor) -> Tensor:
    """Trilinear interpolation of patch grids.

    Args:
        values: ``[n, k, k, k]`` grid values.
        patch: ``[m]`` patch index of each query.
        rel: ``[m, 3]`` query positions in patch coordinates ``[-1, 1]^3``.

    Returns:
        ``[m]`` interpolated values.

    """
    k = values.shape[-1]
    flat = values.reshape(values.shape[0], -1)
    g = ((rel.clamp(-1.0, 1.0) + 1.0) * 0.5) * (k - 1)
    i0 = g.detach().floor().clamp(0, k - 2).long()
    f = g - i0.to(g.dtype)
    out = torch.zeros(rel.shape[0], dtype=values.dtype, device=values.device)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                lin = ((i0[:, 0] + dx) * k + (i0[:, 1] + dy)) * k + (i0[:, 2] + dz)
                out = out + wx * wy * wz * flat[patch, lin]
    return out


def mosaic_sdf(
    x: Tensor, centers: Tensor, scales: Tensor, values: Tensor, outside: float = 1.0, chunk: int = 2_000_000
) -> Tensor:
    """Evaluate the partition-of-unity blend :math:`F(x; X)` (differentiable in ``x`` and every parameter).

    Args:
        x: Query points ``[Q, 3]``.
        centers: ``[n, 3]``.
        scales: Half-widths ``[n]`` (> 0).
        values: ``[n, k, k, k]``.
        outside: Value where no patch covers ``x``.
        chunk: Work size per chunk (queries × patches).

    Returns:
        ``[Q]`` signed distances (negative inside).

    """
    n = centers.shape[0]
    rows = max(1, chunk // max(n, 1))
    outs = []
    for start in range(0, x.shape[0], rows):
        xc = x[start : start + rows]
        rel = (xc[:, None, :] - centers[None]) / scales[None, :, None]  # [q, n, 3]
        w = (1.0 - rel.abs().amax(-1)).clamp_min(0.0)  # [q, n]
        qi, pi = torch.nonzero(w.detach() > 0, as_tuple=True)
        val = _trilerp(values, pi, rel[qi, pi])
        wq = w[qi, pi]
        num = torch.zeros(xc.shape[0], dtype=x.dtype, device=x.device).index_add(0, qi, wq * val)
        den = torch.zeros(xc.shape[0], dtype=x.dtype, device=x.device).index_add(0, qi, wq)
        covered = den > 0
        outs.append(torch.where(covered, num / den.clamp_min(1e-12), torch.full_like(num, outside)))
    return torch.cat(outs) if outs else x.new_zeros(0)


def patch_disagreement(mosaic: MosaicSDF, samples_per_patch: int = 20, seed: int = 0) -> float:
    r"""How much overlapping patches disagree: :math:`\sum w_i |F_i(x) - F(x)| / \sum w_i` over covered points.

    ``samples_per_patch`` uniform points in every patch cube; each covering patch's trilinear value
    :math:`F_i(x)` is compared with the blend :math:`F(x)`, weighted by its tent weight :math:`\hat w_i(x)`.
    A mosaic fitted to one SDF disagrees only by interpolation error; generated mosaics whose patches are
    individually plausible but do not fit their neighbours (the source of spurious fragments) score higher.

    Returns:
        The weighted mean absolute disagreement (SDF units).

    """
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(mosaic.n, samples_per_patch, 3, generator=gen) * 2 - 1
    pts = (mosaic.centers[:, None] + mosaic.scales[:, None, None] * u).reshape(-1, 3)
    blend = mosaic.sdf(pts)
    rel = (pts[:, None] - mosaic.centers[None]) / mosaic.scales[None, :, None]
    w = (1.0 - rel.abs().amax(-1)).clamp_min(0.0)
    qi, pi = torch.nonzero(w > 0, as_tuple=True)
    val = _trilerp(mosaic.values, pi, rel[qi, pi])
    wq = w[qi, pi]
    return float(((val - blend[qi]).abs() * wq).sum() / wq.sum().clamp_min(1e-12))


def marching_cubes_mesh(grid: np.ndarray, lo: Sequence[float], spacing: float) -> Any:
    """Zero level set of a ``[R, R, R]`` SDF grid (negative inside) as a ``trimesh.Trimesh`` (empty if none).

    The grid is padded with a positive value so the surface is closed even where it touches the box.
    """
    trimesh = require("trimesh", "shapes")
    measure = require("skimage.measure", "shapes")
    pad = float(max(np.nanmax(np.abs(grid)), spacing)) if grid.size else 1.0
    g = np.pad(np.nan_to_num(grid, nan=pad), 1, constant_values=pad)
    if not (g.min() < 0 < g.max()):
        return trimesh.Trimesh()
    verts, faces, _, _ = measure.marching_cubes(g, level=0.0, spacing=(spacing,) * 3)
    verts = verts + np.asarray(lo, dtype=np.float64) - spacing
    # skimage orients faces so normals point to increasing values (outside): keep as is
    return trimesh.Trimesh(vertices=verts, faces=faces[:, ::-1], process=True)


@dataclass
class MosaicSDF:
    """A fitted Mosaic-SDF: ``centers [n, 3]``, ``scales [n]``, ``values [n, k, k, k]`` (float32 tensors).

    Attributes:
        centers: Patch centres :math:`p_i`.
        scales: Half-widths :math:`s_i`.
        values: Grid values :math:`V_i` (signed distances, negative inside).
        outside: Value of :math:`F` where no patch covers a point.

    """

    centers: Tensor
    scales: Tensor
    values: Tensor
    outside: float = 1.0

    def __post_init__(self) -> None:
        self.centers = torch.as_tensor(self.centers, dtype=torch.float32)
        self.scales = torch.as_tensor(self.scales, dtype=torch.float32).reshape(-1)
        self.values = torch.as_tensor(self.values, dtype=torch.float32)
        n = self.centers.shape[0]
        if self.centers.shape != (n, 3) or self.scales.shape != (n,) or self.values.dim() != 4:
            raise ValueError(
                f"MosaicSDF: inconsistent shapes centers {tuple(self.centers.shape)}, scales "
                f"{tuple(self.scales.shape)}, values {tuple(self.values.shape)}"
            )
        k = self.values.shape[-1]
        if self.values.shape != (n, k, k, k) or k < 2:
            raise ValueError(f"MosaicSDF: values must be [n, k, k, k] with k >= 2, got {tuple(self.values.shape)}")

    # ----------------------------------------------------------------- shape
    @property
    def n(self) -> int:
        """Number of patches."""
        return int(self.centers.shape[0])

    @property
    def k(self) -> int:
        """Grid size per axis."""
        return int(self.values.shape[-1])

    @property
    def dim(self) -> int:
        """Row size of the matrix form, :math:`3 + 1 + k^3`."""
        return 4 + self.k**3

    # ----------------------------------------------------------------- matrix form
    def to_matrix(self) -> Tensor:
        """The ``[n, 3 + 1 + k^3]`` matrix ``[p, s, vec(V)]``."""
        return torch.cat([self.centers, self.scales[:, None], self.values.reshape(self.n, -1)], dim=1)

    @classmethod
    def from_matrix(cls, matrix: Tensor | np.ndarray, min_scale: float = 1e-3, outside: float = 1.0) -> MosaicSDF:
        """Rebuild from the matrix form (generated matrices: scales are made positive, at least ``min_scale``).

        Raises:
            InputError: not ``[n, 4 + k^3]`` for an integer ``k >= 2``, or non-finite entries.

        """
        m = torch.as_tensor(np.asarray(matrix) if not isinstance(matrix, Tensor) else matrix).float().cpu()
        if m.dim() != 2 or m.shape[1] < 12:
            raise InputError("matrix", f"must be [n, 4 + k^3] with k >= 2, got shape {tuple(m.shape)}")
        k = round((m.shape[1] - 4) ** (1 / 3))
        if 4 + k**3 != m.shape[1]:
            raise InputError("matrix", f"row size {m.shape[1]} is not 4 + k^3 for an integer k")
        if not bool(torch.isfinite(m).all()):
            raise InputError("matrix", "holds NaN or Inf")
        scales = m[:, 3].abs().clamp_min(min_scale)
        return cls(m[:, :3], scales, m[:, 4:].reshape(-1, k, k, k), outside=outside)

    # ----------------------------------------------------------------- evaluation
    def sdf(self, points: Tensor | np.ndarray) -> Tensor:
        """Signed distance :math:`F(x; X)` at ``points`` ``[Q, 3]`` (negative inside); returns ``[Q]``."""
        x = torch.as_tensor(np.asarray(points) if not isinstance(points, Tensor) else points, dtype=torch.float32)
        return mosaic_sdf(x, self.centers, self.scales, self.values, self.outside)

    def to_grid(self, resolution: int = 64, bound: float = 1.0, fill: bool = True) -> np.ndarray:
        """Evaluate :math:`F` on a ``resolution^3`` grid over ``[-bound, bound]^3`` (``ij`` order).

        Only the voxels inside some patch cube are evaluated: each patch scatters its weighted trilinear values
        into the voxels of its cube (``O(n m^3)`` with ``m`` voxels per cube side). Uncovered voxels read
        ``outside``; with ``fill``, an uncovered region enclosed by the covered band (the inside of a thick
        shape, which the surface patches do not reach) takes the sign of the band around it instead, so
        marching cubes does not create a spurious inner shell.
        """
        r = int(resolution)
        h = 2.0 * bound / (r - 1)
        num = torch.zeros(r**3, dtype=torch.float64)
        den = torch.zeros(r**3, dtype=torch.float64)
        c, s = self.centers.double(), self.scales.double()
        lo = torch.ceil((c - s[:, None] + bound) / h).long().clamp(0, r - 1)  # [n, 3]
        hi = torch.floor((c + s[:, None] + bound) / h).long().clamp(0, r - 1)
        m = int((hi - lo + 1).clamp_min(0).max().item()) if self.n else 0
        if m > 0:
            ar = torch.arange(m)
            off = torch.stack(torch.meshgrid(ar, ar, ar, indexing="ij"), -1).reshape(-1, 3)  # [m^3, 3]
            per = max(1, 4_000_000 // off.shape[0])
            for start in range(0, self.n, per):
                sl = slice(start, start + per)
                idx = lo[sl, None, :] + off[None]  # [b, m^3, 3]
                valid = (idx <= hi[sl, None, :]).all(-1)
                b_i, v_i = torch.nonzero(valid, as_tuple=True)
                ijk = idx[b_i, v_i]
                pos = ijk.double() * h - bound
                pi = b_i + start
                rel = (pos - c[pi]) / s[pi, None]
                w = (1.0 - rel.abs().amax(-1)).clamp_min(0.0)
                keep = w > 0
                pi, rel, w, ijk = pi[keep], rel[keep], w[keep], ijk[keep]
                val = _trilerp(self.values.double(), pi, rel)
                lin = (ijk[:, 0] * r + ijk[:, 1]) * r + ijk[:, 2]
                num.index_add_(0, lin, w * val)
                den.index_add_(0, lin, w)
        grid = torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, self.outside))
        grid = grid.reshape(r, r, r).numpy()
        return _sign_uncovered(grid, (den > 0).reshape(r, r, r).numpy(), self.outside) if fill else grid

    def to_mesh(self, resolution: int = 64, bound: float = 1.1) -> Any:
        """Marching-cubes mesh of the zero level set (``trimesh.Trimesh``; empty if the field has no zero set)."""
        grid = self.to_grid(resolution, bound)
        return marching_cubes_mesh(grid, (-bound,) * 3, 2.0 * bound / (resolution - 1))

    # ----------------------------------------------------------------- fitting
    @classmethod
    def fit(
        cls,
        mesh: Any,
        n: int = 128,
        k: int = 5,
        *,
        sdf: SdfFn | None = None,
        alpha: float = 1.5,
        surface_samples: int | None = None,
        steps: int = 0,
        lr: float = 1e-3,
        normal_weight: float = 0.1,
        seed: int = 0,
    ) -> MosaicSDF:
        """Fit a mosaic to a (normalised) mesh.

        Args:
            mesh: A ``trimesh.Trimesh`` inside ``[-1, 1]^3`` (see :func:`flowsci.domains.shapes.data.normalise`).
            n: Number of patches.
            k: Grid size per axis.
            sdf: Ground-truth SDF (negative inside); default :func:`flowsci.domains.shapes.data.sdf_oracle`.
            alpha: Shared half-width as a multiple of the centres' covering radius of the surface.
            surface_samples: Dense surface samples for FPS (default ``max(20 n, 4096)``).
            steps: Adam steps of the optional fine-tuning of ``(p, log s, V)`` (0: initialisation only, which
                the unofficial implementations report as nearly as good).
            lr: Adam learning rate of the fine-tuning.
            normal_weight: :math:`\\lambda` of the normal loss.
            seed: Seed of the surface sampling and FPS start.

        Raises:
            InputError: empty mesh (no faces) or ``n``/``k`` out of range.

        """
        from scipy.spatial import cKDTree

        if n < 1 or k < 2:
            raise InputError("n/k", f"need n >= 1 and k >= 2, got n={n}, k={k}")
        if mesh is None or len(getattr(mesh, "faces", ())) == 0:
            raise InputError("mesh", "has no faces; nothing to fit")
        if sdf is None:
            from flowsci.domains.shapes.data import sdf_oracle

            sdf = sdf_oracle(mesh)
        trimesh = require("trimesh", "shapes")
        count = surface_samples or max(20 * n, 4096)
        pts, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
        pts = np.asarray(pts, dtype=np.float32)
        centers = pts[farthest_point_sampling(pts, n, seed=seed)]
        if len(centers) < n:  # tiny meshes: repeat centres (still a valid mosaic)
            centers = centers[np.arange(n) % len(centers)]
        radius = float(cKDTree(centers).query(pts)[0].max())
        s = max(alpha * radius, 1e-3)
        scales = np.full(n, s, dtype=np.float32)
        nodes = centers[:, None, :] + scales[:, None, None] * _grid_offsets(k).numpy()[None]
        values = np.asarray(sdf(nodes.reshape(-1, 3)), dtype=np.float32).reshape(n, k, k, k)
        mosaic = cls(torch.from_numpy(centers), torch.from_numpy(scales), torch.from_numpy(values))
        if steps > 0:
            mosaic._finetune(mesh, sdf, steps, lr, normal_weight, seed)
        return mosaic

    def _finetune(self, mesh: Any, sdf: SdfFn, steps: int, lr: float, normal_weight: float, seed: int) -> None:
        """Adam on the L1 SDF loss plus the L1 normal loss (re-sampling the targets every step)."""
        trimesh = require("trimesh", "shapes")
        rng = np.random.default_rng(seed)
        p = self.centers.clone().requires_grad_(True)
        log_s = self.scales.log().clone().requires_grad_(True)
        v = self.values.clone().requires_grad_(True)
        opt = torch.optim.Adam([p, log_s, v], lr=lr)
        m = 2048
        for step in range(steps):
            surf, fid = trimesh.sample.sample_surface(mesh, m, seed=int(rng.integers(2**31)))
            normals = np.asarray(mesh.face_normals[fid], dtype=np.float32)
            near = surf + rng.normal(scale=0.02, size=surf.shape)
            y = np.concatenate([surf, near]).astype(np.float32)
            target = torch.as_tensor(np.asarray(sdf(y), dtype=np.float32))
            y0 = torch.as_tensor(surf, dtype=torch.float32).requires_grad_(True)
            pred = mosaic_sdf(torch.as_tensor(y), p, log_s.exp(), v, self.outside)
            f0 = mosaic_sdf(y0, p, log_s.exp(), v, self.outside)
            (grad,) = torch.autograd.grad(f0.sum(), y0, create_graph=True)
            loss = (pred - target).abs().mean() + normal_weight * (grad - torch.as_tensor(normals)).abs().sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            del step
        self.centers, self.scales, self.values = p.detach(), log_s.detach().exp(), v.detach()

    # ----------------------------------------------------------------- files (npz, never pickled)
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.npz`` (``centers``, ``scales``, ``values``, ``outside``) atomically."""
        arrays = {
            "centers": self.centers.numpy(),
            "scales": self.scales.numpy(),
            "values": self.values.numpy(),
            "outside": np.float32(self.outside),
        }
        return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))

    @classmethod
    def load(cls, path: str | os.PathLike) -> MosaicSDF:
        """Read a mosaic written by :meth:`save` (``allow_pickle=False``).

        Raises:
            InputError: missing, truncated, not an npz, missing arrays or non-finite values.

        """
        arrays = _read_npz(path, ("centers", "scales", "values"))
        try:
            out = cls(arrays["centers"], arrays["scales"], arrays["values"], float(arrays.get("outside", 1.0)))
        except ValueError as err:
            raise InputError(path, str(err)) from err
        return out


def _sign_uncovered(grid: np.ndarray, covered: np.ndarray, outside: float) -> np.ndarray:
    """Give each enclosed uncovered region the sign of the covered voxels bordering it (see ``to_grid``)."""
    from scipy import ndimage

    labels, num = ndimage.label(~covered)
    if num == 0:
        return grid
    border = np.unique(np.concatenate([f.ravel() for f in _faces(labels)]))
    out = grid.copy()
    ring_src = ndimage.binary_dilation(~covered) & covered
    near, idx = ndimage.distance_transform_edt(~ring_src, return_indices=True)
    del near
    for comp in range(1, num + 1):
        if comp in border:
            continue
        mask = labels == comp
        vals = grid[tuple(i[mask] for i in idx)]  # nearest bordering covered voxel of each member
        if vals.mean() < 0:
            out[mask] = -outside
    return out


def _faces(a: np.ndarray) -> list[np.ndarray]:
    return [a[0], a[-1], a[:, 0], a[:, -1], a[:, :, 0], a[:, :, -1]]


def _read_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` read without pickle; ONE :class:`InputError` for every problem."""
    import zipfile

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise InputError(p, f"not a readable .npz file (truncated or another format): {err}") from err
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise InputError(p, f"missing arrays {missing}; has {sorted(arrays)}")
    for key, arr in arrays.items():
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            raise InputError(p, f"array {key!r} holds NaN or Inf")
    return arrays


# --------------------------------------------------------------------------------------------- parallel fitting
def default_cache_dir() -> Path:
    """``$FLOWSCI_CACHE/shapes`` or ``~/.cache/flowsci/shapes`` (outside the repository, never committed)."""
    root = os.environ.get("FLOWSCI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flowsci")
    return Path(root) / "shapes"


class MosaicCache:
    """Fitted mosaic datasets on disk as ``.npz`` keyed by a hash of everything that determines them.

    Args:
        root: Folder (default :func:`default_cache_dir`).

    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    @staticmethod
    def key(params: dict[str, Any]) -> str:
        """Stable 16-hex key of a JSON-able parameter dict."""
        return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def path(self, key: str) -> Path:
        """File of ``key``."""
        return self.root / f"mosaics-{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """Arrays of ``key`` or ``None`` (a corrupt entry is ignored and refitted)."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return _read_npz(p, ("matrices",))
        except InputError:
            return None

    def save(self, key: str, **arrays: np.ndarray) -> Path:
        """Store arrays under ``key`` (atomic)."""
        return atomic_write(self.path(key), lambda tmp: np.savez(tmp, **arrays))


def fit_many(
    job: Callable[[Any], np.ndarray],
    items: Sequence[Any],
    *,
    client: Any = None,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "fitting mosaics",
) -> list[Any]:
    """Run ``job(item)`` for every item in parallel with a progress bar; results in input order.

    Args:
        job: A picklable top-level function (e.g. :func:`flowsci.domains.shapes.data.fit_item`).
        items: Its inputs.
        client: A ``dask.distributed.Client`` (a Dask cluster; Ray clusters via ``ray.util.dask``) or any
            ``concurrent.futures.Executor``; ``None`` uses local processes.
        workers: Local processes when ``client`` is ``None`` (default: the CPU count for 64 items or more, else
            ``1``, which runs in this process).
        progress: Show a tqdm bar.
        desc: Bar label.

    Returns:
        ``[job(item) for item in items]`` (a failed item's exception is returned in its place, so the caller can
        report and skip it).

    """
    from tqdm.auto import tqdm

    items = list(items)
    results: list[Any] = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False)
    if workers is None:  # spawning processes costs seconds: only worth it for many items
        workers = (os.cpu_count() or 1) if len(items) >= 64 else 1
    try:
        if client is None and (workers <= 1 or len(items) <= 1):
            for i, item in enumerate(items):
                results[i] = _safe(job, item, set_threads=False)
                bar.update()
            return results
        if client is not None and hasattr(client, "gather") and hasattr(client, "scheduler_info"):
            from distributed import as_completed

            futures = client.map(_safe, [job] * len(items), items, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in as_completed(futures):
                results[index[fut.key]] = fut.result()
                bar.update()
            return results
        import concurrent.futures as cf
        import multiprocessing as mp

        executor = client or cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        try:
            futs = {executor.submit(_safe, job, item): i for i, item in enumerate(items)}
            for fut in cf.as_completed(futs):
                results[futs[fut]] = fut.result()
                bar.update()
        finally:
            if client is None:
                executor.shutdown()
        return results
    finally:
        bar.close()


def _safe(job: Callable[[Any], Any], item: Any, set_threads: bool = True) -> Any:
    if set_threads:  # one thread per worker process: the pool provides the parallelism
        torch.set_num_threads(1)
    try:
        return job(item)
    except Exception as err:  # reported and skipped by the caller
        return err


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowsci.domains.shapes.mosaic MESHES OUT [--n 128 --k 5 --steps 0 --workers N --scheduler ADDR]``.

    Fits every mesh of the folder ``MESHES`` and writes ``OUT/<name>.npz`` per mesh (:meth:`MosaicSDF.save` format)
    plus ``OUT/skipped.txt`` listing the files that could not be read, with the reason.
    """
    import argparse

    from flowsci.domains.shapes.data import list_meshes

    p = argparse.ArgumentParser(prog="python -m flowsci.domains.shapes.mosaic", description=main.__doc__)
    p.add_argument("meshes", help="folder of .obj/.ply/.stl/.off/.glb files")
    p.add_argument("out", help="output folder of .npz mosaics")
    p.add_argument("--n", type=int, default=128)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--steps", type=int, default=0, help="Adam fine-tuning steps per shape")
    p.add_argument("--workers", type=int, default=None, help="local processes (default: CPU count)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786) instead of processes")
    a = p.parse_args(argv)
    files = list_meshes(a.meshes)
    items = [{"kind": "mesh", "path": str(f), "n": a.n, "k": a.k, "steps": a.steps} for f in files]
    client = None
    if a.scheduler:
        distributed = require("distributed", "shapes")
        client = distributed.Client(a.scheduler)
    from flowsci.domains.shapes.data import fit_item

    results = fit_many(fit_item, items, client=client, workers=a.workers or os.cpu_count())
    out = Path(a.out)
    skipped = []
    for f, res in zip(files, results, strict=True):
        if isinstance(res, BaseException):
            skipped.append(f"{f.name}: {res}")
            continue
        MosaicSDF.from_matrix(res).save(out / f"{f.stem}.npz")
    atomic_write(out / "skipped.txt", lambda tmp: Path(tmp).write_text("".join(s + "\n" for s in skipped)))
    print(f"fitted {len(files) - len(skipped)} of {len(files)} meshes into {out}; skipped {len(skipped)}")
    for s in skipped:
        print(f"skipped {s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
