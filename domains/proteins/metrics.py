"""Protein backbone metrics, computed offline, as defined in FrameDiff / FrameFlow / ReQFlow evaluations.

Every function takes numpy arrays (Å): a backbone ``coords [L, 4, 3]`` (N, CA, C, O) or a CA trace ``[L, 3]``.
:func:`evaluate` runs all of them on a list of :class:`~flowsci.domains.proteins.data.Backbone` objects and
returns
a :class:`MetricTable`.

Definitions (x_i = CA of residue i, d_i = |x_{i+1} − x_i|):

* ``ca_ca_deviation`` = mean_i |d_i − 3.80 Å|; ``ca_ca_valid`` = mean_i 1[|d_i − 3.80| < 0.10 Å] (two-sided);
  ``ca_ca_valid_0.25`` with 0.25 Å; ``ca_ca_valid_onesided`` = mean_i 1[d_i < 3.90 Å] (FrameDiff's variant).
* ``clash_fraction`` = fraction of pairs with |i − j| ≥ 3 and CA–CA < 3.0 Å; ``clash_free`` = no such pair;
  ``num_ca_ca_clashes`` = number of pairs i < j with CA–CA < 1.0 Å (FrameDiff's count).
* Bond angles N–CA–C, CA–C–N, C–N–CA: mean |deviation| from Engh & Huber (111.2°, 116.2°, 121.7°);
  ``peptide_break_rate`` = fraction of C(i)–N(i+1) > 2.0 Å.
* Secondary structure: pydssp 3-state helix / strand / coil fractions (on N, CA, C, O).
* ``rg`` = sqrt(mean_i |x_i − x̄|²) on CA (Å); ``rg_ratio`` = rg / (2.2 L^0.38).
* TM-scores with tmtools (TM-align). Diversity: mean pairwise TM among samples of one length, each pair
  scored as
  the average of both normalisations (lower = more diverse). Novelty: per sample, max TM to a reference set,
  normalised by the *sample's* length; reported as mean, fraction < 0.5 and memorisation fraction (> 0.9).
* Designability (self-consistency): inverse folding (ProteinMPNN, 8 sequences) → folding (ESMFold) → Kabsch CA
  RMSD to the generated backbone; designable if min RMSD < 2 Å. We report the true RMSD (``sc_rmsd``) and,
  labelled ``sc_mean_dev_framediff``, the mean per-residue displacement that FrameDiff/FrameFlow/ReQFlow
  report
  under the name "scRMSD".
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

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
    "evaluate",
    "MetricTable",
]


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


def clash_metrics(ca: np.ndarray, cutoff: float = 3.0, min_sep: int = 3) -> dict[str, float]:
    """CA–CA steric clashes.

    Args:
        ca: CA trace ``[L, 3]`` or backbone ``[L, 4, 3]``.
        cutoff: Clash distance for non-adjacent pairs (Å).
        min_sep: Minimum sequence separation |i − j| for the clash fraction.

    Returns:
        ``clash_fraction`` (pairs |i−j| ≥ min_sep closer than cutoff / all such pairs), ``clash_free`` (1.0 if
        none), ``num_ca_ca_clashes`` (pairs i < j closer than 1.0 Å, FrameDiff).
    """
    x = _ca(ca)
    n = len(x)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.triu_indices(n, k=min_sep)
    frac = float((d[i, j] < cutoff).mean()) if len(i) else 0.0
    i1, j1 = np.triu_indices(n, k=1)
    return {
        "clash_fraction": frac,
        "clash_free": float(frac == 0.0),
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
    import pydssp

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
    import tmtools

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
        variant),
        ``sc_tm`` (max TM-score, normalised by the backbone length), ``designable`` (1.0/0.0 on ``sc_rmsd``)
        and
        ``designable_framediff`` (on the mean-deviation variant).

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


def nearest_nonlocal_ca(ca: np.ndarray, min_sep: int = 3) -> np.ndarray:
    """Per residue, the distance (Å) to the nearest CA at sequence separation ≥ ``min_sep`` (clashes sit
    under 3 Å; none of the 177 bundled real chains has one under 3.4 Å). Returns ``[L]`` (inf when no partner).
    """
    x = _ca(ca)
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    i, j = np.indices(d.shape)
    d[np.abs(i - j) < min_sep] = np.inf
    return d.min(1)


def plot_samples(
    samples: Sequence,
    reference: Sequence | None = None,
    path: str | os.PathLike = "samples.png",
    title: str | None = None,
    labels: tuple[str, str] = ("generated", "reference"),
) -> Path:
    """One PNG comparing generated backbones with reference chains on six panels: consecutive CA–CA distance,
    nearest non-local CA distance (clashes), CA bend angle, CA dihedral, Rg against length (with the empirical
    2.2·L^0.38 Å) and DSSP helix / strand / coil fractions.

    Args:
        samples: :class:`Backbone` objects or ``[L, 4, 3]`` arrays (Å).
        reference: Reference chains (e.g. ``ProteinDataModule.val_backbones``); None draws the samples alone.
        path: Output PNG (atomic write).
        title: Figure title.
        labels: Legend names of the two sets.

    Returns:
        The written path.
    """
    from flowsci.plots import Panel, save_panels

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
            "nearest CA at |i − j| ≥ 3 (clash < 3 Å)",
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
    return save_panels(panels, path, title=title)


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


@dataclass
class MetricTable:
    """Per-sample rows and a summary.

    Attributes:
        rows: One dict per sample (name, length, per-chain metrics).
        summary: Means over samples plus set-level metrics (diversity, novelty, distributional).
    """

    rows: list[dict] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)

    def to_markdown(self, keys: Sequence[str] | None = None) -> str:
        """The summary as a two-column markdown table."""
        keys = list(keys or self.summary)
        lines = ["| metric | value |", "|---|---|"]
        for k in keys:
            v = self.summary[k]
            lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
        return "\n".join(lines)

    def __getitem__(self, key: str) -> float:
        return self.summary[key]


def evaluate(
    samples: Sequence,
    reference: Sequence | None = None,
    diversity_per_length: bool = True,
    novelty_refs: int | None = 60,
    designability: tuple[Callable, Callable] | None = None,
    seed: int = 0,
) -> MetricTable:
    """Score generated backbones with the field's offline metrics.

    Args:
        samples: :class:`Backbone` objects (or ``[L, 4, 3]`` arrays).
        reference: Reference backbones (training or validation chains) for novelty and angle-distribution
            distances; None skips those.
        diversity_per_length: Compute mean pairwise TM among samples of each length (averaged over lengths).
        novelty_refs: Use at most this many (seeded random) reference chains for novelty (TM-align costs ~20
        ms
            per pair); None uses all.
        designability: Optional ``(inverse_fold, fold)`` callables for :func:`self_consistency`.
        seed: Seed of the reference subsample.

    Returns:
        A :class:`MetricTable`; ``summary`` holds per-chain means plus ``pairwise_tm``, ``novelty_*``,
        ``bend_angle_w1``, ``ca_dihedral_w1`` and (if requested) designability rates. Designability is absent
        (not zero) when no tools are given.
    """
    if len(samples) == 0:
        return MetricTable(rows=[], summary={"num_samples": 0.0})
    coords = [np.asarray(getattr(s, "coords", s), dtype=np.float64) for s in samples]
    names = [getattr(s, "name", f"sample_{i}") for i, s in enumerate(samples)]
    rows = []
    for name, x in zip(names, coords, strict=True):
        row = {"name": name}
        row.update(backbone_metrics(x))
        rows.append(row)
    keys = [k for k in rows[0] if k != "name"] if rows else []
    summary: dict[str, float] = {"num_samples": float(len(rows))}
    for k in keys:
        vals = np.asarray([r[k] for r in rows], dtype=np.float64)
        summary[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    summary["rg_ratio_median"] = float(np.median([r["rg_ratio"] for r in rows])) if rows else float("nan")
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
    return MetricTable(rows=rows, summary=summary)
