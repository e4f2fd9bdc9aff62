"""CDVAE/DiffCSP/CrysBFN evaluation metrics for crystals, with the published definitions.

* Structural validity: all pairwise periodic (minimum-image) distances > 0.5 Å and cell volume > 0.1 Å³.
* Compositional validity: SMACT charge neutrality + Pauling electronegativity test; single-element and all-metal
  compositions count as valid. SMACT ≥ 3 changed the oxidation-state set (ICSD24 by default) and the
  ``neutral_ratios`` API; ``oxidation_states_set="smact14"`` (default here) is the set the papers used.
* CSP: ``StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)``; match rate = fraction of test crystals whose
  prediction matches; RMSE = mean over matched crystals of ``get_rms_dist(pred, gt)[0]`` (normalised by
  ``(V/N)^{1/3}``). As in DiffCSP, a prediction that is not structurally + compositionally valid is a non-match
  (``require_valid=True``); best-of-k takes the smallest RMS over the k predictions.
* Coverage COV-R / COV-P (CDVAE ``compute_cov``): structure fingerprint = mean over sites of matminer
  ``CrystalNNFingerprint.from_preset("ops")``; composition fingerprint = Magpie ``ElementProperty`` standardised by
  CDVAE's FIXED constants (``sample_data/cdvae_comp_scaler.json``). With pairwise L2 distances ``D_s``, ``D_c``
  (generated × reference), a reference crystal is recalled if ``min_g D_s ≤ δ_s`` AND ``min_g D_c ≤ δ_c``
  (the two minima are taken separately, exactly as in CDVAE); precision counts generated crystals with
  ``min_r D_s ≤ δ_s`` and ``min_r D_c ≤ δ_c`` divided by ALL generated crystals (invalid ones count as misses).
* Property statistics: Wasserstein-1 distance between generated (valid) and reference densities (g/cm³) and
  numbers of distinct elements.

Fingerprints are slow (≈0.5–2 s per crystal): :func:`fingerprints` runs ``processes`` worker processes with a
progress bar and caches arrays on disk keyed by the structures' content.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import multiprocessing as mp
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowsci.io import atomic_write

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from pymatgen.core import Composition, Structure

__all__ = [
    "COV_CUTOFFS",
    "structural_validity",
    "compositional_validity",
    "validity",
    "make_matcher",
    "csp_rms",
    "csp_metrics",
    "lattice_scale_error",
    "structure_fingerprint",
    "composition_fingerprint",
    "fingerprints",
    "coverage",
    "property_wasserstein",
    "uniqueness_novelty",
    "evaluate_csp",
    "evaluate_generation",
    "evaluate",
    "evaluate_csp_files",
    "min_interatomic_distance",
    "plot_structures",
]

#: (structure cutoff δ_s, composition cutoff δ_c) per dataset (CDVAE ``COV_Cutoffs``).
COV_CUTOFFS: dict[str, tuple[float, float]] = {
    "mp_20": (0.4, 10.0),
    "mp20": (0.4, 10.0),
    "carbon_24": (0.2, 4.0),
    "perov_5": (0.2, 4.0),
}


# --------------------------------------------------------------------------------------------- validity


def structural_validity(structure: Structure, cutoff: float = 0.5, min_volume: float = 0.1) -> bool:
    """True iff every pair of sites is farther apart than ``cutoff`` Å (minimum image) and volume > ``min_volume``.

    A non-finite or degenerate lattice is invalid.
    """
    try:
        vol = float(structure.volume)
    except Exception:  # singular lattices etc.
        return False
    if not np.isfinite(vol) or vol < min_volume:
        return False
    return bool(min_interatomic_distance(structure) >= cutoff)  # nan (undefined) compares False


def min_interatomic_distance(structure: Structure) -> float:
    """Shortest minimum-image distance between two sites (Å); inf for one-site cells, nan if undefined."""
    if len(structure) < 2:
        return float("inf")
    try:
        d = np.array(structure.distance_matrix, dtype=float)
    except Exception:  # singular lattices etc.
        return float("nan")
    return float((d + np.diag(np.full(len(d), np.inf))).min())


def compositional_validity(
    composition: Composition | Structure | str, oxidation_states_set: str | None = "smact14"
) -> bool:
    """SMACT charge-neutrality + electronegativity validity (``smact.screening.smact_validity``).

    Args:
        composition: a pymatgen ``Composition``, a ``Structure`` or a formula string.
        oxidation_states_set: ``"smact14"`` (the set behind the published CDVAE/DiffCSP/CrysBFN numbers),
            ``"icsd24"``/``None`` (SMACT 4 default), ``"icsd16"``, ``"pymatgen_sp"`` or a file path.
    """
    from pymatgen.core import Composition
    from smact.screening import smact_validity

    comp = composition.composition if hasattr(composition, "composition") else Composition(composition)
    comp = Composition({el: round(n) for el, n in comp.get_el_amt_dict().items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if oxidation_states_set is None or oxidation_states_set == "icsd24":
            return bool(smact_validity(comp, use_pauling_test=True, include_alloys=True))
        return bool(
            smact_validity(comp, use_pauling_test=True, include_alloys=True, oxidation_states_set=oxidation_states_set)
        )


def validity(structure: Structure, oxidation_states_set: str | None = "smact14") -> tuple[bool, bool]:
    """``(structural_valid, compositional_valid)``."""
    return structural_validity(structure), compositional_validity(structure, oxidation_states_set)


# --------------------------------------------------------------------------------------------- CSP


def make_matcher(stol: float = 0.5, angle_tol: float = 10.0, ltol: float = 0.3) -> Any:
    """The ``StructureMatcher`` of the CSP benchmarks."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(stol=stol, angle_tol=angle_tol, ltol=ltol)


