"""Protein metrics on real chains, perturbed chains and closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("pydssp", reason="proteins extra (pydssp) not installed")
pytest.importorskip("tmtools", reason="proteins extra (tmtools) not installed")

from flowsci.domains.proteins import metrics as M  # noqa: E402
from flowsci.domains.proteins.data import Backbone, bundled_backbones, filter_backbones  # noqa: E402
from flowsci.manifolds import quaternion_to_matrix  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def chains() -> list[Backbone]:
    return bundled_backbones()


def _rot(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_real_chains_score_like_real_proteins(chains):
    tab = M.evaluate(chains[:40], diversity_per_length=False)
    s = tab.summary
    assert abs(s["ca_ca_mean"] - 3.80) < 0.02
    assert s["ca_ca_deviation"] < 0.05
    assert s["ca_ca_valid"] > 0.95 and s["ca_ca_valid_onesided"] > 0.95
    assert s["clash_fraction"] == 0.0 and s["clash_free"] == 1.0 and s["num_ca_ca_clashes"] == 0.0
    assert s["angle_N_CA_C_dev"] < 4.0 and s["peptide_break_rate"] == 0.0
    assert abs(s["helix"] + s["strand"] + s["coil"] - 1.0) < 1e-9
    assert 0.2 < s["helix"] < 0.6 and 0.05 < s["strand"] < 0.4
    assert 0.8 < s["rg_ratio_median"] < 1.3
    assert len(tab.rows) == 40 and "| ca_ca_valid |" in tab.to_markdown()


def test_noise_degrades_geometry(chains):
    x = chains[7].coords.astype(np.float64)
    noisy = x + np.random.default_rng(0).normal(scale=0.3, size=x.shape)
    clean, bad = M.ca_ca_metrics(x), M.ca_ca_metrics(noisy)
    assert clean["ca_ca_valid"] > 0.95 and bad["ca_ca_valid"] < 0.4
    assert bad["ca_ca_valid_0.25"] > bad["ca_ca_valid"]
    assert M.bond_geometry(noisy)["angle_N_CA_C_dev"] > 3 * M.bond_geometry(x)["angle_N_CA_C_dev"]


def test_closed_form_geometry_and_clashes():
    # ideal straight chain at 3.80 A spacing: all valid, no clashes, Rg of a uniform rod
    n = 21
    ca = np.zeros((n, 3))
    ca[:, 0] = 3.8 * np.arange(n)
    g = M.ca_ca_metrics(ca)
    assert g["ca_ca_deviation"] < 1e-12 and g["ca_ca_valid"] == 1.0
    assert M.clash_metrics(ca)["clash_free"] == 1.0
    expected_rg = 3.8 * np.sqrt((n**2 - 1) / 12.0)
    assert abs(M.radius_of_gyration(ca) - expected_rg) < 1e-9
    # fold residue 10 onto residue 0: one clash pair among the (n-3)(n-2)/2 pairs with |i-j| >= 3
    ca2 = ca.copy()
    ca2[10] = ca2[0] + np.array([0.5, 0.0, 0.0])
    c = M.clash_metrics(ca2)
    assert c["num_ca_ca_clashes"] == 1.0
    pairs = (n - 3) * (n - 2) / 2
    assert abs(c["clash_fraction"] - 1 / pairs) < 1e-12 and c["clash_free"] == 0.0


def test_kabsch_rmsd_invariance_and_mean_deviation_bound(chains):
    a = chains[2].ca.astype(np.float64)
    b = a @ _rot(1).T + np.array([5.0, -3.0, 2.0])
    r, m = M.kabsch_rmsd(a, b)
    assert r < 1e-8 and m < 1e-8
    noise = np.random.default_rng(2).normal(scale=1.0, size=a.shape)
    r, m = M.kabsch_rmsd(a + noise, b)
    assert m <= r and 0.5 < r < 2.0


def test_tm_score_identity_rotation_and_diversity(chains):
    a = chains[4].ca
    assert abs(M.tm_score(a, a @ _rot(3).T + 7.0) - 1.0) < 1e-6
    same = M.diversity([a, a @ _rot(4).T])
    assert abs(same["pairwise_tm"] - 1.0) < 1e-6 and same["cluster_ratio"] == 0.5
    other = M.diversity([chains[0].ca, chains[1].ca])
    assert other["pairwise_tm"] < 0.6 and other["cluster_ratio"] == 1.0


def test_novelty_of_training_chain_is_memorised(chains):
    refs = chains[:10]
    res = M.novelty([chains[3].coords, chains[150].coords], [r.coords for r in refs])
    assert abs(res["per_sample"][0] - 1.0) < 1e-6
    assert res["per_sample"][1] < 0.9
    assert res["memorisation_frac_above_0.9"] == 0.5


def test_designability_plumbing_with_stand_in_models(chains):
    bb = chains[10]
    rng = np.random.default_rng(0)

    def inverse_fold(backbone, num_seqs):
        return ["A" * len(backbone)] * num_seqs

    calls = []

    def fold_close(seq):
        calls.append(seq)
        # a rotated copy with 0.5 A noise: designable
        return bb.ca @ _rot(len(calls)).T + rng.normal(scale=0.5, size=bb.ca.shape)

    sc = M.self_consistency(bb, inverse_fold, fold_close)
    assert len(calls) == 8
    assert sc["designable"] == 1.0 and 0.4 < sc["sc_rmsd"] < 1.0
    assert sc["sc_mean_dev_framediff"] <= sc["sc_rmsd"] and sc["sc_tm"] > 0.8

    def fold_far(seq):
        return chains[11].ca[: len(bb)] if len(chains[11]) >= len(bb) else np.resize(chains[11].ca, bb.ca.shape)

    far = M.self_consistency(bb, inverse_fold, fold_far)
    assert far["designable"] == 0.0 and far["sc_rmsd"] > 2.0


def test_designability_without_tools_says_what_to_install(chains):
    with pytest.raises(M.DesignabilityUnavailable, match="ProteinMPNN.*ESMFold"):
        M.self_consistency(chains[0])


def test_angle_histograms_separate_real_from_random_walk(chains):
    rng = np.random.default_rng(0)
    walks = []
    for _ in range(5):
        steps = rng.normal(size=(99, 3))
        steps = 3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True)
        walks.append(np.concatenate([np.zeros((1, 3)), np.cumsum(steps, 0)]))
    real = [c.ca for c in chains[:20]]
    held = [c.ca for c in chains[20:40]]
    w_real = M.angle_histogram_w1(held, real)
    w_walk = M.angle_histogram_w1(walks, real)
    assert w_walk["bend_angle_w1"] > 3 * w_real["bend_angle_w1"]
    assert w_walk["ca_dihedral_w1"] > 2 * w_real["ca_dihedral_w1"]


def test_filters(chains):
    kept = filter_backbones(chains[:30], min_length=60, max_length=200, max_coil=0.5, max_rg_factor=1.5)
    assert kept and all(60 <= len(b) <= 200 for b in kept)
    assert all(M.secondary_structure(b.coords)["coil"] <= 0.5 for b in kept)
    assert len(kept) < 30


def test_nearest_nonlocal_ca_closed_form_and_planted_clash():
    line = np.stack([np.arange(10) * 3.8, np.zeros(10), np.zeros(10)], -1)
    d = M.nearest_nonlocal_ca(line)
    assert np.allclose(d, 3 * 3.8)  # on a straight chain the nearest allowed partner is 3 residues away
    folded = line.copy()
    folded[9] = folded[2] + np.array([0.0, 1.5, 0.0])  # residue 9 lands 1.5 A from residue 2
    d = M.nearest_nonlocal_ca(folded)
    assert d[9] == pytest.approx(1.5) and d[2] == pytest.approx(1.5)
    assert M.clash_metrics(folded)["clash_free"] == 0.0  # the same pair is a clash by the metric's definition


def test_ca_angle_features_of_an_ideal_helix():
    # ideal alpha helix CA trace: radius 2.3 A, rise 1.5 A, 100 degrees per residue
    k = np.arange(20)
    ca = np.stack([2.3 * np.cos(np.radians(100 * k)), 2.3 * np.sin(np.radians(100 * k)), 1.5 * k], -1)
    bend, dih = M.ca_angle_features([ca])
    assert bend.shape == (18,) and dih.shape == (17,)
    assert np.allclose(bend, bend[0]) and 85 < bend[0] < 95  # CA bend of a helix ~ 91 degrees
    assert np.allclose(dih, dih[0]) and 45 < dih[0] < 55  # right-handed: CA dihedral ~ +50 degrees (IUPAC)
    _, mirrored = M.ca_angle_features([ca * np.array([1.0, 1.0, -1.0])])
    assert np.allclose(mirrored, -dih)  # a mirror image flips the sign


def test_plot_samples_writes_a_png_and_rejects_an_empty_set(tmp_path, chains):
    out = M.plot_samples(chains[:3], chains[3:6], tmp_path / "fig" / "s.png", title="real vs real")
    assert out == tmp_path / "fig" / "s.png" and out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000
    assert not [p for p in out.parent.iterdir() if p != out]  # no temp file left behind
    with pytest.raises(ValueError, match="'reference' set is empty"):
        M.plot_samples(chains[:2], [], tmp_path / "e.png")


def _idealised(chain: Backbone, n: int | None = None, name: str = "gen") -> Backbone:
    """The chain rebuilt from its frames with ideal geometry, as every generated backbone is."""
    q, trans = chain.frames()
    rot = quaternion_to_matrix(q.double())
    return Backbone.from_frames(rot[:n], trans.double()[:n], name=name)


def test_clash_count_named_with_its_threshold_and_shared_by_the_figure():
    line = np.stack([np.arange(12) * 3.8, np.zeros(12), np.zeros(12)], -1)
    folded = line.copy()
    folded[9] = folded[2] + np.array([0.0, 1.5, 0.0])
    folded[11] = folded[5] + np.array([0.0, 0.0, 2.9])
    c = M.clash_metrics(folded)
    assert c["num_ca_clashes_3A"] == 2.0 and c["num_ca_ca_clashes"] == 0.0 and c["clash_free"] == 0.0
    assert M.clash_metrics(folded, cutoff=2.0)["num_ca_clashes_2A"] == 1.0
    assert M.clash_pairs(folded).tolist() == [[2, 9], [5, 11]]
    assert (M.CLASH_CUTOFF, M.CLASH_MIN_SEP) == (3.0, 3)
    for key in ("clash_fraction", "clash_free", "num_ca_clashes_3A", "num_ca_ca_clashes"):
        assert "3.0 Å" in M.METRIC_DEFINITIONS[key] or "1.0 Å" in M.METRIC_DEFINITIONS[key]


def test_evaluate_leaves_out_constant_metrics_and_reports_length_buckets(chains):
    picks = [c for c in chains if len(c) >= 160][:2] + [c for c in chains if 60 <= len(c) < 100][:2]
    gen = [_idealised(c, name=f"g{i}") for i, c in enumerate(picks)] + [_idealised(picks[0], 40, "short")]
    tab = M.evaluate(gen, diversity_per_length=False)
    assert "angle_N_CA_C_dev" not in tab.summary and tab.constant["angle_N_CA_C_dev"] < 0.01
    assert tab.summary["angle_N_CA_C_dev"] == tab.constant["angle_N_CA_C_dev"]  # still readable by key
    assert "angle_CA_C_N_dev" in tab.summary and "Left out" in tab.to_markdown()
    assert "num_ca_clashes_3A" in tab.summary and tab.summary["duplicate_samples"] == 0.0
    lengths = [len(c) for c in gen]
    expected = {
        "<50": [n for n in lengths if n < 50],
        "50-99": [n for n in lengths if 50 <= n <= 99],
        "150-199": [n for n in lengths if 150 <= n <= 199],
        "200-250": [n for n in lengths if 200 <= n <= 250],
        ">250": [n for n in lengths if n > 250],
    }
    expected = {k: v for k, v in expected.items() if v}
    assert {k: v["num"] for k, v in tab.by_length.items()} == {k: float(len(v)) for k, v in expected.items()}
    rows = [r for r in tab.rows if 50 <= r["length"] <= 99]
    assert tab.by_length["50-99"]["ca_ca_valid"] == pytest.approx(np.mean([r["ca_ca_valid"] for r in rows]))
    assert "| 50-99 | 2 |" in tab.by_length_markdown()
    real = M.evaluate(picks, diversity_per_length=False, length_buckets=None)
    assert real.summary["angle_N_CA_C_dev"] > 0.1 and not real.constant and not real.by_length


def test_evaluate_flags_duplicate_samples(chains):
    a, b = chains[3], chains[4]
    moved = Backbone(a.coords @ _rot(3).T.astype(np.float32) + 7.0, name="copy")
    with pytest.warns(M.DuplicateSamplesWarning, match="1 of 3 samples duplicate"):
        tab = M.evaluate([a, b, moved], diversity_per_length=False)
    assert tab.summary["duplicate_samples"] == 1.0 and tab.duplicates == [(0, 2)]
    assert M.duplicate_pairs([a, b]) == []


def test_plot_samples_draws_traces_of_generated_and_a_real_chain_of_similar_length(tmp_path, chains):
    gen = [_idealised(c, name=f"g{i}") for i, c in enumerate(chains[:5])]
    picked = M.trace_chains(gen, chains[5:], num=3)
    lens = sorted(len(c) for c in gen)
    assert [len(c) for _, c in picked[:3]] == sorted([lens[0], lens[2], lens[4]]) or len(picked) == 4
    assert picked[-1][0].startswith("real") and abs(len(picked[-1][1]) - lens[2]) <= 5
    out = M.plot_samples(gen, chains[5:], tmp_path / "t.png", traces=3)
    small = M.plot_samples(gen, chains[5:], tmp_path / "n.png", traces=0)
    assert out.stat().st_size > small.stat().st_size > 10_000
