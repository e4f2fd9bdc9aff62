r"""Generation metrics for single cells: generated vs held-out real cells, next to the real-vs-real noise floor.

Protocol (the union of scDiffusion, CFGen and scGAN evaluations): the same number of cells, identical
preprocessing (``X`` = log1p(normalize_total 1e4) on the same genes), principal components fitted on real
*training* cells only (on the held-out cells when no training cells are given):

* ``w2``: exact :math:`W_2` between the two clouds on ``n_pcs`` PCs (:func:`flowsci.metrics.wasserstein2_exact`);
* ``mmd``: biased :math:`\mathrm{MMD}^2` with RBF bandwidths :math:`\{1/4, 1/2, 1, 2, 4\}\times` the median
  pairwise distance of the real cells (:func:`flowsci.metrics.mmd2_rbf`);
* ``knn_auc``: ROC-AUC of a 5-NN real-vs-generated classifier, 5-fold cross-validated (0.5 = indistinguishable);
* ``{mean,var,zero}_{pearson,spearman}``: correlations over genes of per-gene means, variances and zero fractions;
* ``clf_acc_gen`` / ``clf_acc_real`` / ``clf_acc_ratio``: a logistic-regression cell-type classifier trained on
  real training cells (PCs), its accuracy on the generated cells (their requested types) and on held-out cells;
* ``type_w2`` / ``type_mmd``: per-type :math:`W_2` / MMD averaged over types with >= 5 cells in both sets;
* ``marker_jaccard`` / ``marker_lfc_pearson``: top-20 Wilcoxon markers per type (scanpy ``rank_genes_groups``) of
  real vs generated cells, Jaccard overlap and correlation of log-fold changes, averaged over types.

:func:`pc_moments` says *where* two sets differ on those PCs (per-PC mean errors, variance ratios overall and
within types).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowsci.domains.singlecell.data import CELL_TYPE_KEY, pca
from flowsci.errors import InputError, require
from flowsci.metrics import mmd2_rbf, wasserstein2_exact

__all__ = [
    "HIGHER_IS_BETTER",
    "evaluate",
    "knn_auc",
    "marker_overlap",
    "match_composition",
    "pc_moments",
    "pca_basis",
    "plot_cells",
]

HIGHER_IS_BETTER: dict[str, bool] = {
    "w2": False,
    "mmd": False,
    "knn_auc": False,
    "mean_pearson": True,
    "mean_spearman": True,
    "var_pearson": True,
    "var_spearman": True,
    "zero_pearson": True,
    "zero_spearman": True,
    "clf_acc_gen": True,
    "clf_acc_real": True,
    "clf_acc_ratio": True,
    "type_w2": False,
    "type_mmd": False,
    "marker_jaccard": True,
    "marker_lfc_pearson": True,
}
_MIN_TYPE_CELLS = 5


def _adata(obj: Any, name: str) -> Any:
    obj = getattr(obj, "adata", obj)
    if not hasattr(obj, "obs") or not hasattr(obj, "var_names"):
        raise InputError(name, f"must be an AnnData (or a solution holding one), got {type(obj).__name__}")
    return obj


def _dense(adata: Any, name: str) -> np.ndarray:
    x = adata.X
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError(name, f"{int((~np.isfinite(x)).sum())} non-finite values in X")
    return x


def _aligned(adata: Any, genes: list[str], name: str) -> np.ndarray:
    have = list(map(str, adata.var_names))
    if have == genes:
        return _dense(adata, name)
    if set(have) != set(genes):
        miss = sorted(set(genes) - set(have))[:5]
        raise InputError(name, f"genes differ from the reference ({len(have)} vs {len(genes)}; missing e.g. {miss})")
    return _dense(adata[:, genes], name)


def _labels(adata: Any, key: str, name: str) -> np.ndarray:
    if key not in adata.obs:
        raise InputError(name, f"no obs column {key!r}; obs columns: {sorted(adata.obs.columns)}")
    return adata.obs[key].astype(str).to_numpy()


def pca_basis(x: np.ndarray, n_pcs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean ``[G]``, top ``n_pcs`` principal axes ``[k, G]`` and their standard deviations ``[k]`` of ``x``."""
    mean = x.mean(0)
    vt, sd = pca(x, n_pcs, mean)
    return mean, vt.astype(np.float64), np.maximum(sd.astype(np.float64), 1e-8)


