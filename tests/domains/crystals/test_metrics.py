"""Metric definitions: validity, SMACT, StructureMatcher CSP, coverage, Wasserstein."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from flowsci.domains.crystals import metrics as M


def test_structural_validity_cutoffs():
    ok = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert M.structural_validity(ok)
    close = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]])  # 0.4 Å apart
    assert not M.structural_validity(close)
    # periodic image: 0.98 and 0.02 are 0.16 Å apart through the boundary of an 4 Å cell
    wrap = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.98, 0, 0], [0.02, 0, 0]])
    assert not M.structural_validity(wrap)
    tiny = Structure(Lattice.cubic(0.4), ["C"], [[0, 0, 0]])  # volume 0.064 Å^3
    assert not M.structural_validity(tiny)


def test_compositional_validity():
    assert M.compositional_validity("SrTiO3")
    assert M.compositional_validity("NaCl")
    assert not M.compositional_validity("NaCl2")
    assert M.compositional_validity("C8")  # single element
    assert M.compositional_validity("CuZn")  # all-metal alloy


def test_smact_rate_on_perov_matches_published_set(perov):
    # smact14 is the set used in CDVAE/DiffCSP code; all of these real perovskites but at most one are valid
    v = [M.compositional_validity(s) for s in perov]
    assert sum(v) >= len(v) - 1


def test_csp_match_perturbed_and_mismatch(perov):
    rng = np.random.default_rng(0)
    gt = perov[0]
    cart = gt.cart_coords + rng.normal(0, 0.01, (len(gt), 3))
    frac = gt.lattice.get_fractional_coords(cart) + np.array([0.3, 0.1, 0.7])  # global shift: same crystal
    pred = Structure(gt.lattice, gt.species, frac)
    rms = M.csp_rms(pred, gt)
    assert rms is not None and rms < 0.05
    assert M.csp_rms(perov[1], gt) is None  # different composition
    res = M.csp_metrics([pred, perov[1]], [gt, perov[2]])
    assert res["match_rate"] == pytest.approx(0.5)
    # best of k: one good prediction among k suffices
    res_k = M.csp_metrics([[perov[1], pred]], [gt])
    assert res_k["match_rate"] == 1.0 and res_k["rmse"] == pytest.approx(rms, abs=1e-6)


def test_lattice_scale_error_sees_what_matching_ignores(perov):
    gt = perov[0]
    scaled = gt.copy()
    scaled.scale_lattice(gt.volume * 1.2**3)  # every length × 1.2: still "matches" (volumes are rescaled)
    assert M.csp_rms(scaled, gt) is not None
    out = M.lattice_scale_error([scaled, gt], [gt, gt])
    assert out["lattice_err"] == pytest.approx(0.1)  # median of |1.2 − 1| and 0
    assert out["lattice_off"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="predictions"):
        M.lattice_scale_error([gt], [gt, gt])
    report = M.evaluate_csp([scaled], [gt])
    assert report["lattice_err"] == pytest.approx(0.2) and report["match_rate"] == 1.0


def test_csp_invalid_prediction_is_miss(perov):
    gt = perov[0]
    squashed = Structure(gt.lattice, gt.species, gt.frac_coords * 0.0 + np.array([[0, 0, 0]] * 4 + [[0.05, 0, 0]]))
    assert M.csp_rms(squashed, gt) is None


def test_coverage_closed_form():
    # 1-D fingerprints so the distances are obvious
    ref = ([np.array([0.0]), np.array([1.0])], [np.zeros(132), np.zeros(132)])
    mean, std = M._comp_scaler()
    zc = mean.copy()  # standardises to 0
    gen = ([np.array([0.1]), np.array([5.0]), None], [zc, zc, zc])
    out = M.coverage(gen, (ref[0], [mean, mean]), struct_cutoff=0.2, comp_cutoff=4.0)
    assert out["cov_recall"] == pytest.approx(0.5)  # ref 0 covered by gen 0, ref 1 not
    assert out["cov_precision"] == pytest.approx(1 / 3)  # gen 0 precise; gen 1 far; gen 2 failed (still counted)
    out_v = M.coverage(gen, (ref[0], [mean, mean]), 0.2, 4.0, gen_valid=[False, True, True])
    assert out_v["cov_recall"] == 0.0


def test_fingerprints_and_self_coverage(perov, tmp_path):
    fps = M.fingerprints(perov[:4], processes=1, progress=False, cache_dir=tmp_path)
    assert fps[0][0].shape == (61,) and fps[1][0].shape == (132,)
    cached = M.fingerprints(perov[:4], processes=1, progress=False, cache_dir=tmp_path)
    np.testing.assert_array_equal(np.stack(fps[0]), np.stack(cached[0]))
    out = M.coverage(fps, fps, *M.COV_CUTOFFS["perov_5"])
    assert out["cov_recall"] == 1.0 and out["cov_precision"] == 1.0


def test_property_wasserstein_and_evaluate(perov):
    w = M.property_wasserstein(perov[:8], perov[:8])
    assert w["wdist_density"] == pytest.approx(0.0, abs=1e-12) and w["wdist_num_elems"] == 0.0
    scaled = [s.copy() for s in perov[:8]]
    for s in scaled:
        s.scale_lattice(s.volume * 2)
    w2 = M.property_wasserstein(scaled, perov[:8])
    expected = np.mean([s.density / 2 for s in perov[:8]])
    assert w2["wdist_density"] == pytest.approx(expected, rel=1e-6)  # halving every density shifts by mean/2
    table = M.evaluate(perov[:6], perov[6:12], task="generation", coverage_metrics=False)
    assert list(table.columns[:3]) == ["struct_valid", "comp_valid", "valid"] and len(table) == 1
    u = M.uniqueness_novelty(perov[:3] + perov[:1], train=perov[:1])
    assert u["uniqueness"] == pytest.approx(3 / 4) and u["novelty"] == pytest.approx(2 / 4)


def test_min_interatomic_distance_uses_periodic_images():
    wrap = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.98, 0, 0], [0.02, 0, 0]])
    assert M.min_interatomic_distance(wrap) == pytest.approx(0.16)  # through the cell boundary, not 3.84 Å
    nacl = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert M.min_interatomic_distance(nacl) == pytest.approx(2 * np.sqrt(3))
    assert M.min_interatomic_distance(Structure(Lattice.cubic(3.0), ["C"], [[0, 0, 0]])) == np.inf


def test_plot_structures_writes_a_png_and_rejects_an_empty_set(perov, tmp_path):
    flat = Structure(Lattice([[1, 0, 0], [1, 0, 0], [0, 0, 1]]), ["C", "C"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert np.isnan(M.min_interatomic_distance(flat))  # zero-volume cell: undefined, and invalid
    out = M.plot_structures([flat, *perov[:5]], perov[5:12], tmp_path / "s.png", title="real vs real")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]
    with pytest.raises(ValueError, match="'generated' set is empty"):
        M.plot_structures([], perov[:2], tmp_path / "e.png")


def test_csp_metrics_site_tolerance(perov):
    """One atom moved by 0.5 (V/N)^(1/3) (after the matcher's best translation the largest site distance is
    about 0.4): a match at the field's stol = 0.5, not at a tighter stol = 0.2."""
    gt = perov[0]
    scale = (gt.volume / len(gt)) ** (1 / 3)
    cart = gt.cart_coords.copy()
    cart[1] += np.array([0.5, 0.0, 0.0]) * scale
    pred = Structure(gt.lattice, gt.species, cart, coords_are_cartesian=True)
    assert M.csp_metrics([pred], [gt])["match_rate"] == 1.0
    assert M.csp_metrics([pred], [gt], stol=0.2)["match_rate"] == 0.0
    assert M.csp_metrics([gt], [gt], stol=0.2)["match_rate"] == 1.0