def csp_rms(
    pred: Structure,
    gt: Structure,
    matcher: Any | None = None,
    require_valid: bool = True,
    oxidation_states_set: str | None = "smact14",
) -> float | None:
    """Normalised RMS displacement between a prediction and the ground truth, or ``None`` if they do not match.

    Args:
        pred: predicted crystal.
        gt: ground-truth crystal.
        matcher: a ``StructureMatcher`` (default :func:`make_matcher`).
        require_valid: count structurally or compositionally invalid predictions as non-matches (DiffCSP).
        oxidation_states_set: SMACT oxidation-state set of the compositional validity
            (:func:`compositional_validity`).
    """
    matcher = matcher or make_matcher()
    if require_valid and not all(validity(pred, oxidation_states_set)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = matcher.get_rms_dist(pred, gt)
    except Exception:  # degenerate predicted lattices make pymatgen raise
        return None
    return None if res is None else float(res[0])


def _csp_job(args: tuple) -> float | None:
    preds, gt, require_valid, ox, stol = args
    m = make_matcher(stol=stol)
    rms = [csp_rms(p, gt, m, require_valid, ox) for p in preds]
    rms = [r for r in rms if r is not None]
    return min(rms) if rms else None


def csp_metrics(
    preds: Sequence[Structure] | Sequence[Sequence[Structure]],
    gts: Sequence[Structure],
    require_valid: bool = True,
    processes: int = 1,
    progress: bool = False,
    oxidation_states_set: str | None = "smact14",
    stol: float = 0.5,
) -> dict[str, float]:
    """CSP match rate and RMSE.

    Args:
        preds: one prediction per ground truth, or a list of k predictions per ground truth (best-of-k).
        gts: ground truths.
        require_valid: see :func:`csp_rms`.
        processes: worker processes.
        progress: tqdm progress bar.
        oxidation_states_set: SMACT set of the validity gate (see :func:`csp_rms`).
        stol: the matcher's site tolerance (fraction of ``(V/N)^{1/3}``); 0.5 is the field's setting, every
            reported match rate uses it. A smaller value only shows how many matches are tight (a match at
            ``stol = 0.5`` allows one atom to sit about half an interatomic distance off its site).

    Returns:
        ``{"match_rate": fraction in [0, 1], "rmse": mean RMS over matches (nan if none), "n": len(gts)}``.
    """
    if len(preds) != len(gts):
        raise ValueError(f"csp_metrics: {len(preds)} predictions for {len(gts)} ground truths")
    jobs = [
        ((p,) if not isinstance(p, (list, tuple)) else tuple(p), g, require_valid, oxidation_states_set, stol)
        for p, g in zip(preds, gts, strict=False)
    ]
    rms = _map(_csp_job, jobs, processes, progress, "StructureMatcher")
    matched = [r for r in rms if r is not None]
    return {
        "match_rate": len(matched) / max(len(gts), 1),
        "rmse": float(np.mean(matched)) if matched else float("nan"),
        "n": float(len(gts)),
    }


# --------------------------------------------------------------------------------------------- fingerprints

_CNN = None
_MAGPIE = None


def lattice_scale_error(
    preds: Sequence[Structure], gts: Sequence[Structure], tolerance: float = 0.1
) -> dict[str, float]:
    """How far predicted cells are from the true cell size, which ``StructureMatcher`` (volumes rescaled) ignores.

    The length scale of a cell is ``(V / N)^{1/3}`` (Å). Per prediction, ``e = |s_pred / s_true − 1|``.

    Returns:
        ``{"lattice_err": median e, "lattice_off": fraction with e > tolerance}`` (dimensionless).
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} ground truths")
    if not preds:
        return {"lattice_err": float("nan"), "lattice_off": float("nan")}
    scale = [((p.volume / len(p)) ** (1 / 3), (g.volume / len(g)) ** (1 / 3)) for p, g in zip(preds, gts, strict=True)]
    err = np.array([abs(sp / sg - 1.0) for sp, sg in scale])
    return {"lattice_err": float(np.median(err)), "lattice_off": float((err > tolerance).mean())}


def structure_fingerprint(structure: Structure) -> np.ndarray | None:
    """Mean over sites of the CrystalNN "ops" site fingerprint (61 values), ``None`` if CrystalNN fails."""
    global _CNN
    if _CNN is None:
        from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

        _CNN = CrystalNNFingerprint.from_preset("ops")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fps = [_CNN.featurize(structure, i) for i in range(len(structure))]
    except Exception:
        return None
    return np.asarray(fps, dtype=float).mean(axis=0)


def composition_fingerprint(structure: Structure | Composition) -> np.ndarray | None:
    """Magpie ``ElementProperty`` composition features (132 values, unscaled), ``None`` on failure."""
    global _MAGPIE
    if _MAGPIE is None:
        from matminer.featurizers.composition.composite import ElementProperty

        _MAGPIE = ElementProperty.from_preset("magpie", impute_nan=False)
    comp = structure.composition if hasattr(structure, "composition") else structure
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(_MAGPIE.featurize(comp), dtype=float)
    except Exception:
        return None


def _comp_scaler() -> tuple[np.ndarray, np.ndarray]:
    root = importlib.resources.files(__package__ or "flowsci.domains.crystals") / "sample_data"
    blob = json.loads((root / "cdvae_comp_scaler.json").read_text())
    return np.asarray(blob["means"]), np.asarray(blob["stds"])


def _fp_job(s: Structure) -> tuple[np.ndarray | None, np.ndarray | None]:
    return structure_fingerprint(s), composition_fingerprint(s)


def _map(fn: Any, items: Sequence[Any], processes: int, progress: bool, desc: str) -> list[Any]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc=desc)
    out = []
    if processes <= 1 or len(items) < 64:  # a pool costs seconds to start (workers import pymatgen)
        for it in items:
            out.append(fn(it))
            if bar is not None:
                bar.update(1)
    else:
        # forkserver (else spawn): forking a process that runs threads (torch, loggers) can deadlock a child
        ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        with ctx.Pool(processes) as pool:
            for r in pool.imap(fn, items, chunksize=4):
                out.append(r)
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    return out


def _content_key(structures: Sequence[Structure]) -> str:
    h = hashlib.sha256()
    for s in structures:
        h.update(np.round(s.lattice.matrix, 5).tobytes())
        h.update(np.round(s.frac_coords, 5).tobytes())
        h.update(str([sp.Z for sp in s.species]).encode())
    return h.hexdigest()[:20]


def fingerprints(
    structures: Sequence[Structure],
    processes: int = 2,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """Structure and (unscaled) composition fingerprints, in parallel, cached on disk.

    Args:
        structures: crystals.
        processes: worker processes (2 by default; the fingerprint dominates evaluation cost).
        progress: tqdm progress bar.
        cache_dir: cache folder (``None``: no cache). The key hashes lattices, coordinates and species.

    Returns:
        ``(struct_fps, comp_fps)``: lists with an array or ``None`` (failure) per crystal.
    """
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"fp2_{_content_key(structures)}.npz"  # fp2: the pickle-free format
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as blob:
                    sfp, cfp = _unpack_arrays(blob, "struct"), _unpack_arrays(blob, "comp")
                if len(sfp) == len(cfp) == len(structures):
                    return sfp, cfp
            except (OSError, ValueError, KeyError, EOFError) as exc:  # unreadable cache: recompute
                warnings.warn(f"{cache}: ignoring an unusable fingerprint cache ({exc})", stacklevel=2)
    res = _map(_fp_job, list(structures), processes, progress, "fingerprints")
    sfp, cfp = [r[0] for r in res], [r[1] for r in res]
    if cache is not None:
        arrays = {**_pack_arrays(sfp, "struct"), **_pack_arrays(cfp, "comp")}
        atomic_write(cache, lambda tmp: np.savez(tmp, **arrays))
    return sfp, cfp


def _pack_arrays(items: Sequence[np.ndarray | None], key: str) -> dict[str, np.ndarray]:
    """A list of 1-D float arrays or ``None`` as plain arrays (values, offsets, present mask): no pickle needed."""
    present = np.array([a is not None for a in items], dtype=bool)
    parts = [np.asarray(a, dtype=np.float64).ravel() for a in items if a is not None]
    sizes = np.array([0] + [len(p) for p in parts], dtype=np.int64)
    values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return {f"{key}_values": values, f"{key}_offsets": np.cumsum(sizes), f"{key}_present": present}


def _unpack_arrays(blob: Any, key: str) -> list[np.ndarray | None]:
    values, offsets, present = blob[f"{key}_values"], blob[f"{key}_offsets"], blob[f"{key}_present"]
    if len(offsets) != int(present.sum()) + 1 or (len(offsets) and offsets[-1] != len(values)):
        raise ValueError("inconsistent fingerprint cache")
    out: list[np.ndarray | None] = []
    k = 0
    for has in present:
        if has:
            out.append(values[offsets[k] : offsets[k + 1]])
            k += 1
        else:
            out.append(None)
    return out


def coverage(
    gen_fps: tuple[Sequence[np.ndarray | None], Sequence[np.ndarray | None]],
    ref_fps: tuple[Sequence[np.ndarray | None], Sequence[np.ndarray | None]],
    struct_cutoff: float,
    comp_cutoff: float,
    gen_valid: Sequence[bool] | None = None,
    comp_scaler: str = "cdvae",
) -> dict[str, float]:
    """COV-R and COV-P exactly as CDVAE's ``compute_cov`` (see module docstring).

    Args:
        gen_fps: ``(struct_fps, comp_fps)`` of generated crystals (``None`` entries = fingerprint failure).
        ref_fps: same for the reference (test) crystals.
        struct_cutoff: δ_s.
        comp_cutoff: δ_c (in units of the CDVAE-standardised Magpie features).
        gen_valid: optional validity mask; invalid generated crystals are dropped (but still count in the COV-P
            denominator), as in CDVAE.
        comp_scaler: how Magpie features are standardised before ``δ_c`` applies: ``"cdvae"`` (CDVAE's fixed
            constants, the published protocol) or ``"reference"`` (mean / std of the reference crystals' features;
            a constant feature keeps std 1).

    Returns:
        ``{"cov_recall", "cov_precision", "amsd_recall", "amsd_precision", "amcd_recall", "amcd_precision"}``.
    """
    from scipy.spatial.distance import cdist

    if comp_scaler not in ("cdvae", "reference"):
        raise ValueError(f"comp_scaler must be 'cdvae' or 'reference', got {comp_scaler!r}")
    n_gen = len(gen_fps[0])
    keep = [
        i
        for i in range(n_gen)
        if gen_fps[0][i] is not None and gen_fps[1][i] is not None and (gen_valid is None or gen_valid[i])
    ]
    rkeep = [i for i in range(len(ref_fps[0])) if ref_fps[0][i] is not None and ref_fps[1][i] is not None]
    if not keep or not rkeep:
        return {k: 0.0 for k in ("cov_recall", "cov_precision")} | {
            k: float("nan") for k in ("amsd_recall", "amsd_precision", "amcd_recall", "amcd_precision")
        }
    rc_raw = np.stack([ref_fps[1][i] for i in rkeep])
    if comp_scaler == "cdvae":
        mean, std = _comp_scaler()
    else:
        mean, std = rc_raw.mean(axis=0), rc_raw.std(axis=0)
        std = np.where(std > 0, std, 1.0)
    gs = np.stack([gen_fps[0][i] for i in keep])
    gc = (np.stack([gen_fps[1][i] for i in keep]) - mean) / std
    rs = np.stack([ref_fps[0][i] for i in rkeep])
    rc = (rc_raw - mean) / std
    ds, dc = cdist(gs, rs), cdist(gc, rc)
    s_rec, s_prec = ds.min(axis=0), ds.min(axis=1)
    c_rec, c_prec = dc.min(axis=0), dc.min(axis=1)
    return {
        "cov_recall": float(np.mean((s_rec <= struct_cutoff) & (c_rec <= comp_cutoff))),
        "cov_precision": float(np.sum((s_prec <= struct_cutoff) & (c_prec <= comp_cutoff)) / n_gen),
        "amsd_recall": float(s_rec.mean()),
        "amsd_precision": float(s_prec.mean()),
        "amcd_recall": float(c_rec.mean()),
        "amcd_precision": float(c_prec.mean()),
    }


def property_wasserstein(gen: Sequence[Structure], ref: Sequence[Structure]) -> dict[str, float]:
    """Wasserstein-1 distances of density (g/cm³) and of the number of distinct elements."""
    from scipy.stats import wasserstein_distance

    if not gen:
        return {"wdist_density": float("nan"), "wdist_num_elems": float("nan")}
    return {
        "wdist_density": float(wasserstein_distance([s.density for s in gen], [s.density for s in ref])),
        "wdist_num_elems": float(
            wasserstein_distance([len(s.composition.elements) for s in gen], [len(s.composition.elements) for s in ref])
        ),
    }


def uniqueness_novelty(gen: Sequence[Structure], train: Sequence[Structure] | None = None) -> dict[str, float]:
    """Fraction of unique generated crystals and (if ``train`` is given) of unique ones not in ``train``.

    Crystals are compared with the CSP ``StructureMatcher`` only within groups of equal reduced formula.
    """
    m = make_matcher()

    def groups(structs: Sequence[Structure]) -> dict[str, list[Structure]]:
        g: dict[str, list[Structure]] = {}
        for s in structs:
            g.setdefault(s.composition.reduced_formula, []).append(s)
        return g

    unique: list[Structure] = []
    for _, ss in groups(gen).items():
        reps: list[Structure] = []
        for s in ss:
            if not any(_fit(m, s, r) for r in reps):
                reps.append(s)
        unique.extend(reps)
    out = {"uniqueness": len(unique) / max(len(gen), 1)}
    if train is not None:
        tg = groups(train)
        novel = [s for s in unique if not any(_fit(m, s, t) for t in tg.get(s.composition.reduced_formula, []))]
        out["novelty"] = len(novel) / max(len(gen), 1)
    return out


def _fit(m: Any, a: Structure, b: Structure) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bool(m.fit(a, b))
    except Exception:
        return False


# --------------------------------------------------------------------------------------------- reports


def _or_nan(fn: Any, structure: Structure) -> float:
    try:  # a generated cell can be degenerate (zero volume): it is left out of the panel, not an error
        return float(fn(structure))
    except (ZeroDivisionError, ValueError, np.linalg.LinAlgError):
        return float("nan")


def plot_structures(
    structures: Sequence[Structure],
    reference: Sequence[Structure] | None = None,
    path: str | os.PathLike = "structures.png",
    title: str | None = None,
    labels: tuple[str, str] = ("generated", "reference"),
    cells: int = 0,
    oxidation_states_set: str | None = "smact14",
) -> Path:
    """One PNG comparing generated crystals with reference crystals on six panels: density (g/cm³), volume per
    atom (Å³), lattice lengths (Å), lattice angles (degrees), shortest interatomic distance (Å; structural
    validity needs > 0.5 Å) and the number of distinct elements; optionally a row of generated unit cells.

    Args:
        structures: pymatgen Structures.
        reference: Reference Structures (e.g. the test split); None draws the structures alone.
        path: Output PNG (atomic write).
        title: Figure title.
        labels: Legend names of the two sets.
        cells: Draw the unit cells of the first ``cells`` structures (at most 4; ASE's ``plot_atoms``, viewed along
            a tilted axis), each titled with its formula and its validity (structural: every pair of atoms
            > 0.5 Å apart; SMACT with ``oxidation_states_set``).
        oxidation_states_set: SMACT oxidation-state set of the validity in the cell titles.

    Returns:
        The written path.

    Raises:
        ValueError: a set is empty.
    """
    from flowsci.plots import Panel

    sets = (
        {labels[0]: list(structures)}
        if reference is None
        else {labels[0]: list(structures), labels[1]: list(reference)}
    )
    for k, v in sets.items():
        if not v:
            raise ValueError(f"plot_structures: the {k!r} set is empty")

    def per(fn: Any) -> dict[str, np.ndarray]:
        return {k: np.array([_or_nan(fn, s) for s in v], dtype=float) for k, v in sets.items()}

    nmax = 6
    counts = per(lambda s: min(len(s.composition.elements), nmax))
    panels = [
        Panel("density", per(lambda s: s.density), xlabel="g/cm³"),
        Panel("volume per atom", per(lambda s: s.volume / len(s)), xlabel="Å³"),
        Panel(
            "lattice lengths a, b, c",
            {k: np.concatenate([s.lattice.abc for s in v]) for k, v in sets.items()},
            xlabel="Å",
        ),
        Panel(
            "lattice angles α, β, γ",
            {k: np.concatenate([s.lattice.angles for s in v]) for k, v in sets.items()},
            xlabel="degrees",
        ),
        Panel("shortest interatomic distance", per(min_interatomic_distance), xlabel="Å (valid > 0.5)"),
        Panel(
            "distinct elements",
            {k: np.array([(c == n).mean() for n in range(1, nmax + 1)]) for k, c in counts.items()},
            kind="bar",
            categories=[str(n) for n in range(1, nmax)] + [f"{nmax}+"],
            ylabel="fraction of crystals",
        ),
    ]
    return _save_figure(panels, list(structures)[: max(0, min(cells, 4))], path, title, oxidation_states_set)


def _save_figure(
    panels: Sequence[Any], cells: Sequence[Structure], path: str | os.PathLike, title: str | None, ox: str | None
) -> Path:
    """The six panels (two rows of three) and a row of unit cells below them, one PNG (atomic write)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from flowsci.plots import draw_panel

    rows = 2 + bool(cells)
    fig = plt.figure(figsize=(12.6, 3.4 * rows))
    grid = fig.add_gridspec(rows, 12)
    for i, panel in enumerate(panels):
        draw_panel(fig.add_subplot(grid[i // 3, 4 * (i % 3) : 4 * (i % 3) + 4]), panel)
    for j, s in enumerate(cells):
        _draw_cell(fig.add_subplot(grid[2, 3 * j : 3 * j + 3]), s, ox)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)


def _draw_cell(ax: Any, structure: Structure, ox: str | None) -> None:
    """One unit cell (ASE ``plot_atoms``, tilted view) titled with its formula and validity."""
    ax.set_axis_off()
    struct_ok = structural_validity(structure)
    try:
        comp_ok = compositional_validity(structure, ox)
    except Exception:  # noqa: BLE001 - an exotic composition SMACT cannot judge is shown as such
        comp_ok = False
    verdict = (
        "valid"
        if struct_ok and comp_ok
        else "invalid: "
        + ", ".join(
            w for w, ok in (("atoms < 0.5 Å apart", struct_ok), (f"SMACT ({ox or 'icsd24'})", comp_ok)) if not ok
        )
    )
    ax.set_title(f"{structure.composition.reduced_formula} ({len(structure)} atoms)\n{verdict}", fontsize=9)
    try:
        from ase.data.colors import jmol_colors
        from ase.visualize.plot import plot_atoms
        from matplotlib.patches import Patch
        from pymatgen.io.ase import AseAtomsAdaptor

        plot_atoms(AseAtomsAdaptor.get_atoms(structure), ax, rotation="10x,20y,0z", radii=0.4, show_unit_cell=2)
        ax.set_axis_off()
        elements = sorted(structure.composition.elements, key=lambda e: e.Z)
        handles = [Patch(facecolor=jmol_colors[e.Z], edgecolor="k", label=e.symbol) for e in elements]
        ax.legend(handles=handles, fontsize=7, loc="upper right", frameon=False, handlelength=1)
    except Exception as exc:  # noqa: BLE001 - a degenerate cell is named, not drawn
        ax.text(0.5, 0.5, f"cannot draw the cell\n({type(exc).__name__})", ha="center", va="center", fontsize=8)


def evaluate_csp(
    preds: Sequence[Structure] | Sequence[Sequence[Structure]],
    gts: Sequence[Structure],
    processes: int = 1,
    progress: bool = False,
    oxidation_states_set: str | None = "smact14",
) -> dict[str, float]:
    """CSP report: match rate / RMSE with validity required (DiffCSP) and without (StructureMatcher only), and
    the cell-size error of the (first) prediction (:func:`lattice_scale_error`).

    ``oxidation_states_set`` is the SMACT set of the validity gate (``"smact14"``: the set behind the published
    CDVAE/DiffCSP/CrysBFN numbers; SMACT 3's default ``"icsd24"`` judges other compositions valid, so a gated
    match rate is only comparable between scorers that use the same set).
    """
    strict = csp_metrics(
        preds,
        gts,
        require_valid=True,
        processes=processes,
        progress=progress,
        oxidation_states_set=oxidation_states_set,
    )
    loose = csp_metrics(preds, gts, require_valid=False, processes=processes, progress=progress)
    first = [p[0] if isinstance(p, (list, tuple)) else p for p in preds]
    return {
        "match_rate": strict["match_rate"],
        "rmse": strict["rmse"],
        "match_rate_any": loose["match_rate"],
        "rmse_any": loose["rmse"],
        **lattice_scale_error(first, gts),
        "n": strict["n"],
    }


def evaluate_generation(
    gen: Sequence[Structure],
    ref: Sequence[Structure],
    dataset: str = "perov_5",
    coverage_metrics: bool = True,
    processes: int = 2,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    oxidation_states_set: str | None = "smact14",
    comp_scaler: str = "cdvae",
) -> dict[str, float]:
    """Ab initio generation report (CDVAE protocol on the crystals given).

    ``comp_scaler`` (``"cdvae"`` or ``"reference"``) picks the composition-feature standardisation of
    :func:`coverage`.

    Returns:
        ``struct_valid``, ``comp_valid``, ``valid`` (fractions), ``wdist_density``, ``wdist_num_elems`` (on valid
        crystals) and, if ``coverage_metrics``, ``cov_recall``, ``cov_precision`` (+ mean distances).
    """
    sv = [structural_validity(s) for s in gen]
    cv = [compositional_validity(s, oxidation_states_set) for s in gen]
    valid = [a and b for a, b in zip(sv, cv, strict=False)]
    n = max(len(gen), 1)
    out = {"struct_valid": sum(sv) / n, "comp_valid": sum(cv) / n, "valid": sum(valid) / n}
    out |= property_wasserstein([s for s, v in zip(gen, valid, strict=False) if v], ref)
    if coverage_metrics:
        ds, dc = COV_CUTOFFS[dataset]
        gfp = fingerprints(gen, processes=processes, progress=progress)
        rfp = fingerprints(ref, processes=processes, progress=progress, cache_dir=cache_dir)
        out |= coverage(gfp, rfp, ds, dc, gen_valid=valid, comp_scaler=comp_scaler)
    return out


def evaluate(samples: Any, reference: Sequence[Structure], task: str = "csp", **kwargs: Any) -> pd.DataFrame:
    """Metrics as a one-row table (the domain contract's ``evaluate(samples, reference)``).

    Args:
        samples: Structures, or the :class:`~flowsci.domains.crystals.flow.CrystalSamples` of ``model.sample``.
            For ``task="csp"``, ``samples[i]`` is a Structure (or k Structures) predicted for ``reference[i]``.
        reference: Ground truth (CSP) or the reference set (generation).
        task: ``"csp"`` or ``"generation"``.
        **kwargs: passed to :func:`evaluate_csp` or :func:`evaluate_generation`.

    Returns:
        A ``pandas.DataFrame`` with one row of metrics and an ``oxidation_states_set`` column naming the SMACT
        set behind the validity numbers (``smact14`` unless ``oxidation_states_set=`` says otherwise).
    """
    import pandas as pd

    predictions = list(getattr(samples, "structures", samples))
    if getattr(samples, "ids", None) and getattr(samples, "samples_per_crystal", 1) > 1:
        predictions = samples.per_crystal()  # CSP of a file with k samples per crystal: best-of-k
    if task == "csp":
        row = evaluate_csp(predictions, reference, **kwargs)
    elif task == "generation":
        row = evaluate_generation(predictions, reference, **kwargs)
    else:
        raise ValueError(f"unknown task {task!r}; expected 'csp' or 'generation'")
    return pd.DataFrame([{**row, "oxidation_states_set": kwargs.get("oxidation_states_set", "smact14") or "icsd24"}])


def evaluate_csp_files(
    predictions: str | os.PathLike,
    reference: str | os.PathLike,
    processes: int = 1,
    progress: bool = False,
    oxidation_states_set: str | None = "smact14",
    limit: int | None = None,
) -> pd.DataFrame:
    """Score a folder of CSP predictions (``<material_id>.cif`` / ``<material_id>_<j>.cif``, as ``flowsci sample
    --set compositions_from=...`` writes them) against the crystals of a CSV or CIF folder.

    Every reference crystal counts: one without a prediction file is a miss (``missing`` counts them); with
    several files per crystal the best of them is scored (best-of-k).

    Args:
        predictions: the folder of predicted CIFs.
        reference: the ground truth: a CDVAE-style CSV (``material_id``, ``cif``), a CIF folder or a bundled name.
        processes: matcher worker processes.
        progress: a progress bar.
        oxidation_states_set: SMACT set of the validity gate (see :func:`evaluate_csp`).
        limit: only the first ``limit`` reference crystals (the benchmark scores the first 500).

    Returns:
        One-row ``DataFrame``: the columns of :func:`evaluate_csp` (cell-size error over crystals with a
        prediction), ``valid`` (fraction of first predictions structurally and SMACT-valid; missing ones count as
        invalid), ``samples_per_crystal`` (the most files of one crystal), ``missing`` and
        ``oxidation_states_set``.

    Raises:
        flowsci.errors.InputError: an unreadable reference or prediction file (named).
    """
    import pandas as pd

    from flowsci.domains.crystals.data import read_compositions, read_predictions

    _, ids, gts = read_compositions(reference, limit=limit)
    if gts is None:
        from flowsci.domains.crystals.data import CrystalDataError

        raise CrystalDataError(str(reference), "the reference gives formulas only; CSP scoring needs structures")
    preds = read_predictions(predictions, ids)
    have = [i for i, p in enumerate(preds) if p]
    opts = {"processes": processes, "progress": progress}
    strict = csp_metrics(preds, gts, require_valid=True, oxidation_states_set=oxidation_states_set, **opts)
    loose = csp_metrics(preds, gts, require_valid=False, **opts)
    row = {
        "match_rate": strict["match_rate"],
        "rmse": strict["rmse"],
        "match_rate_any": loose["match_rate"],
        "rmse_any": loose["rmse"],
        **lattice_scale_error([preds[i][0] for i in have], [gts[i] for i in have]),
        "valid": sum(all(validity(preds[i][0], oxidation_states_set)) for i in have) / max(len(gts), 1),
        "n": float(len(gts)),
        "samples_per_crystal": float(max((len(p) for p in preds), default=0)),
        "missing": float(len(gts) - len(have)),
        "oxidation_states_set": oxidation_states_set or "icsd24",
    }
    return pd.DataFrame([row])