def knn_auc(real: np.ndarray, gen: np.ndarray, k: int = 5, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC-AUC of a k-NN classifier telling generated (1) from real (0) points (0.5 = same law)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    x = np.concatenate([real, gen])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(gen))])
    folds = max(2, min(folds, len(real), len(gen)))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    knn = KNeighborsClassifier(n_neighbors=max(1, min(k, len(x) - len(x) // folds - 1)))
    proba = cross_val_predict(knn, x, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    from scipy.stats import pearsonr, spearmanr

    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan"), float("nan")
    return float(pearsonr(a[ok], b[ok])[0]), float(spearmanr(a[ok], b[ok])[0])


def _bandwidths(real: np.ndarray) -> list[float]:
    d = torch.cdist(torch.from_numpy(real), torch.from_numpy(real))
    med = float(d[d > 0].median()) if (d > 0).any() else 1.0
    return [med * f for f in (0.25, 0.5, 1.0, 2.0, 4.0)]


def marker_overlap(
    real: Any, gen: Any, label_key: str = CELL_TYPE_KEY, n_markers: int = 20, min_cells: int = 3
) -> dict[str, dict[str, float]]:
    """Per type: Jaccard of the top-``n_markers`` Wilcoxon markers and Pearson of log-fold changes (all genes).

    Markers of each set come from scanpy's ``rank_genes_groups(method="wilcoxon")`` over the types with at
    least ``min_cells`` cells in both sets (one type against the rest of those types).

    Returns:
        ``{type: {"jaccard": ..., "lfc_pearson": ...}}`` (empty when fewer than two types qualify).

    """
    sc = require("scanpy", "singlecell")
    rl, gl = real.obs[label_key].astype(str), gen.obs[label_key].astype(str)
    rc, gc = rl.value_counts(), gl.value_counts()
    types = sorted(t for t in rc.index if rc[t] >= min_cells and gc.get(t, 0) >= min_cells)
    if len(types) < 2:
        return {}
    out: dict[str, dict[str, float]] = {}
    ranked = []
    for a, lab in ((real, rl), (gen, gl)):
        sub = a[lab.isin(types).to_numpy()].copy()
        sub.obs["_group"] = sub.obs[label_key].astype(str).astype("category")
        sub.uns["log1p"] = {"base": None}
        sc.tl.rank_genes_groups(sub, "_group", method="wilcoxon", n_genes=sub.n_vars, use_raw=False)
        ranked.append(sub.uns["rank_genes_groups"])
    for t in types:
        names_r = [str(g) for g in ranked[0]["names"][t]]
        names_g = [str(g) for g in ranked[1]["names"][t]]
        top_r, top_g = set(names_r[:n_markers]), set(names_g[:n_markers])
        lfc_r = dict(zip(names_r, np.asarray(ranked[0]["logfoldchanges"][t], dtype=np.float64), strict=True))
        lfc_g = dict(zip(names_g, np.asarray(ranked[1]["logfoldchanges"][t], dtype=np.float64), strict=True))
        genes = sorted(lfc_r)
        a = np.array([lfc_r[g] for g in genes])
        b = np.array([lfc_g.get(g, np.nan) for g in genes])
        out[t] = {"jaccard": len(top_r & top_g) / len(top_r | top_g), "lfc_pearson": _corr(a, b)[0]}
    return out


def match_composition(pool: Any, like: Any, label_key: str = CELL_TYPE_KEY, seed: int = 0) -> Any:
    """Cells of ``pool`` with the per-type counts of ``like`` (drawn without replacement where possible)."""
    rng = np.random.default_rng(seed)
    pl_, ll = pool.obs[label_key].astype(str).to_numpy(), like.obs[label_key].astype(str).to_numpy()
    take: list[int] = []
    for t, n in zip(*np.unique(ll, return_counts=True), strict=True):
        idx = np.flatnonzero(pl_ == t)
        if len(idx):
            take += rng.choice(idx, size=n, replace=len(idx) < n).tolist()
    return pool[np.sort(np.asarray(take, dtype=np.int64))].copy()


def pc_moments(
    generated: Any,
    real: Any,
    *,
    train: Any = None,
    label_key: str = CELL_TYPE_KEY,
    n_pcs: int = 30,
    min_cells: int = _MIN_TYPE_CELLS,
) -> Any:
    r"""Per-PC moments of generated vs real cells on the PCs the distribution metrics use.

    PCs are fitted on ``train`` (else on ``real``). With generated and real scores :math:`p^g, p^r` on PC
    :math:`k`:

    * ``mean_error`` :math:`= (\bar p^g_k - \bar p^r_k) / s^r_k` (in real standard deviations);
    * ``var_ratio`` :math:`= \mathrm{var}(p^g_k) / \mathrm{var}(p^r_k)`;
    * ``within_var_ratio``: the same ratio of within-type variances, each averaged over the types with at least
      ``min_cells`` cells in both sets (NaN when none);
    * ``type_mean_error``: root mean square over those types of (type mean difference) / :math:`s^r_k`.

    Args:
        generated: AnnData of generated cells (or a solution holding one).
        real: AnnData of real cells, same genes.
        train: AnnData of real training cells to fit the PCs on.
        label_key: ``obs`` column of the cell type.
        n_pcs: Principal components.
        min_cells: Smallest type counted in the within-type columns.

    Returns:
        ``pandas.DataFrame`` indexed ``PC1`` ... ``PC<n_pcs>`` with the four columns above.

    Raises:
        InputError: Not AnnData, different genes, missing ``label_key``, non-finite values.

    """
    import pandas as pd

    gen, ref = _adata(generated, "generated"), _adata(real, "real")
    genes = list(map(str, ref.var_names))
    fit_on = ref if train is None else _adata(train, "train")
    mean, vt, _ = pca_basis(_aligned(fit_on, genes, "train" if train is not None else "real"), n_pcs)
    pg = (_aligned(gen, genes, "generated") - mean) @ vt.T
    pr = (_aligned(ref, genes, "real") - mean) @ vt.T
    yg, yr = _labels(gen, label_key, "generated"), _labels(ref, label_key, "real")
    sd = np.maximum(pr.std(0), 1e-12)
    types = [t for t in sorted(set(yr.tolist())) if (yr == t).sum() >= min_cells and (yg == t).sum() >= min_cells]
    nan = np.full(pr.shape[1], np.nan)
    if types:
        within_g = np.mean([pg[yg == t].var(0) for t in types], 0)
        within_r = np.mean([pr[yr == t].var(0) for t in types], 0)
        diff = np.stack([(pg[yg == t].mean(0) - pr[yr == t].mean(0)) / sd for t in types])
    return pd.DataFrame(
        {
            "mean_error": (pg.mean(0) - pr.mean(0)) / sd,
            "var_ratio": pg.var(0) / sd**2,
            "within_var_ratio": within_g / np.maximum(within_r, 1e-12) if types else nan,
            "type_mean_error": np.sqrt((diff**2).mean(0)) if types else nan,
        },
        index=[f"PC{k + 1}" for k in range(pr.shape[1])],
    )


def _scores(
    gen: Any,
    real: Any,
    genes: list[str],
    basis: tuple[np.ndarray, np.ndarray],
    clf: Any,
    label_key: str,
    markers: bool,
    n_markers: int,
    seed: int,
    is_train: bool = False,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    xg, xr = _aligned(gen, genes, "generated"), _aligned(real, genes, "heldout")
    mean, vt, sd = basis
    pg, pr = (xg - mean) @ vt.T, (xr - mean) @ vt.T
    out: dict[str, float] = {}
    out["w2"] = wasserstein2_exact(torch.from_numpy(pg), torch.from_numpy(pr))
    bw = _bandwidths(pr)
    out["mmd"] = mmd2_rbf(torch.from_numpy(pg), torch.from_numpy(pr), bandwidths=bw)
    out["knn_auc"] = knn_auc(pr, pg, seed=seed)
    for name, fn in (("mean", np.mean), ("var", np.var), ("zero", lambda a, axis: (a == 0).mean(axis))):
        out[f"{name}_pearson"], out[f"{name}_spearman"] = _corr(fn(xg, axis=0), fn(xr, axis=0))
    yg, yr = _labels(gen, label_key, "generated"), _labels(real, label_key, "heldout")
    per_type: dict[str, dict[str, float]] = {}
    if clf is not None:
        out["clf_acc_real"] = float((clf.predict(pr / sd) == yr).mean())
        # training cells (the floor) were seen by the classifier: their floor is the held-out accuracy
        out["clf_acc_gen"] = out["clf_acc_real"] if is_train else float((clf.predict(pg / sd) == yg).mean())
        out["clf_acc_ratio"] = out["clf_acc_gen"] / out["clf_acc_real"] if out["clf_acc_real"] > 0 else float("nan")
    for t in sorted(set(yr.tolist())):
        a, b = pg[yg == t], pr[yr == t]
        if len(a) >= _MIN_TYPE_CELLS and len(b) >= _MIN_TYPE_CELLS:
            per_type[t] = {
                "n_real": float(len(b)),
                "n_generated": float(len(a)),
                "w2": wasserstein2_exact(torch.from_numpy(a), torch.from_numpy(b)),
                "mmd": mmd2_rbf(torch.from_numpy(a), torch.from_numpy(b), bandwidths=bw),
            }
    if per_type:
        out["type_w2"] = float(np.mean([v["w2"] for v in per_type.values()]))
        out["type_mmd"] = float(np.mean([v["mmd"] for v in per_type.values()]))
    if markers:
        mk = marker_overlap(real, gen, label_key, n_markers)
        for t, v in mk.items():
            per_type.setdefault(t, {}).update({f"marker_{k}": val for k, val in v.items()})
        if mk:
            out["marker_jaccard"] = float(np.mean([v["jaccard"] for v in mk.values()]))
            out["marker_lfc_pearson"] = float(np.nanmean([v["lfc_pearson"] for v in mk.values()]))
    return out, per_type


def _type_classifier(xf: np.ndarray, yf: np.ndarray, basis: tuple[np.ndarray, ...]) -> Any:
    """Logistic regression of the cell type on the standardised PC scores of ``xf`` ``[n, G]``; None for one type
    (unlabelled data: no classifier, no ``clf_acc_*`` metrics).
    """
    if len(set(yf.tolist())) < 2:
        return None
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=500).fit((xf - basis[0]) @ basis[1].T / basis[2], yf)


def evaluate(
    generated: Any,
    heldout: Any,
    *,
    train: Any = None,
    label_key: str = CELL_TYPE_KEY,
    n_pcs: int = 30,
    markers: bool = True,
    n_markers: int = 20,
    floor: bool = True,
    seed: int = 0,
) -> Any:
    """Score generated cells against held-out real cells (see the module docstring for every metric).

    Args:
        generated: AnnData of generated cells (or a :class:`~flowsci.domains.singlecell.flow.CellSolution`).
        heldout: AnnData of held-out real cells, same genes (any order), same preprocessing.
        train: AnnData of real training cells: PCs and the cell-type classifier are fitted on them, and the
            real-vs-real floor (training cells with the held-out type composition vs held-out) is computed.
            Without it, PCs and classifier are fitted on ``heldout`` (then ``clf_acc_real`` is a training accuracy).
        label_key: ``obs`` column of the cell type in every set.
        n_pcs: Principal components of the distribution metrics.
        markers: Compute the Wilcoxon marker metrics (needs scanpy; the slowest part).
        n_markers: Markers per type.
        floor: With ``train``, add the ``real_floor`` column.
        seed: Seed of the cross-validation folds and of the floor's subsample.

    Returns:
        ``pandas.DataFrame`` indexed by metric with columns ``value`` (, ``real_floor``), ``higher_is_better``;
        ``df.attrs["per_type"]`` holds the per-type table.

    Raises:
        InputError: Not AnnData, different genes, missing ``label_key``, non-finite values.

    """
    import pandas as pd

    gen, real = _adata(generated, "generated"), _adata(heldout, "heldout")
    if gen.n_obs < 2 or real.n_obs < 2:
        raise InputError("generated/heldout", f"need >= 2 cells each, got {gen.n_obs} and {real.n_obs}")
    genes = list(map(str, real.var_names))
    fit_on = real if train is None else _adata(train, "train")
    xf = _aligned(fit_on, genes, "train" if train is not None else "heldout")
    basis = pca_basis(xf, n_pcs)
    yf = _labels(fit_on, label_key, "train" if train is not None else "heldout")
    clf = _type_classifier(xf, yf, basis)
    values, per_type = _scores(gen, real, genes, basis, clf, label_key, markers, n_markers, seed)
    table = pd.DataFrame({"value": pd.Series(values)})
    if train is not None and floor:
        sub = match_composition(fit_on, real, label_key, seed)
        fl, _ = _scores(sub, real, genes, basis, clf, label_key, markers, n_markers, seed, is_train=True)
        table["real_floor"] = pd.Series(fl)
    table["higher_is_better"] = [HIGHER_IS_BETTER.get(k, False) for k in table.index]
    table.attrs["per_type"] = pd.DataFrame(per_type).T
    return table


def plot_cells(
    generated: Any,
    reference: Any,
    path: str | os.PathLike,
    *,
    label_key: str = CELL_TYPE_KEY,
    basis: str = "pca",
    title: str | None = None,
) -> Path:
    """PNG of real vs generated cells in 2-D (PCA fitted on the real cells, or a joint UMAP via scanpy).

    Three panels: both sets overlaid, real cells by type, generated cells by type.

    Args:
        generated: AnnData of generated cells (or a solution holding one).
        reference: AnnData of real cells (same genes).
        path: Output PNG.
        label_key: Cell-type column.
        basis: ``"pca"`` or ``"umap"`` (scanpy neighbours + UMAP on the joint 30-PC embedding).
        title: Figure title.

    """
    from flowsci.plots import Panel, save_panels

    gen, real = _adata(generated, "generated"), _adata(reference, "reference")
    genes = list(map(str, real.var_names))
    xg, xr = _aligned(gen, genes, "generated"), _aligned(real, genes, "reference")
    if basis == "pca":
        mean, vt, _ = pca_basis(xr, 2)
        eg, er = (xg - mean) @ vt.T, (xr - mean) @ vt.T
        axes = ("PC1", "PC2")
    elif basis == "umap":
        sc, ad = require("scanpy", "singlecell"), require("anndata", "singlecell")
        joint = ad.AnnData(np.concatenate([xr, xg]).astype(np.float32))
        sc.pp.pca(joint, n_comps=min(30, joint.n_obs - 1, joint.n_vars - 1))
        sc.pp.neighbors(joint, random_state=0)
        sc.tl.umap(joint, random_state=0)
        emb = joint.obsm["X_umap"]
        er, eg = emb[: len(xr)], emb[len(xr) :]
        axes = ("UMAP1", "UMAP2")
    else:
        raise InputError("basis", f"must be 'pca' or 'umap', got {basis!r}")
    yr, yg = _labels(real, label_key, "reference"), _labels(gen, label_key, "generated")
    types = sorted(set(yr.tolist()) | set(yg.tolist()))
    panels = [
        Panel("real vs generated", {"real": er, "generated": eg}, "scatter", *axes),
        Panel("real by type", {t: er[yr == t] for t in types}, "scatter", *axes),
        Panel("generated by type", {t: eg[yg == t] for t in types}, "scatter", *axes),
    ]
    return save_panels(panels, path, title=title, ncols=3)


def as_mapping(table: Any) -> Mapping[str, float]:
    """``{metric: value}`` of an :func:`evaluate` table (NaN kept)."""
    return {str(k): float(v) for k, v in table["value"].items()}
