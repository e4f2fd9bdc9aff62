r"""Single-cell RNA-seq data: validated AnnData reading, preprocessing, synthetic counts and the data module.

Preprocessing (one function for training and evaluation, scverse conventions): raw counts :math:`c_{ig}` of cell
:math:`i`, library size :math:`L_i = \sum_g c_{ig}` over *all* genes of the file, then

.. math:: x_{ig} = \log\big(1 + 10^4\, c_{ig} / L_i\big)

(``normalize_total(1e4)`` + ``log1p``) on the highly variable genes chosen on the *training cells only*
(scanpy's ``highly_variable_genes``, flavour ``seurat``). Splits are by cell, stratified by cell type.

Sparse matrices stay sparse until a batch is built; a file opened with ``backed=True`` (AnnData's backed mode)
is read row by row, so a dataset larger than memory trains without being loaded whole (HVGs are then chosen on a
seeded subsample of at most ``hvg_max_cells`` training cells).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import scipy.sparse as sp
import torch
from torch.utils.data import DataLoader, Dataset

from flowsci.errors import InputError, require

__all__ = [
    "CELL_TYPE_KEY",
    "SAMPLE_DATA",
    "COUNT_DECODERS",
    "CellDataset",
    "SingleCellDataModule",
    "log_normalize",
    "lognorm_to_counts",
    "pca",
    "read_counts",
    "sample_data_path",
    "stratified_split",
    "synthetic_counts",
]

CELL_TYPE_KEY = "cell_type"
"""``obs`` column holding the cell type in every AnnData flowsci writes."""

SAMPLE_DATA = {
    "pbmc68k": ("pbmc68k_reduced_counts.h5ad", "bulk_labels"),
    "celltypist": ("celltypist_sample_counts.h5ad", None),
}
"""Shipped data sets: name -> (file in ``sample_data/``, its label column or ``None``).

