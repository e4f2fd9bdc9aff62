"""Metrics with known answers: identical laws, shifted laws, planted markers, bad inputs, the figure."""

from __future__ import annotations

import numpy as np
import pytest

from flowsci.domains.singlecell.data import log_normalize, synthetic_counts
from flowsci.domains.singlecell.metrics import (
    evaluate,
    knn_auc,
    marker_overlap,
    match_composition,
    pc_moments,
    pca_basis,
    plot_cells,
)
from flowsci.errors import InputError


def _lognorm(adata):
    out = adata.copy()
    out.X = log_normalize(adata.X)
    return out


@pytest.fixture(scope="module")
def big():
    return _lognorm(synthetic_counts(n_cells=600, n_genes=60, n_types=3, n_markers=5, seed=3))


def test_knn_auc_known_answers():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    assert abs(knn_auc(a, b) - 0.5) < 0.08  # same law
    assert knn_auc(a, b + 4.0) > 0.99  # far apart


def test_pca_basis_recovers_planted_axis():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 1)) * 5 * np.array([[0.6, 0.8, 0.0]]) + 0.1 * rng.normal(size=(500, 3))
    mean, vt, sd = pca_basis(x, 2)
    np.testing.assert_allclose(np.abs(vt[0]), [0.6, 0.8, 0.0], atol=0.02)
    assert sd[0] == pytest.approx(5, rel=0.1) and sd[1] < 0.2


def test_pc_moments_closed_forms(big):
    train, real = big[:300].copy(), big[300:].copy()
    same = pc_moments(real, real, train=train, n_pcs=5)
    assert list(same.index) == [f"PC{k}" for k in range(1, 6)]
    np.testing.assert_allclose(same[["mean_error", "type_mean_error"]], 0, atol=1e-9)
    np.testing.assert_allclose(same[["var_ratio", "within_var_ratio"]], 1, atol=1e-9)
    x = np.asarray(real.X, np.float64)
    wide = real.copy()
    wide.X = x.mean(0) + 2 * (x - x.mean(0))  # twice as far from the mean: variances x4, means kept
    w = pc_moments(wide, real, train=train, n_pcs=5)
    np.testing.assert_allclose(w[["var_ratio", "within_var_ratio"]], 4, rtol=1e-9)
    np.testing.assert_allclose(w["mean_error"], 0, atol=1e-9)
    mean, vt, _ = pca_basis(np.asarray(train.X, np.float64), 5)
    moved = real.copy()
    moved.X = x + 3.0 * vt[1]  # a shift along PC2 only
    m = pc_moments(moved, real, train=train, n_pcs=5)
    sd2 = ((x - mean) @ vt[1]).std()
    assert m["mean_error"]["PC2"] == pytest.approx(3.0 / sd2)
    assert m["type_mean_error"]["PC2"] == pytest.approx(3.0 / sd2)
    np.testing.assert_allclose(m["mean_error"].drop("PC2"), 0, atol=1e-6)
    np.testing.assert_allclose(m["var_ratio"], 1, rtol=1e-6)


def test_marker_overlap_recovers_planted_markers(big):
    half = big.n_obs // 2
    mk = marker_overlap(big[:half].copy(), big[half:].copy(), n_markers=5)
    assert set(mk) == {"type0", "type1", "type2"}
    for v in mk.values():  # the planted 5 markers are the top 5 in both halves
        assert v["jaccard"] == 1.0 and v["lfc_pearson"] > 0.8


def test_evaluate_real_vs_real_is_near_the_ideal(big):
    train, a, b = big[:300].copy(), big[300:450].copy(), big[450:].copy()
    table = evaluate(a, b, train=train, markers=False)
    v = table["value"]
    assert v["knn_auc"] < 0.65 and v["mean_pearson"] > 0.95 and v["clf_acc_ratio"] > 0.9
    assert set(table.columns) == {"value", "real_floor", "higher_is_better"}
    assert not table["higher_is_better"]["w2"] and table["higher_is_better"]["clf_acc_gen"]
    assert {"w2", "mmd"} <= set(table.attrs["per_type"].columns)


def test_evaluate_detects_wrong_types_and_broken_genes(big):
    train, a, b = big[:300].copy(), big[300:450].copy(), big[450:].copy()
    swapped = a.copy()
    labels = swapped.obs["cell_type"].astype(str)
    swapped.obs["cell_type"] = labels.map({"type0": "type1", "type1": "type2", "type2": "type0"}).astype("category")
    good = evaluate(a, b, train=train, markers=False, floor=False)["value"]
    bad = evaluate(swapped, b, train=train, markers=False, floor=False)["value"]
    assert bad["clf_acc_gen"] < 0.2 < 0.8 < good["clf_acc_gen"]
    shuffled = a.copy()
    shuffled.X = np.random.default_rng(0).permuted(np.asarray(a.X), axis=0)  # genes decoupled from each other
    assert evaluate(shuffled, b, train=train, markers=False, floor=False)["value"]["knn_auc"] > 0.85


def test_evaluate_accepts_any_gene_order_and_rejects_other_genes(big):
    a, b = big[:300].copy(), big[300:].copy()
    base = evaluate(a, b, markers=False)["value"]["w2"]
    assert evaluate(a[:, a.var_names[::-1]].copy(), b, markers=False)["value"]["w2"] == pytest.approx(base)
    with pytest.raises(InputError, match="genes differ"):
        evaluate(a[:, :50].copy(), b, markers=False)
    with pytest.raises(InputError, match="obs column"):
        evaluate(a, b, label_key="louvain", markers=False)
    with pytest.raises(InputError):
        evaluate(np.zeros((3, 3)), b)


def test_match_composition(big):
    like = big[:40].copy()
    sub = match_composition(big[40:].copy(), like, seed=0)
    assert sorted(sub.obs["cell_type"].astype(str)) == sorted(like.obs["cell_type"].astype(str))


def test_plot_cells_writes_png(big, tmp_path):
    path = plot_cells(big[:100].copy(), big[100:200].copy(), tmp_path / "cells.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError):
        plot_cells(big[:10].copy(), big[10:20].copy(), tmp_path / "x.png", basis="tsne")