def test_coverage_reference_scaler_closed_form():
    """``comp_scaler="reference"`` standardises by the reference features' own mean / std (constant ones: std 1)."""
    rs = [np.array([0.0]), np.array([0.0])]
    ref_c = [np.r_[0.0, 7.0], np.r_[2.0, 7.0]]  # feature 0: mean 1, std 1; feature 1: constant
    near, far = np.r_[1.0 + 3.9, 7.0], np.r_[1.0, 7.0 + 9.0]  # distances 3.9 / ≥ 9 in standardised units
    gen = ([np.array([0.0]), np.array([0.0])], [near, far])
    out = M.coverage(gen, (rs, ref_c), struct_cutoff=0.2, comp_cutoff=4.0, comp_scaler="reference")
    # standardised refs (−1, 0), (1, 0); gen 0 → (3.9, 0): 2.9 from ref 1 (≤ 4), 4.9 from ref 0; gen 1 → (0, 9)
    assert out["cov_precision"] == pytest.approx(0.5) and out["cov_recall"] == pytest.approx(0.5)
    assert out["amcd_precision"] == pytest.approx((2.9 + np.hypot(1.0, 9.0)) / 2)
    with pytest.raises(ValueError, match="comp_scaler"):
        M.coverage(gen, (rs, ref_c), 0.2, 4.0, comp_scaler="train")
