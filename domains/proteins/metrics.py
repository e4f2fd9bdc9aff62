"""Protein backbone metrics, computed offline, as defined in FrameDiff / FrameFlow / ReQFlow evaluations.

Every function takes numpy arrays (Å): a backbone ``coords [L, 4, 3]`` (N, CA, C, O) or a CA trace ``[L, 3]``.
:func:`evaluate` runs all of them on a list of :class:`~flowsci.domains.proteins.data.Backbone` objects and returns
a :class:`MetricTable`.

Definitions (x_i = CA of residue i, d_i = |x_{i+1} − x_i|):

* ``ca_ca_deviation`` = mean_i |d_i − 3.80 Å|; ``ca_ca_valid`` = mean_i 1[|d_i − 3.80| < 0.10 Å] (two-sided);
  ``ca_ca_valid_0.25`` with 0.25 Å; ``ca_ca_valid_onesided`` = mean_i 1[d_i < 3.90 Å] (FrameDiff's variant).
* Clashes (one definition, :data:`CLASH_CUTOFF` = 3.0 Å at sequence separation ≥ :data:`CLASH_MIN_SEP` = 3,
  shared by the tables, the figure and :func:`nearest_nonlocal_ca`): ``clash_fraction`` = fraction of pairs
  with |i − j| ≥ 3 and CA–CA < 3.0 Å; ``clash_free`` = no such pair; ``num_ca_clashes_3A`` = number of such
  pairs per chain; ``num_ca_ca_clashes`` = number of pairs i < j with CA–CA < 1.0 Å (FrameDiff's count).
  :data:`METRIC_DEFINITIONS` gives each metric's threshold in words (printed by :meth:`MetricTable.to_markdown`).
* Bond angles N–CA–C, CA–C–N, C–N–CA: mean |deviation| from Engh & Huber (111.2°, 116.2°, 121.7°);
  ``peptide_break_rate`` = fraction of C(i)–N(i+1) > 2.0 Å.
* Secondary structure: pydssp 3-state helix / strand / coil fractions (on N, CA, C, O).
* ``rg`` = sqrt(mean_i |x_i − x̄|²) on CA (Å); ``rg_ratio`` = rg / (2.2 L^0.38).
* TM-scores with tmtools (TM-align). Diversity: mean pairwise TM among samples of one length, each pair scored as
  the average of both normalisations (lower = more diverse). Novelty: per sample, max TM to a reference set,
  normalised by the *sample's* length; reported as mean, fraction < 0.5 and memorisation fraction (> 0.9).
* Designability (self-consistency): inverse folding (ProteinMPNN, 8 sequences) → folding (ESMFold) → Kabsch CA
  RMSD to the generated backbone; designable if min RMSD < 2 Å. We report the true RMSD (``sc_rmsd``) and,
  labelled ``sc_mean_dev_framediff``, the mean per-residue displacement that FrameDiff/FrameFlow/ReQFlow report
  under the name "scRMSD".

:func:`evaluate` also reports the per-chain metrics per length bucket (``MetricTable.by_length``), leaves out of
the summary the metrics that are constant by construction for idealised generated backbones
(:data:`CONSTANT_WHEN_IDEALISED`, kept in ``MetricTable.constant``) and flags duplicate samples
(:func:`duplicate_pairs`).
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowsci.errors import require

__all__ = [
    "ca_ca_metrics",
    "clash_metrics",
    "bond_geometry",
    "secondary_structure",
    "radius_of_gyration",
    "tm_score",
    "diversity",
    "novelty",
    "kabsch_rmsd",
    "self_consistency",
    "DesignabilityUnavailable",
    "backbone_metrics",
    "angle_histogram_w1",
    "ca_angle_features",
    "nearest_nonlocal_ca",
    "plot_samples",
    "trace_chains",
    "clash_pairs",
    "evaluate",
    "MetricTable",
    "Summary",
    "duplicate_pairs",
    "DuplicateSamplesWarning",
    "CLASH_CUTOFF",
    "CLASH_MIN_SEP",
    "LENGTH_BUCKETS",
    "CONSTANT_WHEN_IDEALISED",
    "METRIC_DEFINITIONS",
    "BY_LENGTH_KEYS",
]

#: Clash distance (Å) of non-adjacent CA pairs, used by the tables, the figure and :func:`nearest_nonlocal_ca`.
CLASH_CUTOFF = 3.0
#: Minimum sequence separation |i − j| of a clash pair.
CLASH_MIN_SEP = 3
#: Default length buckets (inclusive residue ranges) of ``evaluate(...).by_length``.
LENGTH_BUCKETS: tuple[tuple[int, int], ...] = ((50, 99), (100, 149), (150, 199), (200, 250))
#: Metrics that are constant by construction for backbones built from frames with idealised geometry (every
#: generated backbone): N–CA–C is fixed inside each residue frame. Left out of the summary when every sample
#: has them at the ideal value (within 0.01°).
CONSTANT_WHEN_IDEALISED: tuple[str, ...] = ("angle_N_CA_C_dev",)
#: What each summary metric counts, with its threshold.
METRIC_DEFINITIONS: dict[str, str] = {
    "num_samples": "chains scored",
    "length": "residues per chain, mean",
    "finite": "chains with finite coordinates (fraction)",
    "ca_ca_valid": "consecutive CA–CA within ±0.10 Å of 3.80 Å (fraction)",
    "ca_ca_valid_0.25": "consecutive CA–CA within ±0.25 Å of 3.80 Å (fraction)",
    "ca_ca_valid_onesided": "consecutive CA–CA < 3.90 Å (fraction; FrameDiff)",
    "ca_ca_deviation": "mean |CA–CA − 3.80 Å| (Å)",
    "ca_ca_mean": "mean consecutive CA–CA (Å)",
    "clash_fraction": "non-adjacent CA pairs (|i−j| ≥ 3) closer than 3.0 Å / all such pairs",
    "clash_free": "chains with no CA pair at |i−j| ≥ 3 closer than 3.0 Å (fraction)",
    "num_ca_clashes_3A": "CA pairs at |i−j| ≥ 3 closer than 3.0 Å, per chain",
    "num_ca_ca_clashes": "CA pairs (any i < j) closer than 1.0 Å, per chain (FrameDiff)",
    "angle_N_CA_C_dev": "mean |N–CA–C − 111.2°| (degrees)",
    "angle_CA_C_N_dev": "mean |CA–C–N − 116.2°| (degrees)",
    "angle_C_N_CA_dev": "mean |C–N–CA − 121.7°| (degrees)",
    "peptide_bond_dev": "mean |C–N − 1.329 Å| over unbroken bonds (Å)",
    "peptide_break_rate": "C(i)–N(i+1) > 2.0 Å (fraction)",
    "helix": "DSSP helix (fraction)",
    "strand": "DSSP strand (fraction)",
    "coil": "DSSP coil (fraction)",
    "rg": "CA radius of gyration (Å)",
    "rg_ratio": "Rg / (2.2·L^0.38), mean",
    "rg_ratio_median": "Rg / (2.2·L^0.38), median",
    "duplicate_samples": "samples identical (CA RMSD < 0.01 Å) to an earlier sample of the same length",
}


def _ca(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, 1] if x.ndim == 3 else x


def ca_ca_metrics(ca: np.ndarray, ideal: float = 3.80, tol: float = 0.10) -> dict[str, float]:
    """Consecutive CA–CA distance metrics (see module docstring).

    Args:
        ca: CA trace ``[L, 3]`` or backbone ``[L, 4, 3]`` (Å).
        ideal: Ideal trans-peptide CA–CA distance (Å).
        tol: Tolerance of the two-sided validity (Å).

    Returns:
        ``ca_ca_deviation``, ``ca_ca_valid``, ``ca_ca_valid_0.25``, ``ca_ca_valid_onesided``, ``ca_ca_mean``.
    """
    x = _ca(ca)
    d = np.linalg.norm(np.diff(x, axis=0), axis=-1)
    return {
        "ca_ca_mean": float(d.mean()),
        "ca_ca_deviation": float(np.abs(d - ideal).mean()),
        "ca_ca_valid": float((np.abs(d - ideal) < tol).mean()),
        "ca_ca_valid_0.25": float((np.abs(d - ideal) < 0.25).mean()),
        "ca_ca_valid_onesided": float((d < ideal + tol).mean()),
    }


def clash_metrics(ca: np.ndarray, cutoff: float = CLASH_CUTOFF, min_sep: int = CLASH_MIN_SEP) -> dict[str, float]:
    """CA–CA steric clashes.

    Args:
        ca: CA trace ``[L, 3]`` or backbone ``[L, 4, 3]``.
        cutoff: Clash distance for non-adjacent pairs (Å).
        min_sep: Minimum sequence separation |i − j| for the clash fraction.

    Returns:
        ``clash_fraction`` (pairs |i−j| ≥ min_sep closer than cutoff / all such pairs), ``clash_free`` (1.0 if
        none), ``num_ca_clashes_<cutoff>A`` (the number of such pairs; ``num_ca_clashes_3A`` at the default)
        and ``num_ca_ca_clashes`` (pairs i < j closer than 1.0 Å, FrameDiff).
    """
    x = _ca(ca)
    n = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.triu_indices(n, k=min_sep)
    count = int((d[i, j] < cutoff).sum())
    frac = count / len(i) if len(i) else 0.0
    i1, j1 = np.triu_indices(n, k=1)
    return {
        "clash_fraction": float(frac),
        "clash_free": float(count == 0),
        f"num_ca_clashes_{cutoff:g}A": float(count),
        "num_ca_ca_clashes": float((d[i1, j1] < 1.0).sum()),
    }


def _angles(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def bond_geometry(coords: np.ndarray) -> dict[str, float]:
    """Backbone bond-angle deviations and peptide-bond breaks from ``coords [L, 4, 3]`` (N, CA, C, O).

    Returns:
        ``angle_N_CA_C_dev``, ``angle_CA_C_N_dev``, ``angle_C_N_CA_dev`` (mean |deviation|, degrees),
        ``peptide_bond_dev`` (mean |C–N − 1.329| Å over unbroken bonds) and ``peptide_break_rate``.
    """
    x = np.asarray(coords, dtype=np.float64)
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    pep = np.linalg.norm(n[1:] - c[:-1], axis=-1)
    ok = pep <= 2.0
    out = {"angle_N_CA_C_dev": float(np.abs(_angles(n, ca, c) - 111.2).mean())}
    if len(x) > 1:
        out["angle_CA_C_N_dev"] = (
            float(np.abs(_angles(ca[:-1], c[:-1], n[1:]) - 116.2)[ok].mean()) if ok.any() else float("nan")
        )
        out["angle_C_N_CA_dev"] = (
            float(np.abs(_angles(c[:-1], n[1:], ca[1:]) - 121.7)[ok].mean()) if ok.any() else float("nan")
        )
        out["peptide_bond_dev"] = float(np.abs(pep[ok] - 1.329).mean()) if ok.any() else float("nan")
        out["peptide_break_rate"] = float((~ok).mean())
    return out


def secondary_structure(coords: np.ndarray) -> dict[str, float]:
    """3-state DSSP fractions with pydssp (hydrogen bonds from N, CA, C, O).

    Args:
        coords: ``[L, 4, 3]`` backbone (Å).

    Returns:
        ``helix``, ``strand``, ``coil`` fractions (sum to 1).
    """
    pydssp = require("pydssp", "proteins")

    ss = pydssp.assign(np.asarray(coords, dtype=np.float32), out_type="c3")
    ss = np.asarray(ss)
    return {
        "helix": float((ss == "H").mean()),
        "strand": float((ss == "E").mean()),
        "coil": float((ss == "-").mean()),
    }


def radius_of_gyration(ca: np.ndarray) -> float:
    """CA radius of gyration :math:`\\sqrt{\\frac1L\\sum_i |x_i - \\bar x|^2}` (Å)."""
    x = _ca(ca)
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(-1).mean()))


def tm_score(a: np.ndarray, b: np.ndarray, norm: str = "chain1") -> float:
    """TM-score of two CA traces by TM-align (tmtools).

    Args:
        a: CA trace (or backbone) of chain 1.
        b: CA trace (or backbone) of chain 2.
        norm: ``"chain1"`` (normalised by len(a)), ``"chain2"``, ``"mean"`` or ``"max"``.

    Returns:
        TM-score in (0, 1].
    """
    tmtools = require("tmtools", "proteins")

    xa, xb = np.ascontiguousarray(_ca(a)), np.ascontiguousarray(_ca(b))
    r = tmtools.tm_align(xa, xb, "A" * len(xa), "A" * len(xb))
    if norm == "chain1":
        return float(r.tm_norm_chain1)
    if norm == "chain2":
        return float(r.tm_norm_chain2)
    if norm == "mean":
        return float(0.5 * (r.tm_norm_chain1 + r.tm_norm_chain2))
    if norm == "max":
        return float(max(r.tm_norm_chain1, r.tm_norm_chain2))
    raise ValueError(f"norm must be chain1/chain2/mean/max, got {norm!r}")


def diversity(samples: Sequence[np.ndarray]) -> dict[str, float]:
    """Mean pairwise TM-score (average of both normalisations) among samples of one length; lower = more
    diverse. Also the greedy cluster ratio at TM ≥ 0.5 (#clusters / #samples; higher = more diverse).

    Args:
        samples: CA traces or backbones.

    Returns:
        ``pairwise_tm`` and ``cluster_ratio`` (NaN / 1.0 for fewer than two samples).
    """
    n = len(samples)
    if n < 2:
        return {"pairwise_tm": float("nan"), "cluster_ratio": 1.0}
    tm = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        tm[i, j] = tm[j, i] = tm_score(samples[i], samples[j], norm="mean")
    iu = np.triu_indices(n, 1)
    centres: list[int] = []
    for i in range(n):
        if not any(tm[i, c] >= 0.5 for c in centres):
            centres.append(i)
    return {"pairwise_tm": float(tm[iu].mean()), "cluster_ratio": len(centres) / n}


def novelty(
    samples: Sequence[np.ndarray], reference: Sequence[np.ndarray], length_ratio: float = 0.6
) -> dict[str, float | list[float]]:
    """Max TM-score of each sample to a reference set (e.g. training chains), normalised by sample length.

    Reference chains whose length ratio min/max to the sample is below ``length_ratio`` are skipped (a cheap
    pre-filter; TM-align costs ~20 ms per pair); set 0 to score all.

    Returns:
        ``novelty_max_tm`` (mean over samples), ``novelty_frac_below_0.5``, ``memorisation_frac_above_0.9``
        and
        ``per_sample`` (list of max TM).
    """
    per = []
    for s in samples:
        ls = len(_ca(s))
        best = 0.0
        for r in reference:
            lr = len(_ca(r))
            if min(ls, lr) / max(ls, lr) < length_ratio:
                continue
            best = max(best, tm_score(s, r, norm="chain1"))
        per.append(best)
    arr = np.asarray(per)
    return {
        "novelty_max_tm": float(arr.mean()) if len(arr) else float("nan"),
        "novelty_frac_below_0.5": float((arr < 0.5).mean()) if len(arr) else float("nan"),
        "memorisation_frac_above_0.9": float((arr > 0.9).mean()) if len(arr) else float("nan"),
        "per_sample": per,
    }


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Optimal-superposition distances between two equally long point sets ``[L, 3]``.

    Returns:
        ``(rmsd, mean_deviation)``: the true root-mean-square deviation after Kabsch alignment and the mean
        per-point displacement after the same alignment (FrameDiff's "scRMSD"; always ≤ rmsd).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"kabsch_rmsd: shapes differ {a.shape} vs {b.shape}")
    a0, b0 = a - a.mean(0), b - b.mean(0)
    u, _, vt = np.linalg.svd(a0.T @ b0)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    diff = a0 @ rot - b0
    dev = np.linalg.norm(diff, axis=-1)
    return float(np.sqrt((dev**2).mean())), float(dev.mean())


class DesignabilityUnavailable(ImportError):
    """ProteinMPNN / ESMFold are not installed."""


def _default_tools() -> tuple[Callable, Callable]:
    msg = (
        "Designability needs an inverse-folding and a folding model, which are not installed. Install "
        "ProteinMPNN (https://github.com/dauparas/ProteinMPNN, weights v_48_020) and ESMFold "
        "(`pip install fair-esm[esmfold]` plus openfold, weights esmfold_v1), then pass "
        "`inverse_fold=fn(backbone, num_seqs) -> list[str]` and `fold=fn(sequence) -> CA [L, 3]` to "
        "`self_consistency` (or `evaluate(..., designability=(inverse_fold, fold))`)."
    )
    try:
        import esm  # noqa: F401
        import protein_mpnn_utils  # noqa: F401
    except ImportError as exc:
        raise DesignabilityUnavailable(msg) from exc
    raise DesignabilityUnavailable(msg + " (the packages import, but flowsci does not load their weights itself)")


def self_consistency(
    backbone,
    inverse_fold: Callable | None = None,
    fold: Callable | None = None,
    num_seqs: int = 8,
    threshold: float = 2.0,
) -> dict[str, float]:
    """Self-consistency designability of one generated backbone.

    Args:
        backbone: A :class:`~flowsci.domains.proteins.data.Backbone`.
        inverse_fold: ``fn(backbone, num_seqs) -> list[str]`` (ProteinMPNN, T = 0.1 in the papers).
        fold: ``fn(sequence) -> CA [L, 3]`` (ESMFold in the papers).
        num_seqs: Sequences per backbone.
        threshold: Designable if the min RMSD is below this (Å).

    Returns:
        ``sc_rmsd`` (min true Kabsch RMSD over sequences), ``sc_mean_dev_framediff`` (min mean-deviation
        variant), ``sc_tm`` (max TM-score, normalised by the backbone length), ``designable`` (1.0/0.0 on
        ``sc_rmsd``) and ``designable_framediff`` (on the mean-deviation variant).

    Raises:
        DesignabilityUnavailable: no tools passed and ProteinMPNN/ESMFold not available (says what to
            install).
    """
    if inverse_fold is None or fold is None:
        _default_tools()
    seqs = inverse_fold(backbone, num_seqs)
    if len(seqs) != num_seqs:
        raise ValueError(f"inverse_fold returned {len(seqs)} sequences, expected {num_seqs}")
    rmsds, devs, tms = [], [], []
    for s in seqs:
        pred = np.asarray(fold(s), dtype=np.float64)
        if pred.shape != backbone.ca.shape:
            raise ValueError(f"fold returned CA of shape {pred.shape}, expected {backbone.ca.shape}")
        r, m = kabsch_rmsd(pred, backbone.ca)
        rmsds.append(r)
        devs.append(m)
        tms.append(tm_score(backbone.ca, pred, norm="chain1"))
    return {
        "sc_rmsd": float(min(rmsds)),
        "sc_mean_dev_framediff": float(min(devs)),
        "sc_tm": float(max(tms)),
        "designable": float(min(rmsds) < threshold),
        "designable_framediff": float(min(devs) < threshold),
    }


def ca_angle_features(chains: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled CA bend angles (i, i+1, i+2) and CA dihedrals (i..i+3, in (−180, 180]) of ``chains``, in degrees."""
    bends, dihs = [], []
    for c in chains:
        x = _ca(c)
        bends.append(_angles(x[:-2], x[1:-1], x[2:]))
        b1, b2, b3 = x[1:-2] - x[:-3], x[2:-1] - x[1:-2], x[3:] - x[2:-1]
        n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
        y = (np.cross(n1, n2) * b2).sum(-1) / np.linalg.norm(b2, axis=-1)  # IUPAC sign: α-helix ≈ +50°
        dihs.append(np.degrees(np.arctan2(y, (n1 * n2).sum(-1))))
    return np.concatenate(bends), np.concatenate(dihs)


def angle_histogram_w1(samples: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict[str, float]:
    """Wasserstein-1 distances between CA bend-angle (i, i+1, i+2; degrees) and CA dihedral (i..i+3; degrees,
    on the circle approximated by the shorter of the raw and shifted distances) distributions of samples and
    of reference chains — a folding-model-free distributional check.
    """
    from scipy.stats import wasserstein_distance

    sb, sd = ca_angle_features(samples)
    rb, rd = ca_angle_features(reference)
    w_d = min(wasserstein_distance(sd, rd), wasserstein_distance(np.mod(sd, 360.0), np.mod(rd, 360.0)))
    return {"bend_angle_w1": float(wasserstein_distance(sb, rb)), "ca_dihedral_w1": float(w_d)}


def nearest_nonlocal_ca(ca: np.ndarray, min_sep: int = CLASH_MIN_SEP) -> np.ndarray:
    """Per residue, the distance (Å) to the nearest CA at sequence separation ≥ ``min_sep`` (clashes sit
    under 3 Å; none of the 177 bundled real chains has one under 3.4 Å). Returns ``[L]`` (inf when no partner).
    """
    x = _ca(ca)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.indices(d.shape)
    d[np.abs(i - j) < min_sep] = np.inf
    return d.min(1)


#: DSSP state → trace colour in :func:`plot_samples`.
SS_COLOURS = {"H": "tab:red", "E": "tab:blue", "-": "0.6"}


def _dssp_states(coords: np.ndarray) -> np.ndarray:
    pydssp = require("pydssp", "proteins")

    return np.asarray(pydssp.assign(np.asarray(coords, dtype=np.float32), out_type="c3"))


def _principal_axes(ca: np.ndarray) -> np.ndarray:
    """CA trace centred and rotated onto its principal axes (largest spread first)."""
    x = ca - ca.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt.T


def clash_pairs(ca: np.ndarray, cutoff: float = CLASH_CUTOFF, min_sep: int = CLASH_MIN_SEP) -> np.ndarray:
    """Index pairs ``[K, 2]`` (i < j, j − i ≥ ``min_sep``) of CA atoms closer than ``cutoff`` Å: the pairs that
    :func:`clash_metrics` counts (``num_ca_clashes_3A`` = K at the defaults).
    """
    x = _ca(ca)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.triu_indices(len(x), k=min_sep)
    hit = d[i, j] < cutoff
    return np.stack([i[hit], j[hit]], -1)


def trace_chains(samples: Sequence, reference: Sequence | None, num: int = 3) -> list[tuple[str, np.ndarray]]:
    """The chains :func:`plot_samples` draws as traces: ``num`` generated chains spread over the sample
    lengths (shortest, median, longest, …) and the finite reference chain closest in length to their median.

    Returns:
        ``(label, coords [L, 4, 3])`` pairs, generated first.
    """
    coords = [np.asarray(getattr(b, "coords", b), dtype=np.float64) for b in samples]
    finite = [i for i, c in enumerate(coords) if np.isfinite(c).all()]
    if not finite or num <= 0:
        return []
    order = sorted(finite, key=lambda i: (len(coords[i]), i))
    picks = sorted({order[round(k * (len(order) - 1) / max(num - 1, 1))] for k in range(min(num, len(order)))})
    out = [(f"generated #{i}, L = {len(coords[i])}", coords[i]) for i in picks]
    if reference:
        refs = [np.asarray(getattr(b, "coords", b), dtype=np.float64) for b in reference]
        refs = [r for r in refs if np.isfinite(r).all()]
        if refs:
            target = float(np.median([len(coords[i]) for i in picks]))
            best = min(range(len(refs)), key=lambda k: (abs(len(refs[k]) - target), k))
            out.append((f"real, L = {len(refs[best])}", refs[best]))
    return out


def _draw_trace(axes: Sequence, label: str, coords: np.ndarray, lim: float) -> None:
    """Two orthogonal projections (principal axes 1–2 and 1–3) of one CA trace, coloured by DSSP state, with
    clash pairs (:func:`clash_pairs`) joined by black lines.
    """
    from matplotlib.collections import LineCollection

    ca = _principal_axes(_ca(coords))
    ss = _dssp_states(coords)
    pairs = clash_pairs(coords)
    rr = radius_of_gyration(ca) / (2.2 * len(ca) ** 0.38)
    for ax, (a, b), name in zip(axes, ((0, 1), (0, 2)), ("PC1–PC2", "PC1–PC3"), strict=True):
        seg = np.stack([ca[:-1][:, [a, b]], ca[1:][:, [a, b]]], 1)
        ax.add_collection(LineCollection(seg, colors=[SS_COLOURS.get(s, "0.6") for s in ss[:-1]], linewidths=1.4))
        ax.scatter(ca[:, a], ca[:, b], s=3, c=[SS_COLOURS.get(s, "0.6") for s in ss], zorder=2)
        for i, j in pairs:
            ax.plot(ca[[i, j], a], ca[[i, j], b], "k-", linewidth=0.8, zorder=3)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{name} (Å)", fontsize=7)
        ax.set_title(
            f"{label}\n{len(pairs)} clashes (< {CLASH_CUTOFF:g} Å, |i−j| ≥ {CLASH_MIN_SEP}), Rg ratio {rr:.2f}",
            fontsize=8,
        )


def plot_samples(
    samples: Sequence,
    reference: Sequence | None = None,
    path: str | os.PathLike = "samples.png",
    title: str | None = None,
    labels: tuple[str, str] = ("generated", "reference"),
    traces: int = 3,
) -> Path:
    """One PNG comparing generated backbones with reference chains.

    Six distribution panels: consecutive CA–CA distance, nearest non-local CA distance (clashes), CA bend
    angle, CA dihedral, Rg against length (with the empirical 2.2·L^0.38 Å) and DSSP helix / strand / coil
    fractions. Below them, ``traces`` generated CA traces (shortest, median, longest length, …;
    :func:`trace_chains`) and the reference chain closest to their median length, each in two orthogonal
    projections onto its principal axes on a common scale, coloured by DSSP state (helix red, strand blue,
    coil grey); black lines join clash pairs, with the tables' definition (CA–CA < :data:`CLASH_CUTOFF` Å at
    |i − j| ≥ :data:`CLASH_MIN_SEP`, :func:`clash_pairs`).

    Args:
        samples: :class:`Backbone` objects or ``[L, 4, 3]`` arrays (Å).
        reference: Reference chains (e.g. ``ProteinDataModule.val_backbones``); None draws the samples alone.
        path: Output PNG (atomic write).
        title: Figure title.
        labels: Legend names of the two sets.
        traces: Generated chains drawn as traces (0: distributions only).

    Returns:
        The written path.
    """
    from flowsci.io import atomic_write
    from flowsci.plots import Panel, draw_panel

    sets = {labels[0]: samples} if reference is None else {labels[0]: samples, labels[1]: reference}
    coords = {k: [np.asarray(getattr(b, "coords", b), dtype=np.float64) for b in v] for k, v in sets.items()}
    for k, v in coords.items():
        if not v:
            raise ValueError(f"plot_samples: the {k!r} set is empty")
    feats = {k: ca_angle_features(v) for k, v in coords.items()}
    ss = {k: np.mean([list(secondary_structure(c).values()) for c in v], axis=0) for k, v in coords.items()}
    lengths = np.arange(30, max(len(c) for v in coords.values() for c in v) + 10)
    panels = [
        Panel(
            "consecutive CA–CA distance",
            {
                k: np.concatenate([np.linalg.norm(np.diff(_ca(c), axis=0), axis=-1) for c in v])
                for k, v in coords.items()
            },
            xlabel="Å (ideal 3.80)",
            bins=np.linspace(2.8, 4.8, 51),
        ),
        Panel(
            f"nearest CA at |i − j| ≥ {CLASH_MIN_SEP} (clash < {CLASH_CUTOFF:g} Å)",
            {k: np.concatenate([nearest_nonlocal_ca(c) for c in v]) for k, v in coords.items()},
            xlabel="Å",
            bins=np.linspace(0.0, 10.0, 51),
        ),
        Panel("CA bend angle (i, i+1, i+2)", {k: f[0] for k, f in feats.items()}, xlabel="degrees"),
        Panel(
            "CA dihedral (i .. i+3)",
            {k: f[1] for k, f in feats.items()},
            xlabel="degrees",
            bins=np.linspace(-180, 180, 61),
        ),
        Panel(
            "radius of gyration",
            {k: np.array([[len(c), radius_of_gyration(c)] for c in v]) for k, v in coords.items()},
            kind="scatter",
            xlabel="length (residues)",
            ylabel="Rg (Å)",
            curve=("2.2·L^0.38", lengths, 2.2 * lengths**0.38),
        ),
        Panel(
            "DSSP (pydssp, 3 states)", ss, kind="bar", categories=("helix", "strand", "coil"), ylabel="mean fraction"
        ),
    ]
    chains = trace_chains(samples, reference, traces)
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    trace_rows = math.ceil(len(chains) / 2)  # two chains (four projections) per row
    fig = plt.figure(figsize=(13.0, 3.4 * (2 + trace_rows)))
    grid = fig.add_gridspec(2 + trace_rows, 12)
    for k, panel in enumerate(panels):
        draw_panel(fig.add_subplot(grid[k // 3, 4 * (k % 3) : 4 * (k % 3) + 4]), panel)
    if chains:
        lim = 1.08 * max(np.abs(_principal_axes(_ca(c))).max() for _, c in chains)
        for k, (label, c) in enumerate(chains):
            r, col = 2 + k // 2, 6 * (k % 2)
            _draw_trace(
                [fig.add_subplot(grid[r, col : col + 3]), fig.add_subplot(grid[r, col + 3 : col + 6])], label, c, lim
            )
        states = (("H", "helix"), ("E", "strand"), ("-", "coil"))
        handles = [plt.Line2D([], [], color=SS_COLOURS[s], label=n) for s, n in states]
        handles.append(plt.Line2D([], [], color="k", linewidth=0.8, label=f"clash pair (< {CLASH_CUTOFF:g} Å)"))
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.02 if chains else 0, 1, 1))
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)


def backbone_metrics(coords: np.ndarray) -> dict[str, float]:
    """All per-chain metrics of one backbone ``[L, 4, 3]`` (geometry, clashes, angles, DSSP, Rg)."""
    x = np.asarray(coords, dtype=np.float64)
    out: dict[str, float] = {"length": float(len(x))}
    out.update(ca_ca_metrics(x))
    out.update(clash_metrics(x))
    out.update(bond_geometry(x))
    out.update(secondary_structure(x))
    rg = radius_of_gyration(x)
    out["rg"] = rg
    out["rg_ratio"] = rg / (2.2 * len(x) ** 0.38)
    out["finite"] = float(np.isfinite(x).all())
    return out


class DuplicateSamplesWarning(UserWarning):
    """:func:`evaluate` found samples that are identical to an earlier sample (e.g. the same seed reused)."""


def duplicate_pairs(samples: Sequence, tol: float = 0.01) -> list[tuple[int, int]]:
    """Pairs ``(i, j)``, i < j, of equally long samples whose CA traces coincide up to a rigid motion.

    Args:
        samples: :class:`Backbone` objects, ``[L, 4, 3]`` backbones or ``[L, 3]`` CA traces (Å).
        tol: Largest Kabsch CA RMSD (Å) of a duplicate.

    Returns:
        Each duplicate sample ``j`` paired with the first earlier sample ``i`` it repeats.
    """
    cas = [_ca(np.asarray(getattr(s, "coords", s), dtype=np.float64)) for s in samples]
    rgs = [radius_of_gyration(c) if np.isfinite(c).all() else np.nan for c in cas]
    pairs: list[tuple[int, int]] = []
    seen: set[int] = set()
    for j in range(len(cas)):
        for i in range(j):
            if i in seen or len(cas[i]) != len(cas[j]) or not abs(rgs[i] - rgs[j]) <= tol:
                continue
            if kabsch_rmsd(cas[i], cas[j])[0] <= tol:
                pairs.append((i, j))
                seen.add(j)
                break
    return pairs


class Summary(dict):
    """The summary dict of :func:`evaluate`.

    Metrics left out because they are constant by construction (``constant``) are not listed, but reading one
    by key still returns its constant value, so callers that index a fixed set of keys keep working.
    """

    def __init__(self, *args: Any, constant: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.constant = dict(constant or {})

    def __missing__(self, key: str) -> float:
        if key in self.constant:
            return self.constant[key]
        raise KeyError(key)


def _bucket_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi}"


def _length_bucket_rows(
    rows: Sequence[dict], buckets: Sequence[tuple[int, int]], keys: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per-chain metric means (and the median Rg ratio) of ``rows`` per inclusive length range; chains outside
    every range go to ``"<lo"`` / ``">hi"`` (present only when such chains exist).
    """
    lo, hi = min(b[0] for b in buckets), max(b[1] for b in buckets)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        n = int(r["length"])
        label = next((_bucket_label(a, b) for a, b in buckets if a <= n <= b), None)
        if label is None:
            label = f"<{lo}" if n < lo else (f">{hi}" if n > hi else "other")
        groups.setdefault(label, []).append(r)
    order = [f"<{lo}", *(_bucket_label(a, b) for a, b in buckets), "other", f">{hi}"]
    out: dict[str, dict[str, float]] = {}
    for label in order:
        if label not in groups:
            continue
        g = groups[label]
        entry = {"num": float(len(g))}
        for k in keys:
            vals = np.asarray([r[k] for r in g], dtype=np.float64)
            entry[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        entry["rg_ratio_median"] = float(np.median([r["rg_ratio"] for r in g]))
        out[label] = entry
    return out


#: Columns of ``MetricTable.by_length`` (besides ``num`` and ``rg_ratio_median``).
BY_LENGTH_KEYS = (
    "ca_ca_valid",
    "ca_ca_valid_0.25",
    "clash_free",
    "clash_fraction",
    "num_ca_clashes_3A",
    "num_ca_ca_clashes",
    "peptide_break_rate",
    "helix",
    "strand",
    "coil",
    "rg_ratio",
)


@dataclass
class MetricTable:
    """Per-sample rows and a summary.

    Attributes:
        rows: One dict per sample (name, length, per-chain metrics).
        summary: Means over samples plus set-level metrics (diversity, novelty, distributional), a
            :class:`Summary`.
        by_length: Length bucket label (``"50-99"``, …) → per-chain means of the bucket's chains (``num``,
            :data:`BY_LENGTH_KEYS`, ``rg_ratio_median``).
        constant: Metrics left out of the summary because they are constant by construction for these samples
            (:data:`CONSTANT_WHEN_IDEALISED`), with their value.
        duplicates: ``(i, j)`` pairs of identical samples (:func:`duplicate_pairs`).
    """

    rows: list[dict] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)
    by_length: dict[str, dict[str, float]] = field(default_factory=dict)
    constant: dict[str, float] = field(default_factory=dict)
    duplicates: list[tuple[int, int]] = field(default_factory=list)

    def to_markdown(self, keys: Sequence[str] | None = None) -> str:
        """The summary as a markdown table: metric, value and its definition with the threshold."""
        keys = list(keys or self.summary)
        lines = ["| metric | value | definition |", "|---|---|---|"]
        for k in keys:
            v = self.summary[k]
            val = f"{v:.4g}" if isinstance(v, float) else f"{v}"
            definition = METRIC_DEFINITIONS.get(k, "").replace("|", "\\|")
            lines.append(f"| {k} | {val} | {definition} |")
        if self.constant:
            lines.append("")
            lines.append(
                "Left out, constant by construction for these (idealised) backbones: "
                + ", ".join(f"{k} = {v:.3g}" for k, v in self.constant.items())
            )
        return "\n".join(lines)

    def by_length_markdown(self, keys: Sequence[str] | None = None) -> str:
        """``by_length`` as a markdown table, one row per length bucket."""
        cols = ["num", *(keys or BY_LENGTH_KEYS), "rg_ratio_median"]
        lines = ["| length | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for label, entry in self.by_length.items():
            vals = [f"{entry[c]:.0f}" if c == "num" else f"{entry[c]:.3g}" for c in cols]
            lines.append(f"| {label} | " + " | ".join(vals) + " |")
        return "\n".join(lines)

    def __getitem__(self, key: str) -> float:
        return self.summary[key]

    def to_frame(self) -> Any:
        """The summary as a one-row ``pandas.DataFrame`` (the domain contract's table)."""
        import pandas as pd

        return pd.DataFrame([dict(self.summary)])


def evaluate(
    samples: Sequence,
    reference: Sequence | None = None,
    diversity_per_length: bool = True,
    novelty_refs: int | None = 60,
    designability: tuple[Callable, Callable] | None = None,
    seed: int = 0,
    length_buckets: Sequence[tuple[int, int]] | None = LENGTH_BUCKETS,
) -> MetricTable:
    """Score generated backbones with the field's offline metrics.

    Args:
        samples: :class:`Backbone` objects (or ``[L, 4, 3]`` arrays).
        reference: Reference backbones (training or validation chains) for novelty and angle-distribution
            distances; None skips those.
        diversity_per_length: Compute mean pairwise TM among samples of each length (averaged over lengths).
        novelty_refs: Use at most this many (seeded random) reference chains for novelty (TM-align costs
            ~20 ms per pair); None uses all.
        designability: Optional ``(inverse_fold, fold)`` callables for :func:`self_consistency`.
        seed: Seed of the reference subsample.
        length_buckets: Inclusive length ranges of ``by_length`` (default 50–99, 100–149, 150–199, 200–250;
            chains outside go to ``"<50"`` / ``">250"``); None skips it.

    Returns:
        A :class:`MetricTable`; ``summary`` holds per-chain means plus ``rg_ratio_median``,
        ``duplicate_samples``, ``pairwise_tm``, ``novelty_*``, ``bend_angle_w1``, ``ca_dihedral_w1`` and (if
        requested) designability rates. Designability is absent (not zero) when no tools are given. Metrics that
        are constant by construction for the samples (:data:`CONSTANT_WHEN_IDEALISED`: every sample at the
        ideal value) move from ``summary`` to ``constant``. Duplicate samples (:func:`duplicate_pairs`) are
        counted in ``summary["duplicate_samples"]``, listed in ``duplicates`` and raise a
        :class:`DuplicateSamplesWarning` (they inflate ``pairwise_tm``).
    """
    if len(samples) == 0:
        return MetricTable(rows=[], summary=Summary({"num_samples": 0.0}))
    coords = [np.asarray(getattr(s, "coords", s), dtype=np.float64) for s in samples]
    names = [getattr(s, "name", f"sample_{i}") for i, s in enumerate(samples)]
    rows = []
    for name, x in zip(names, coords, strict=True):
        row = {"name": name}
        row.update(backbone_metrics(x))
        rows.append(row)
    keys = [k for k in rows[0] if k != "name"] if rows else []
    summary = Summary({"num_samples": float(len(rows))})
    constant: dict[str, float] = {}
    for k in keys:
        vals = np.asarray([r[k] for r in rows], dtype=np.float64)
        value = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        if k in CONSTANT_WHEN_IDEALISED and np.isfinite(vals).all() and np.abs(vals).max() < 0.01:
            constant[k] = value
        else:
            summary[k] = value
    summary.constant = constant
    summary["rg_ratio_median"] = float(np.median([r["rg_ratio"] for r in rows])) if rows else float("nan")
    dups = duplicate_pairs(coords)
    summary["duplicate_samples"] = float(len(dups))
    if dups:
        shown = ", ".join(f"{names[j]} = {names[i]}" for i, j in dups[:5])
        warnings.warn(
            f"evaluate: {len(dups)} of {len(rows)} samples duplicate an earlier sample ({shown}"
            f"{', …' if len(dups) > 5 else ''}); the same seed was probably reused for the same length. "
            "Diversity (pairwise_tm) counts them as separate samples.",
            DuplicateSamplesWarning,
            stacklevel=2,
        )
    finite = [x for x in coords if np.isfinite(x).all()]
    if diversity_per_length and finite:
        by_len: dict[int, list] = {}
        for x in finite:
            by_len.setdefault(len(x), []).append(x)
        tms = [diversity(v)["pairwise_tm"] for v in by_len.values() if len(v) > 1]
        summary["pairwise_tm"] = float(np.mean(tms)) if tms else float("nan")
    if reference is not None and finite:
        refs = [np.asarray(getattr(r, "coords", r), dtype=np.float64) for r in reference]
        summary.update(angle_histogram_w1(finite, refs))
        if novelty_refs is not None and len(refs) > novelty_refs:
            idx = np.random.default_rng(seed).choice(len(refs), novelty_refs, replace=False)
            refs = [refs[i] for i in sorted(idx)]
        nov = novelty(finite, refs)
        summary.update({k: v for k, v in nov.items() if k != "per_sample"})
    if designability is not None:
        inv, fold = designability
        sc = [self_consistency(s, inv, fold) for s in samples]
        for k in sc[0]:
            summary[k] = float(np.mean([r[k] for r in sc]))
        for r, s in zip(rows, sc, strict=True):
            r.update(s)
    by_length = _length_bucket_rows(rows, length_buckets, BY_LENGTH_KEYS) if length_buckets else {}
    return MetricTable(rows=rows, summary=summary, by_length=by_length, constant=constant, duplicates=dups)