``pbmc68k``: PBMC68k-reduced raw counts, 558 cells x 765 HVGs, 10 ``bulk_labels``; ``celltypist``: CellTypist's
unlabeled sample of raw counts, 447 cells x 32,786 genes (the full genome, for HVG selection and library sizes).
"""

_MAX_CELLS = 50_000_000
_MAX_GENES = 1_000_000
_CHUNK = 10_000


def sample_data_path(name: str = "pbmc68k") -> Path:
    """Path of a data set shipped in ``flowsci/domains/singlecell/sample_data`` (see :data:`SAMPLE_DATA`)."""
    if name not in SAMPLE_DATA:
        raise InputError("path", f"unknown shipped data set {name!r}; shipped: {sorted(SAMPLE_DATA)}")
    return Path(str(resources.files("flowsci.domains.singlecell").joinpath("sample_data", SAMPLE_DATA[name][0])))


# ----------------------------------------------------------------------------------------------- reading
def _check_block(block: Any, source: str, require_counts: bool, offset: int) -> None:
    """Raise InputError for NaN/Inf, negative or (if ``require_counts``) non-integer values of a row block."""
    values = block.data if sp.issparse(block) else np.asarray(block)
    values = np.asarray(values)
    if values.dtype.kind not in "fiub":
        raise InputError(source, f"expression values must be numeric, got dtype {values.dtype}")
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise InputError(source, f"{int(bad.sum())} non-finite values (NaN or Inf) in rows from {offset}")
    if (values < 0).any():
        raise InputError(source, f"{int((values < 0).sum())} negative values in rows from {offset}; counts are >= 0")
    if require_counts and values.dtype.kind == "f" and (values != np.round(values)).any():
        frac = values[values != np.round(values)]
        raise InputError(
            source,
            f"not raw counts: {frac.size} non-integer values (e.g. {float(frac[0]):.4g}) in rows from {offset}; "
            "pass the raw UMI counts (X or a layer such as 'counts'), not log-normalised data",
        )


def read_counts(
    path: str | os.PathLike,
    *,
    layer: str | None = None,
    label_key: str | None = None,
    backed: bool = False,
    require_counts: bool = True,
) -> Any:
    """Read and validate an ``.h5ad`` file of raw counts.

    Args:
        path: The ``.h5ad`` file.
        layer: Layer holding the counts (``None``: ``X``).
        label_key: ``obs`` column of the cell type (checked to exist; ``None``: unlabeled).
        backed: Open in AnnData's backed (read-only, on-disk) mode instead of loading the matrix.
        require_counts: Reject non-integer values (the matrix must be counts).

    Returns:
        The ``anndata.AnnData`` (backed if asked).

    Raises:
        InputError: Missing/empty/unreadable file, unknown layer or obs key, no cells or genes, absurd sizes,
            duplicate gene names, NaN/Inf, negative or non-integer values.

    """
    ad = require("anndata", "singlecell")
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such .h5ad file")
    if p.stat().st_size == 0:
        raise InputError(p, "is empty (0 bytes)")
    try:
        adata = ad.read_h5ad(p, backed="r" if backed else None)
    except Exception as err:  # h5py/anndata raise many types for truncated or foreign files
        raise InputError(p, f"not a readable .h5ad file ({type(err).__name__}: {str(err)[:200]})") from err
    n, g = adata.shape
    if n == 0 or g == 0:
        raise InputError(p, f"holds no data ({n} cells x {g} genes)")
    if n > _MAX_CELLS or g > _MAX_GENES:
        raise InputError(p, f"absurd size {n} cells x {g} genes (limits {_MAX_CELLS} x {_MAX_GENES})")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()[:5].tolist()
        raise InputError(p, f"duplicate gene names {dup} (make them unique, e.g. adata.var_names_make_unique())")
    if layer is not None and layer not in adata.layers:
        raise InputError(p, f"no layer {layer!r}; layers: {sorted(adata.layers.keys())}")
    if label_key is not None:
        if label_key not in adata.obs:
            raise InputError(p, f"no obs column {label_key!r}; obs columns: {sorted(adata.obs.columns)}")
        if adata.obs[label_key].isna().any():
            raise InputError(p, f"obs column {label_key!r} has {int(adata.obs[label_key].isna().sum())} missing labels")
    matrix = adata.layers[layer] if layer is not None else adata.X
    if matrix is None:
        raise InputError(p, "has no expression matrix X")
    for start in range(0, n, _CHUNK):
        try:
            block = matrix[start : min(n, start + _CHUNK)]
        except Exception as err:
            raise InputError(p, f"cannot read rows {start}.. of the matrix ({err})") from err
        _check_block(block, str(p), require_counts, start)
    return adata


def log_normalize(counts: Any, library: np.ndarray | None = None, target_sum: float = 1e4) -> np.ndarray:
    r""":math:`\log(1 + \text{target\_sum}\cdot c_{ig} / L_i)` as a dense float32 array.

    Args:
        counts: ``[n, G]`` counts (dense or scipy sparse).
        library: ``[n]`` library sizes :math:`L_i` (default: row sums of ``counts``).
        target_sum: Counts per cell after normalisation.

    Returns:
        ``[n, G]`` float32.

    """
    dense = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    dense = dense.astype(np.float64)
    lib = dense.sum(1) if library is None else np.asarray(library, dtype=np.float64)
    return np.log1p(dense * (target_sum / np.maximum(lib, 1.0))[:, None]).astype(np.float32)


COUNT_DECODERS = ("lattice", "round", "none")
"""How generated log-normalised values become counts (see :func:`lognorm_to_counts`)."""


def lognorm_to_counts(
    x: np.ndarray,
    library: np.ndarray,
    target_sum: float = 1e4,
    decoder: str = "lattice",
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    r"""Counts for continuous log-normalised expression (the inverse of :func:`log_normalize`).

    A cell with library size :math:`L` can only take the values :math:`x_c = \log(1 + 10^4 c / L)`,
    :math:`c = 0, 1, 2, \dots` With :math:`\mu = \mathrm{expm1}(x) L / 10^4` and :math:`c_0 = \lfloor\mu\rfloor`:

    * ``"lattice"``: stochastic rounding between the two neighbouring levels, unbiased in log space:
      :math:`c = c_0 + \mathrm{Bernoulli}(p)`, :math:`p = (x - x_{c_0}) / (x_{c_0+1} - x_{c_0})`, so
      :math:`\mathbb{E}[x_c] = x`; a value already on the lattice is returned unchanged;
    * ``"round"``: the nearest count :math:`\mathrm{round}(\mu)` (deterministic; biased toward 0 for values below
      half a count, i.e. it drops most weakly expressed genes).

    Args:
        x: ``[n, G]`` log-normalised expression, clipped to :math:`[0, \log(1 + 10^4)]`.
        library: ``[n]`` library sizes :math:`L` (> 0).
        target_sum: Counts per cell after normalisation (:math:`10^4`).
        decoder: ``"lattice"`` or ``"round"`` (see :data:`COUNT_DECODERS`; ``"none"`` is not a count decoder).
        rng: Random generator of the lattice draws (default: a fresh unseeded one).

    Returns:
        ``[n, G]`` float64 non-negative whole numbers.

    Raises:
        InputError: Unknown decoder, shapes that do not match, non-positive library sizes.

    """
    if decoder not in ("lattice", "round"):
        raise InputError("decoder", f"must be 'lattice' or 'round' to make counts, got {decoder!r}")
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, np.log1p(target_sum))
    lib = np.asarray(library, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or len(lib) != x.shape[0]:
        raise InputError("library", f"needs one library size per cell: x {x.shape}, library {lib.shape}")
    if not (lib > 0).all():
        raise InputError("library", "library sizes must be > 0")
    scale = (lib / target_sum)[:, None]
    mu = np.expm1(x) * scale
    if decoder == "round":
        return np.round(mu)
    lo = np.floor(mu + 1e-6)  # a value on the lattice (up to float error) is its own lower level
    x_lo, x_hi = np.log1p(lo / scale), np.log1p((lo + 1) / scale)
    p = np.clip((x - x_lo) / (x_hi - x_lo), 0.0, 1.0)
    p[p < 1e-6] = 0.0
    rng = np.random.default_rng() if rng is None else rng
    return lo + (rng.random(x.shape) < p)


def stratified_split(labels: Sequence[Any], fractions: Sequence[float], seed: int = 0) -> list[np.ndarray]:
    """Split cell indices by type: for each type, ``round(f * n_type)`` cells go to each later part.

    Args:
        labels: ``[n]`` cell types.
        fractions: Fractions of the parts after the first (e.g. ``(0.1, 0.2)`` for validation and test); the
            first part (training) gets the rest. A type keeps at least one training cell.
        seed: Permutation seed.

    Returns:
        Sorted index arrays, first the training part.

    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for lab in sorted(set(labels.tolist()), key=str):
        idx = rng.permutation(np.flatnonzero(labels == lab))
        start = 0
        for j, f in enumerate(fractions):
            k = min(int(round(f * len(idx))), max(len(idx) - start - 1, 0))
            parts[j + 1].extend(idx[start : start + k].tolist())
            start += k
        parts[0].extend(idx[start:].tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def pca(x: np.ndarray, n_pcs: int, mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top principal axes ``[k, G]`` (float32) and their standard deviations ``[k]`` of ``x`` ``[n, G]``.

    Exact SVD of the centred matrix (what scanpy's ``pca(svd_solver="full")`` computes), with the sign of each axis
    fixed so its largest loading is positive. Done with ``torch.linalg.svd`` (it obeys ``torch.set_num_threads``;
    scanpy would pull in numba at import and numpy's BLAS ignores the thread limit on a shared machine).
    """
    mean = x.mean(0) if mean is None else mean
    k = max(1, min(n_pcs, x.shape[0] - 1, x.shape[1]))
    _, s, vt = torch.linalg.svd(torch.from_numpy(np.asarray(x - mean, dtype=np.float64)), full_matrices=False)
    vt, s = vt[:k].numpy(), s[:k].numpy()
    vt = vt * np.sign(vt[np.arange(k), np.abs(vt).argmax(1)])[:, None]
    return vt.astype(np.float32), (s / np.sqrt(max(x.shape[0] - 1, 1))).astype(np.float32)


# ----------------------------------------------------------------------------------------------- synthetic
def synthetic_counts(
    n_cells: int = 600,
    n_genes: int = 200,
    n_types: int = 4,
    n_markers: int = 10,
    marker_fold: float = 8.0,
    dispersion: float = 5.0,
    library_mean: float = 2000.0,
    seed: int = 0,
) -> Any:
    r"""A negative-binomial mixture with planted cell types and marker genes (ground truth for the metrics).

    Gene base means :math:`\mu_g \sim \mathrm{LogNormal}(0, 1)` (normalised to sum 1); cell type :math:`k` multiplies
    its ``n_markers`` marker genes (disjoint blocks ``k * n_markers ...``) by ``marker_fold``; a cell of type
    :math:`k` with library size :math:`L_i \sim \mathrm{LogNormal}(\log L, 0.3)` has counts
    :math:`c_{ig} \sim \mathrm{NB}(\text{mean}=L_i\,p_{kg},\ r=\text{dispersion})`.

    Args:
        n_cells: Cells (types drawn with probabilities proportional to ``1..n_types``, so they are unbalanced).
        n_genes: Genes (>= ``n_types * n_markers``).
        n_types: Cell types ``type0 ... type{K-1}``.
        n_markers: Marker genes per type.
        marker_fold: Fold change of a marker in its own type.
        dispersion: NB size :math:`r` (variance :math:`\mu + \mu^2/r`).
        library_mean: Median library size :math:`L`.
        seed: Seed.

    Returns:
        AnnData: ``X`` counts (CSR float32), ``obs['cell_type']``, ``var['marker_of']`` (type or ``""``),
        ``uns['markers']`` = {type: [genes]}.

    """
    ad = require("anndata", "singlecell")
    import pandas as pd

    if n_genes < n_types * n_markers:
        raise InputError("n_genes", f"needs >= n_types * n_markers = {n_types * n_markers}, got {n_genes}")
    rng = np.random.default_rng(seed)
    base = rng.lognormal(0.0, 1.0, n_genes)
    probs = np.tile(base, (n_types, 1))
    marker_of = np.array([""] * n_genes, dtype=object)
    types = [f"type{k}" for k in range(n_types)]
    for k in range(n_types):
        block = slice(k * n_markers, (k + 1) * n_markers)
        probs[k, block] *= marker_fold
        marker_of[block] = types[k]
    probs /= probs.sum(1, keepdims=True)
    weights = np.arange(1, n_types + 1, dtype=np.float64)
    y = rng.choice(n_types, size=n_cells, p=weights / weights.sum())
    lib = rng.lognormal(np.log(library_mean), 0.3, n_cells)
    mean = lib[:, None] * probs[y]
    counts = rng.negative_binomial(dispersion, dispersion / (dispersion + mean)).astype(np.float32)
    genes = [f"gene{g}" for g in range(n_genes)]
    obs = pd.DataFrame({CELL_TYPE_KEY: pd.Categorical([types[k] for k in y], categories=types)})
    obs.index = [f"cell{i}" for i in range(n_cells)]
    var = pd.DataFrame({"marker_of": marker_of.astype(str)}, index=genes)
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    adata.uns["markers"] = {t: [genes[g] for g in np.flatnonzero(marker_of == t)] for t in types}
    return adata


# ----------------------------------------------------------------------------------------------- dataset
class CellDataset(Dataset):
    """Cells of one split as ``{"x1": [G] log-normalised, "y": cell-type index}``; rows densified on access.

    Args:
        matrix: Counts ``[N, G_all]``: scipy CSR, dense array or a backed AnnData matrix (read row by row).
        rows: Indices of the split's cells in ``matrix``.
        genes: Column indices of the selected genes.
        library: ``[N]`` library sizes (over all genes) of every cell.
        labels: ``[N]`` cell-type indices.
        target_sum: Counts per cell after normalisation.

    """

    def __init__(
        self,
        matrix: Any,
        rows: np.ndarray,
        genes: np.ndarray,
        library: np.ndarray,
        labels: np.ndarray,
        target_sum: float = 1e4,
    ) -> None:
        self.matrix, self.rows, self.genes = matrix, np.asarray(rows), np.asarray(genes)
        self.library, self.labels, self.target_sum = library, labels, float(target_sum)

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self, i: int) -> np.ndarray:
        """Counts of the ``i``-th cell of the split on the selected genes, ``[G]`` float64."""
        row = self.matrix[int(self.rows[i])]
        row = row.toarray() if sp.issparse(row) else np.asarray(row)
        return np.asarray(row, dtype=np.float64).reshape(-1)[self.genes]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = int(self.rows[i])
        x = np.log1p(self.counts(i) * (self.target_sum / max(float(self.library[r]), 1.0)))
        return {"x1": torch.from_numpy(x.astype(np.float32)), "y": torch.tensor(int(self.labels[r]))}


def _row_sums(matrix: Any, n: int) -> np.ndarray:
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, _CHUNK):
        block = matrix[start : min(n, start + _CHUNK)]
        out[start : start + block.shape[0]] = np.asarray(block.sum(1)).reshape(-1)
    return out


class SingleCellDataModule(pl.LightningDataModule):
    """AnnData counts → stratified train/val/test splits of log-normalised HVG expression with cell types.

    Batches are ``{"x1": [B, G] float32 (log1p(normalize_total)), "y": [B] long (cell type)}``.

    Args:
        path: An ``.h5ad`` file of raw counts, a shipped data set name (``"pbmc68k"``: PBMC68k-reduced, 558
            cells x 765 genes, 10 types; ``"celltypist"``: 447 unlabeled cells x 32,786 genes) or ``"synthetic"``
            (:func:`synthetic_counts` with ``seed``).
        layer: Layer holding the counts (``None``: ``X``).
        label_key: ``obs`` column of the cell type (``None``: the shipped set's; unlabeled files get one type
            ``"cell"``; ``""`` forces unlabeled).
        n_top_genes: Highly variable genes kept (``None``: all genes).
        target_sum: Counts per cell after normalisation.
        val_fraction: Fraction of each type held out for validation.
        test_fraction: Fraction of each type held out for testing/evaluation.
        batch_size: Batch size.
        num_workers: DataLoader workers.
        seed: Seed of the split (and of the synthetic data).
        backed: Open the file in AnnData's backed mode (rows are read from disk per batch).
        hvg_max_cells: In backed mode, HVGs are chosen on at most this many training cells.
        n_pcs: Principal components fitted on the training cells (latent model, figures, metrics).

    """

    def __init__(
        self,
        path: str = "pbmc68k",
        layer: str | None = None,
        label_key: str | None = None,
        n_top_genes: int | None = None,
        target_sum: float = 1e4,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        backed: bool = False,
        hvg_max_cells: int = 20_000,
        n_pcs: int = 50,
    ) -> None:
        super().__init__()
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise InputError(
                "val_fraction/test_fraction",
                f"need fractions in [0, 1) summing below 1, got {val_fraction}, {test_fraction}",
            )
        if batch_size < 1:
            raise InputError("batch_size", f"must be >= 1, got {batch_size}")
        if n_top_genes is not None and n_top_genes < 2:
            raise InputError("n_top_genes", f"must be >= 2 (or null for all genes), got {n_top_genes}")
        self.path, self.layer, self.label_key = path, layer, label_key
        self.n_top_genes, self.target_sum = n_top_genes, float(target_sum)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.backed, self.hvg_max_cells, self.n_pcs = backed, hvg_max_cells, n_pcs
        self._ready = False

    # ----------------------------------------------------------------- loading
    def _load(self) -> tuple[Any, str | None]:
        if self.path == "synthetic":
            return synthetic_counts(seed=self.seed), CELL_TYPE_KEY
        if self.path in SAMPLE_DATA:
            key = SAMPLE_DATA[self.path][1] if self.label_key is None else (self.label_key or None)
            return read_counts(sample_data_path(self.path), layer=self.layer, label_key=key), key
        key = self.label_key or None
        return read_counts(self.path, layer=self.layer, label_key=key, backed=self.backed), key

    def setup(self, stage: str | None = None) -> None:
        """Read, split, select HVGs on training cells, compute the statistics models need (idempotent)."""
        if self._ready:
            return
        adata, key = self._load()
        n = adata.n_obs
        matrix = adata.layers[self.layer] if self.layer is not None else adata.X
        if sp.issparse(matrix) and not isinstance(matrix, sp.csr_matrix):
            matrix = sp.csr_matrix(matrix)
        if key is None:
            raw_labels = np.array(["cell"] * n, dtype=object)
        else:
            raw_labels = adata.obs[key].astype(str).to_numpy()
        self.cell_types: list[str] = sorted(set(raw_labels.tolist()))
        index = {t: i for i, t in enumerate(self.cell_types)}
        self.labels = np.array([index[t] for t in raw_labels], dtype=np.int64)
        self.library = _row_sums(matrix, n)
        if (self.library <= 0).any():
            raise InputError(self.path, f"{int((self.library <= 0).sum())} cells have no counts at all")
        self.train_idx, self.val_idx, self.test_idx = stratified_split(
            raw_labels, (self.val_fraction, self.test_fraction), seed=self.seed
        )
        self.matrix, self.all_genes = matrix, np.asarray(adata.var_names.astype(str))
        self.gene_idx = self._select_genes()
        self.genes: list[str] = self.all_genes[self.gene_idx].tolist()
        self.obs_names = np.asarray(adata.obs_names.astype(str))
        self._stats()
        self._ready = True

    def _train_lognorm(self, rows: np.ndarray | None = None, genes: np.ndarray | None = None) -> np.ndarray:
        rows = self.train_idx if rows is None else rows
        block = self.matrix[np.sort(rows)] if not self.backed else sp.vstack([self.matrix[int(r)] for r in rows])
        if genes is not None:
            block = block[:, genes]
        return log_normalize(block, self.library[np.sort(rows)], self.target_sum)

    def _select_genes(self) -> np.ndarray:
        g_all = len(self.all_genes)
        if self.n_top_genes is None or self.n_top_genes >= g_all:
            return np.arange(g_all)
        sc = require("scanpy", "singlecell")
        ad = require("anndata", "singlecell")
        rows = self.train_idx
        if self.backed and len(rows) > self.hvg_max_cells:
            rows = np.random.default_rng(self.seed).choice(rows, self.hvg_max_cells, replace=False)
        tmp = ad.AnnData(X=self._train_lognorm(np.sort(rows)))
        tmp.var_names = self.all_genes
        sc.pp.highly_variable_genes(tmp, n_top_genes=self.n_top_genes, flavor="seurat")
        return np.flatnonzero(tmp.var["highly_variable"].to_numpy())

    def _stats(self) -> None:
        """Per-gene mean/std, per-type log-library normal fit, type frequencies, PCA, per-type PC-score moments."""
        x = self._train_lognorm(genes=self.gene_idx)
        self.gene_mean = x.mean(0)
        self.gene_std = x.std(0)
        k = len(self.cell_types)
        y = self.labels[self.train_idx]
        loglib = np.log(self.library[self.train_idx])
        self.type_freq = np.bincount(y, minlength=k) / len(y)
        overall = (float(loglib.mean()), float(loglib.std() if len(loglib) > 1 else 0.1))
        self.lib_mu = np.array([loglib[y == j].mean() if (y == j).any() else overall[0] for j in range(k)])
        self.lib_sigma = np.array([loglib[y == j].std() if (y == j).sum() > 1 else overall[1] for j in range(k)])
        self.pcs, self.pc_std = pca(x, self.n_pcs, self.gene_mean)
        # per-type Gaussian on the PC scores plus the pooled per-gene residual (the flows' type prior)
        scores = (x - self.gene_mean) @ self.pcs.T
        pooled = scores.std(0)
        self.type_pc_mean = np.stack(
            [scores[y == j].mean(0) if (y == j).any() else np.zeros(len(pooled)) for j in range(k)]
        )
        self.type_pc_std = np.stack([scores[y == j].std(0) if (y == j).sum() > 1 else pooled for j in range(k)])
        self.resid_std = (x - self.gene_mean - scores @ self.pcs).std(0)

    def _require(self) -> None:
        if not self._ready:
            self.setup()

    # ----------------------------------------------------------------- what models need
    @property
    def num_genes(self) -> int:
        """Number of selected genes ``G``."""
        self._require()
        return len(self.genes)

    @property
    def num_classes(self) -> int:
        """Number of cell types."""
        self._require()
        return len(self.cell_types)

    def metadata(self, max_ref: int = 1000) -> dict[str, Any]:
        """Everything a model needs at sampling time, as plain values (stored in its checkpoint).

        Keys: ``genes``, ``cell_types``, ``type_freq``, ``lib_mu``/``lib_sigma`` (log-normal library size per
        type), ``gene_mean``/``gene_std``, ``pcs`` (``[k, G]``), ``pc_std``, ``target_sum``, ``type_pc_mean`` /
        ``type_pc_std`` (``[K, k]``: per-type mean and standard deviation of the training cells' PC scores),
        ``resid_std`` (``[G]``: per-gene standard deviation left after the top ``k`` PCs), ``ref_pc`` (PC1/PC2
        of up to ``max_ref`` training cells, for figures) and ``ref_labels``.
        """
        self._require()
        x = self._train_lognorm(genes=self.gene_idx)
        take = np.random.default_rng(self.seed).permutation(len(x))[:max_ref]
        ref_pc = (x[take] - self.gene_mean) @ self.pcs[:2].T
        return {
            "genes": list(self.genes),
            "cell_types": list(self.cell_types),
            "type_freq": [float(v) for v in self.type_freq],
            "lib_mu": [float(v) for v in self.lib_mu],
            "lib_sigma": [float(v) for v in self.lib_sigma],
            "gene_mean": torch.from_numpy(np.asarray(self.gene_mean, dtype=np.float32)),
            "gene_std": torch.from_numpy(np.asarray(self.gene_std, dtype=np.float32)),
            "pcs": torch.from_numpy(self.pcs),
            "pc_std": torch.from_numpy(self.pc_std),
            "target_sum": self.target_sum,
            "type_pc_mean": torch.from_numpy(self.type_pc_mean.astype(np.float32)),
            "type_pc_std": torch.from_numpy(self.type_pc_std.astype(np.float32)),
            "resid_std": torch.from_numpy(self.resid_std.astype(np.float32)),
            "ref_pc": torch.from_numpy(np.asarray(ref_pc, dtype=np.float32)),
            "ref_labels": torch.from_numpy(self.labels[self.train_idx][take]),
        }

    def train_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Log-normalised training cells on the selected genes ``[n, G]`` float32 and their type indices ``[n]``."""
        self._require()
        return self._train_lognorm(genes=self.gene_idx), self.labels[np.sort(self.train_idx)]

    def split_anndata(self, split: str = "test", rows: np.ndarray | None = None) -> Any:
        """Cells of a split as AnnData in the generated-output layout.

        ``X`` = log-normalised expression on the selected genes, ``layers['counts']``, ``obs['cell_type']``,
        ``obs['library_size']``, ``obs['generated'] = False``.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            rows: Subset of the split's positions (default: all).

        """
        ad = require("anndata", "singlecell")
        import pandas as pd

        self._require()
        idx = {"train": self.train_idx, "val": self.val_idx, "test": self.test_idx}.get(split)
        if idx is None:
            raise InputError("split", f"unknown split {split!r}; use train, val or test")
        if rows is not None:
            idx = idx[np.asarray(rows)]
        order = np.argsort(idx)
        idx = idx[order]
        counts = self.matrix[idx] if not self.backed else sp.vstack([self.matrix[int(r)] for r in idx])
        counts = sp.csr_matrix(counts[:, self.gene_idx], dtype=np.float32)
        x = log_normalize(counts, self.library[idx], self.target_sum)
        obs = pd.DataFrame(
            {
                CELL_TYPE_KEY: pd.Categorical(
                    [self.cell_types[j] for j in self.labels[idx]], categories=self.cell_types
                ),
                "library_size": self.library[idx].astype(np.float32),
                "generated": False,
            },
            index=self.obs_names[idx],
        )
        adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=list(self.genes)))
        adata.layers["counts"] = counts
        return adata

    # ----------------------------------------------------------------- loaders
    def _dataset(self, rows: np.ndarray) -> CellDataset:
        return CellDataset(self.matrix, rows, self.gene_idx, self.library, self.labels, self.target_sum)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (incomplete last batch dropped when the split is larger than a batch)."""
        self._require()
        drop = len(self.train_idx) > self.batch_size
        return DataLoader(
            self._dataset(self.train_idx),
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=drop,
            num_workers=self.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        """Validation batches (in order)."""
        self._require()
        return DataLoader(self._dataset(self.val_idx), batch_size=self.batch_size, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        """Test batches (in order)."""
        self._require()
        return DataLoader(self._dataset(self.test_idx), batch_size=self.batch_size, num_workers=self.num_workers)
