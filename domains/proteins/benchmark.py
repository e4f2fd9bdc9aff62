"""The ``proteins`` benchmark: QFlow vs FrameFlow's rotation path vs ReQFlow (one reflow) at equal NFE.

All methods share the tiny IPA trunk (:meth:`IPAFrameNet.tiny`, 0.19 M parameters), the bundled 177 real chains
(48-residue random crops that keep their chain residue indices, so the 60–100-residue samples stay inside the
index range seen in training; a seeded 10 % chain split is held out), AdamW, gradient clipping and the training
budget; they differ only in what is compared:

- ``qflow``: quaternion SLERP-exp path, Euler sampling with the "exp" rotation schedule (rate 10);
- ``qflow-x1``: the same trained weights sampled with the paper's sampler (NFE − 1 Euler steps, then the
  network's clean-frame prediction at t = 1 is the sample; no extra training), at the fewest / most NFE;
- ``qflow-linear``: the same trained weights sampled with the linear rotation schedule (no extra training), at
  the fewest / most NFE;
- ``qflow-igso3`` (``smoke`` and ``full`` only; the ``quick`` suite drops this third training run to fit
  ~15 min on 2 cores): ``qflow`` trained with ReQFlow's IGSO(3)(σ=1.5) rotation prior around the data
  (sampling still starts from the uniform prior: the released code's train/test mismatch);
- ``frameflow-path`` (baseline): FrameFlow's matrix exp/log rotation path and targets, same everything else;
- ``reqflow-long``: the ``reqflow`` weights fine-tuned on whole chains (40–251 residues, length-aware batches
  of at most 8 chains and 65,536 padded residue pairs) with the length-aware translation prior
  (``trans_prior="rg"``: prior radius of gyration 2.2·L^0.38 Å) and, on a quarter of the batches, the loss on
  the sampler's own states up to 2 Euler steps past a training interpolant (``ReQFlow(unroll_prob=0.25,
  unroll_steps=2)``), sampled across 50–250 residues (``long_samples`` chains, a quarter per length bucket; the
  ``bucket`` metrics report each bucket). Not rectified again: a QFlow fine-tune of the ReQFlow weights;
- ``reqflow-shipped``: the shipped checkpoint (``ReQFlow.pretrained()``), **not trained by the suite** (the same
  recipe grown to 4 blocks and trained ~5× longer on whole chains; the proteins page), sampled like
  ``reqflow-long``: the suite's per-bucket table of the model a user gets;
- ``reqflow-long-speed``: the ``reqflow-long`` weights and lengths, sampled three ways back to back in one cell
  (:func:`mixed_length_speed`: one bucketed ``sample(lengths=...)`` call, one call per length, one padded batch),
  so load on the machine affects all three alike; the ``set`` metric gains the seconds per backbone of each and
  the speedups of the bucketed call;
- ``reqflow``: ``qflow`` + one rectification: (noise, sample) pairs from ``qflow`` at ``reflow_nfe`` Euler
  steps (coil ≤ 0.9 filter; none in ``smoke``), then fine-tuning from the ``qflow`` weights on the stored pairs
  at lr 1e-4 (the paper's). ``reflow_nfe`` is the teacher's best measured NFE at the suite's training budget
  (pairs from a worse teacher setting copy its defects; see the proteins documentation page).

Each cell samples ``num_samples`` backbones with lengths cycling over 60/80/100 and scores them offline: CA–CA
validity, clashes, bond angles, DSSP fractions, Rg, pairwise-TM diversity per length, novelty (max TM to 40
training chains), and CA bend/dihedral W1 against the held-out chains. Designability (ProteinMPNN + ESMFold) is
not measured. The float32 stability of the two rotation paths near π is :func:`path_stability`.

Diagnostics (sweeps, speed, training curves, the shipped checkpoint) are in
:mod:`flowsci.domains.proteins.diagnostics`.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from flowsci.benchspec import BenchmarkSpec, Method, Metric, SampleRequest, trainer_device

__all__ = [
    "LENGTHS",
    "LONG_BATCH_PAIRS",
    "SPEED_VARIANTS",
    "bucket_lengths",
    "build_model",
    "datamodule",
    "fit_long",
    "long_datamodule",
    "fit_qflow",
    "mixed_length_speed",
    "fit_reqflow",
    "sample_lengths",
    "spec",
    "teacher_best_nfe",
]

LENGTHS: tuple[int, ...] = (60, 80, 100)
#: Padded residue pairs per long-chain training batch (batch × longest²): one 250-residue chain, four of 128,
#: eight of ≤ 90.
LONG_BATCH_PAIRS = 65_536

_SIZES: dict[str, dict[str, Any]] = {
    "smoke": {
        "long_steps": 4,
        "long_lr": 1e-4,
        "long_unroll": (0.25, 2),  # (share of batches, most sampler steps) of the unrolled loss
        "long_samples": 4,  # reqflow-long and reqflow-shipped: chains per cell (a quarter per length bucket)
        "train_steps": 20,
        "num_samples": 3,
        "nfe_grid": (2, 4),
        "reflow_pairs": 6,
        "reflow_nfe": 4,
        "reflow_steps": 5,
        "reflow_lr": 1e-4,
        "reflow_max_coil": None,  # a 20-step model makes coil only: no filter, the smoke suite tests plumbing
        "reqflow_max_nfe": 4,
        "igso3": True,
        "speed_passes": 1,  # the mixed-length speed cell: plumbing only, one pass (A B C)
    },
    "quick": {
        "long_steps": 600,
        "long_lr": 1e-4,
        "long_unroll": (0.25, 2),  # spec 7: the shipped model's lever (0.0 before)
        "long_samples": 32,  # spec 7: 8 chains per bucket (12 before)
        "train_steps": 1600,
        "num_samples": 12,
        "nfe_grid": (10, 20, 50, 100),
        "reflow_pairs": 48,
        "reflow_nfe": (10, 20, 50),
        "reflow_steps": 600,  # spec 5: 300 -> 600 (README: 3-seed NFE-10 validity 0.411 -> 0.437, same teacher)
        "reflow_lr": 1e-4,
        "reflow_max_coil": 0.9,
        "reqflow_max_nfe": 50,
        "igso3": False,
        "speed_passes": 2,
    },
    "full": {
        "long_steps": 5000,
        "long_lr": 1e-4,
        "long_unroll": (0.25, 2),
        "long_samples": 64,
        "train_steps": 20000,
        "num_samples": 48,
        "nfe_grid": (10, 20, 50, 100, 500),
        "reflow_pairs": 1024,
        "reflow_nfe": (10, 20, 50, 100),
        "reflow_steps": 5000,
        "reflow_lr": 1e-4,
        "reflow_max_coil": 0.9,
        "reqflow_max_nfe": 500,
        "igso3": True,
        "speed_passes": 2,
    },
}
_log = logging.getLogger(__name__)
_NOVELTY_REFS = 40


def sample_lengths(num: int) -> list[int]:
    """Lengths of a cell's samples: 60, 80, 100, 60, ... (``num`` of them)."""
    return [LENGTHS[i % len(LENGTHS)] for i in range(num)]


def bucket_lengths(num: int, lo: int = 50, hi: int = 250) -> list[int]:
    """``num`` lengths evenly spaced over ``lo..hi`` (both included), e.g. 12 → 50, 68, 86, …, 250: three in each
    of the length buckets 50–99, 100–149, 150–199, 200–250.
    """
    if num == 1:
        return [lo]
    return [int(round(lo + k * (hi - lo) / (num - 1))) for k in range(num)]


def long_datamodule(seed: int = 0) -> Any:
    """Whole bundled chains (no crop; 40–251 residues; the suite's seeded 10 % chain split) in length-aware batches:
    :class:`~flowsci.domains.proteins.data.LengthBatchSampler` with at most 8 chains and :data:`LONG_BATCH_PAIRS`
    padded residue pairs per batch.
    """
    from flowsci.domains.proteins.data import ProteinDataModule

    return ProteinDataModule(crop_length=None, batch_size=8, max_coil=None, seed=seed, max_res_squared=LONG_BATCH_PAIRS)


def fit_long(
    model: Any,
    dm: Any,
    steps: int,
    device: Any,
    lr: float = 1e-4,
    callbacks: Sequence[Any] = (),
    grad_clip: float = 1.0,
    unroll: tuple[float, int] | None = None,
) -> None:
    """Fine-tune ``model`` in place for ``steps`` on whole chains (:func:`long_datamodule`; ``dm`` is not used, the
    runner passes the suite's crops) with a fresh AdamW at ``lr`` and gradient-norm clipping at ``grad_clip``;
    ``unroll = (p, K)`` takes a share ``p`` of the batches' losses on the sampler's own states up to ``K`` Euler steps
    past a training interpolant (:meth:`~flowsci.domains.proteins.flow.ReQFlow.set_unroll`; the shipped model's
    lever), ``None`` leaves the model's setting.

    The shipped model's gradient norms on these batches are 5–50, so at the default 1.0 every step's gradient is
    rescaled to norm 1 and a loss weight per batch (``ReQFlow(loss_chains=...)``) has no effect.
    """
    model.train()
    if unroll is not None:
        model.set_unroll(*unroll)
    model.optimizer_factory = functools.partial(torch.optim.AdamW, lr=lr)
    trainer = _trainer(steps, device, grad_clip)
    trainer.callbacks.extend(callbacks)
    trainer.fit(model, datamodule=long_datamodule())


def _shipped() -> Any:
    """The shipped model, ``ReQFlow.pretrained()``."""
    from flowsci.domains.proteins.flow import ReQFlow

    return ReQFlow.pretrained()


def datamodule(res_idx_from: str = "chain") -> Any:
    """The suite's data: 48-residue random crops of the bundled chains (seeded 10 % chain split held out).

    Args:
        res_idx_from: Residue indices of the crops: ``"chain"`` (their positions in the chain; the suite's) or
            ``"crop"`` (0..47; the default before spec version 3).
    """
    from flowsci.domains.proteins.data import ProteinDataModule

    return ProteinDataModule(crop_length=48, batch_size=8, max_coil=None, seed=0, res_idx_from=res_idx_from)


def build_model(**kwargs: Any) -> Any:
    """The suite's untrained QFlow (tiny trunk, AdamW); keywords as :func:`_build` (rot_path, rot_schedule, lr, ...)."""
    return _build(**kwargs)


def _build(
    rot_path: str = "quaternion",
    rot_schedule: str = "exp",
    lr: float = 5e-4,
    train_rot_prior: str = "uniform",
    final_step: str = "euler",
    aux_t: float = 0.5,
    trans_prior: str = "fixed",
) -> Any:
    from flowsci.domains.proteins.flow import ReQFlow
    from flowsci.domains.proteins.model import IPAFrameNet

    return ReQFlow(
        net=IPAFrameNet.tiny(),
        optimizer=functools.partial(torch.optim.AdamW, lr=lr),
        rot_path=rot_path,
        rot_schedule=rot_schedule,
        train_rot_prior=train_rot_prior,
        sample_steps=10,
        final_step=final_step,
        aux_t=aux_t,
        trans_prior=trans_prior,
    )


def _trainer(max_steps: int, device: Any = "cpu", grad_clip: float = 1.0) -> Any:
    import pytorch_lightning as pl

    return pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        **trainer_device(device),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        gradient_clip_val=grad_clip,
    )


def fit_qflow(model: Any, dm: Any, steps: int, device: Any) -> None:
    """Train the suite's QFlow for ``steps`` optimizer steps (gradient clipping 1.0, no logs or checkpoints)."""
    _trainer(steps, device).fit(model, datamodule=dm)


def teacher_best_nfe(
    model: Any, candidates: Sequence[int], num: int = 12, seed: int = 4321
) -> tuple[int, dict[int, float]]:
    """The NFE at which ``model`` samples the most valid chains (CA–CA ±0.1 Å), on a probe set.

    Samples ``num`` backbones (lengths as the benchmark cells) at each candidate NFE from the prior seed
    ``seed`` (not the evaluation seed, so the choice is not made on the scored samples).

    Returns:
        ``(best_nfe, {nfe: ca_ca_valid})``; ties go to the fewest NFE.
    """
    from flowsci.domains.proteins.metrics import evaluate

    scores = {}
    for n in candidates:
        sol = model.sample(lengths=sample_lengths(num), steps=int(n), seed=seed, progress=False)
        scores[int(n)] = float(evaluate(list(sol), diversity_per_length=False).summary["ca_ca_valid"])
    best = max(scores, key=lambda n: (scores[n], -n))
    return best, scores


def fit_reqflow(
    model: Any,
    dm: Any,
    steps: int,
    device: Any,
    pairs: int,
    nfe: int | Sequence[int],
    reflow_steps: int,
    reflow_lr: float = 1e-4,
    max_coil: float | None = 0.9,
) -> None:
    """One reflow of a model that holds the trained ``qflow`` weights (the runner loads them: ``init_from``).

    Makes ``pairs`` reflow pairs at ``nfe`` (a sequence: the teacher's best of those, :func:`teacher_best_nfe`),
    then fine-tunes for ``reflow_steps`` with a fresh AdamW at ``reflow_lr`` (the paper's 1e-4; the base training's
    5e-4 wrecks the tiny student: see the proteins page). Pairs whose sample has a DSSP coil fraction above
    ``max_coil`` are dropped (None: keep all). ``steps`` (the runner's step budget) is not used.
    """
    model.eval()
    probe: dict[int, float] = {}
    if not isinstance(nfe, int):
        nfe, probe = teacher_best_nfe(model, nfe)
        _log.info("reqflow: teacher CA-CA validity by NFE %s -> pairs at NFE %d", probe, nfe)
    meta = _rectify(model, sample_lengths(pairs), nfe, reflow_steps, reflow_lr, max_coil, device)
    model.reflow_meta = {**meta, "teacher_probe": probe}


def _rectify(
    model: Any,
    lengths: Sequence[int],
    nfe: int,
    reflow_steps: int,
    reflow_lr: float,
    max_coil: float | None,
    device: Any = "cpu",
    pair_batch: int = 12,
    batch_size: int = 8,
    seed: int = 1234,
) -> dict[str, Any]:
    """One reflow round in place: pairs from ``model`` at ``nfe`` (one per length; coil filter ``max_coil``;
    prior seed ``seed``), then ``reflow_steps`` of fine-tuning with a fresh AdamW at ``reflow_lr``. Returns the
    pairs' metadata.
    """
    from flowsci.domains.proteins.flow import make_reflow_pairs
    from flowsci.reflow import ReflowDataModule

    model.eval()
    coupling = make_reflow_pairs(model, lengths, steps=nfe, batch_size=pair_batch, seed=seed, max_coil=max_coil)
    model.train()
    model.optimizer_factory = functools.partial(torch.optim.AdamW, lr=reflow_lr)
    _trainer(reflow_steps, device).fit(model, datamodule=ReflowDataModule(coupling, batch_size=batch_size))
    return dict(coupling.meta)


def _sample(model: Any, request: SampleRequest, restraint: float = 0.0, lengths: Sequence[int] | None = None) -> Any:
    """A cell's samples (``lengths``, default :func:`sample_lengths`), prior seed ``request.seed``.

    The runner's untimed warm-up draw uses the cell's seed on the same model, so the cell repeats that seed on
    purpose: its :class:`~flowsci.domains.proteins.flow.RepeatedSeedWarning` is silenced here.
    """
    from flowsci.domains.proteins.flow import RepeatedSeedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepeatedSeedWarning)
        return model.sample(
            lengths=list(lengths) if lengths is not None else sample_lengths(request.num),
            steps=request.steps,
            solver=request.solver,
            seed=request.seed,
            progress=False,
            restraint=restraint,
        )


def _sample_long(model: Any, request: SampleRequest) -> Any:
    return _sample(model, request, lengths=bucket_lengths(request.num))


#: Sampler variants timed by :func:`mixed_length_speed`, in the order of the first pass (the second is mirrored).
SPEED_VARIANTS = ("bucketed", "per_length", "padded")
#: Columns :func:`mixed_length_speed` adds to the ``set`` metric (higher-is-better flags).
_SPEED_KEYS = {
    "s_per_backbone_bucketed": False,
    "s_per_backbone_per_length": False,
    "s_per_backbone_padded": False,
    "speedup_vs_per_length": True,
    "speedup_vs_padded": True,
}


def mixed_length_speed(
    model: Any,
    lengths: Sequence[int],
    steps: int,
    seed: int,
    solver: str = "euler",
    passes: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Any, dict[str, float]]:
    """Seconds per backbone of one mixed-length set sampled three ways, back to back on the same model.

    Variants: ``bucketed`` = one ``model.sample(lengths=lengths)`` call (length buckets, the default);
    ``per_length`` = one call per distinct length (all chains of that length together, the usual alternative);
    ``padded`` = one call with ``bucket=False`` (a single batch padded to the longest chain). The variants run in
    the order :data:`SPEED_VARIANTS`, then mirrored (A B C C B A), ``passes`` times in all, so a load that drifts
    linearly in time costs each variant the same; on CUDA every run is synchronised before the clock is read.

    Args:
        model: A :class:`~flowsci.domains.proteins.flow.ReQFlow`.
        lengths: Residues per backbone (mixed).
        steps: Euler steps (NFE) of every call.
        seed: Prior seed of every call (a timing comparison: the repeated-seed warning is silenced).
        solver: Fixed-step solver.
        passes: Runs per variant (≥ 1; the order alternates forward and mirrored).
        clock: Seconds since an arbitrary origin (``time.perf_counter``; injectable for tests).

    Returns:
        ``(solution, speed)``: the bucketed call's samples and ``{"s_per_backbone_<variant>": total seconds of the
        variant / (passes × len(lengths))}`` plus ``speedup_vs_per_length`` and ``speedup_vs_padded`` (the other
        variant's seconds / the bucketed ones; > 1 means the bucketed call is faster).
    """
    from flowsci.domains.proteins.flow import RepeatedSeedWarning

    if passes < 1 or not lengths:
        raise ValueError(f"need passes >= 1 and lengths, got passes={passes}, lengths={list(lengths)}")
    lengths = [int(n) for n in lengths]
    per_length = {n: lengths.count(n) for n in dict.fromkeys(lengths)}
    kw = {"steps": steps, "seed": seed, "solver": solver, "progress": False}
    runs: dict[str, Callable[[], Any]] = {
        "bucketed": lambda: model.sample(lengths=lengths, **kw),
        "per_length": lambda: [model.sample(lengths=[n] * k, **kw) for n, k in per_length.items()],
        "padded": lambda: model.sample(lengths=lengths, bucket=False, **kw),
    }
    cuda = getattr(model, "device", torch.device("cpu")).type == "cuda"
    seconds = dict.fromkeys(SPEED_VARIANTS, 0.0)
    solution = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepeatedSeedWarning)
        for p in range(passes):
            for name in SPEED_VARIANTS if p % 2 == 0 else SPEED_VARIANTS[::-1]:
                t0 = clock()
                out = runs[name]()
                if cuda:
                    torch.cuda.synchronize()
                seconds[name] += clock() - t0
                if name == "bucketed":
                    solution = out
    speed = {f"s_per_backbone_{k}": v / (passes * len(lengths)) for k, v in seconds.items()}
    base = speed["s_per_backbone_bucketed"]
    for other in ("per_length", "padded"):
        speed[f"speedup_vs_{other}"] = speed[f"s_per_backbone_{other}"] / base if base > 0 else float("nan")
    return solution, speed


def _sample_speed(model: Any, request: SampleRequest, passes: int = 2) -> Any:
    """The ``reqflow-long-speed`` cell: :func:`mixed_length_speed` on the ``reqflow-long`` lengths (``passes`` runs
    per variant); the bucketed samples carry the timings in ``extras["speed"]`` (read by the ``set`` metric).
    """
    solution, speed = mixed_length_speed(
        model, bucket_lengths(request.num), request.steps, request.seed, request.solver, passes=passes
    )
    solution.extras["speed"] = speed
    return solution


class _CellSamples(list):
    """A cell's backbones; :attr:`evaluation` is the one ``evaluate`` the geometry and bucket metrics share;
    :attr:`speed` the timings of a ``reqflow-long-speed`` cell (empty otherwise).
    """

    def __init__(self, backbones: Any = (), speed: dict[str, float] | None = None) -> None:
        super().__init__(backbones)
        self.speed = dict(speed or {})

    @functools.cached_property
    def evaluation(self) -> Any:
        from flowsci.domains.proteins.metrics import evaluate

        return evaluate(self, diversity_per_length=False)


def _evaluation(samples: list) -> Any:
    """``evaluate(samples, diversity_per_length=False)``, computed once per :class:`_CellSamples`."""
    return (samples if isinstance(samples, _CellSamples) else _CellSamples(samples)).evaluation


def _postprocess(solution: Any) -> list:
    return _CellSamples(solution, (getattr(solution, "extras", None) or {}).get("speed"))


def _plot_cell(samples: list, reference: dict[str, list], path: Any, title: str) -> Any:
    from flowsci.domains.proteins.metrics import plot_samples

    return plot_samples(samples, reference["val"], path, title, ("generated", "held-out"))


def _reference(dm: Any, num: int, seed: int) -> dict[str, list]:
    dm.setup("fit")
    rng = np.random.default_rng(seed)
    train = dm.train_backbones
    idx = sorted(rng.choice(len(train), size=min(_NOVELTY_REFS, len(train)), replace=False))
    return {"val": list(dm.val_backbones), "train_subset": [train[i] for i in idx]}


_GEOMETRY_KEYS = {
    "ca_ca_valid": True,
    "ca_ca_valid_0.25": True,
    "ca_ca_deviation": False,
    "clash_free": True,
    "clash_fraction": False,
    "num_ca_ca_clashes": False,
    "num_ca_clashes_3A": False,
    "angle_CA_C_N_dev": False,
    "peptide_break_rate": False,
    "helix": True,
    "strand": True,
    "coil": False,
    "rg_ratio_median": False,
    "finite": True,
}


def _geometry(samples: list, reference: Any) -> dict[str, float]:
    s = _evaluation(samples).summary
    return {k: s[k] for k in _GEOMETRY_KEYS}


#: Per-bucket columns (``<key>@<bucket>``) of the ``bucket`` metric, higher-is-better flags.
_BUCKET_KEYS = {
    "ca_ca_valid": True,
    "clash_free": True,
    "num_ca_clashes_3A": False,
    "helix": True,
    "strand": True,
    "rg_ratio_median": False,
}


def _buckets(samples: list, reference: Any) -> dict[str, float]:
    """``evaluate(...).by_length`` flattened to ``<key>@<bucket>`` (NaN for a bucket without samples)."""
    from flowsci.domains.proteins.metrics import LENGTH_BUCKETS

    by = _evaluation(samples).by_length
    return {
        f"{k}@{lo}-{hi}": float(by.get(f"{lo}-{hi}", {}).get(k, float("nan")))
        for lo, hi in LENGTH_BUCKETS
        for k in _BUCKET_KEYS
    }


def _set_level(samples: list, reference: Any) -> dict[str, float]:
    from flowsci.domains.proteins.metrics import angle_histogram_w1, diversity, novelty

    speed = dict(getattr(samples, "speed", None) or {})  # a reqflow-long-speed cell's timings
    finite = [b.coords for b in samples if np.isfinite(b.coords).all()]
    if not finite:
        keys = (
            "pairwise_tm",
            "novelty_max_tm",
            "memorisation_frac_above_0.9",
            "bend_angle_w1",
            "ca_dihedral_w1",
        )
        return {**dict.fromkeys(keys, float("nan")), **speed}
    by_len: dict[int, list] = {}
    for x in finite:
        by_len.setdefault(len(x), []).append(x)
    tms = [diversity(v)["pairwise_tm"] for v in by_len.values() if len(v) > 1]
    nov = novelty(finite, [b.coords for b in reference["train_subset"]])
    w1 = angle_histogram_w1(finite, [b.coords for b in reference["val"]])
    return {
        "pairwise_tm": float(np.mean(tms)) if tms else float("nan"),
        "novelty_max_tm": nov["novelty_max_tm"],
        "memorisation_frac_above_0.9": nov["memorisation_frac_above_0.9"],
        **w1,
        **speed,
    }


def _pair_nfe_text(nfe: int | Sequence[int]) -> str:
    if isinstance(nfe, int):
        return f"NFE {nfe}"
    return f"the teacher's best NFE of {tuple(nfe)} on a 12-backbone probe"


def spec(suite: str = "quick") -> BenchmarkSpec:
    """The proteins benchmark sized for ``suite`` (``smoke``, ``quick`` or ``full``)."""
    from flowsci.domains.proteins.metrics import LENGTH_BUCKETS

    sz = _SIZES[suite]
    reflow_fit = functools.partial(
        fit_reqflow,
        pairs=sz["reflow_pairs"],
        nfe=sz["reflow_nfe"],
        reflow_steps=sz["reflow_steps"],
        reflow_lr=sz["reflow_lr"],
        max_coil=sz["reflow_max_coil"],
    )
    full_grid = tuple(sz["nfe_grid"])
    ends = (full_grid[0], full_grid[-1])  # sampler ablations: fewest and most steps only
    methods = [
        Method(
            "qflow",
            build=lambda dm: _build(),
            fit=fit_qflow,
            description="quaternion SLERP-exp path, exp rotation schedule (rate 10), Euler to t = 1",
        ),
        Method(
            "qflow-x1",
            build=lambda dm: _build(final_step="x1"),
            weights_of="qflow",
            nfe_grid=ends,
            description="qflow weights, the paper's sampler: NFE - 1 Euler steps + a final x1-hat call at t = 1",
        ),
        Method(
            "qflow-linear",
            build=lambda dm: _build(rot_schedule="linear"),
            weights_of="qflow",
            nfe_grid=ends,
            description="qflow weights, linear rotation schedule",
        ),
        Method(
            "reqflow",
            build=lambda dm: _build(),
            init_from="qflow",
            fit=reflow_fit,
            train_steps=sz["reflow_steps"],
            nfe_grid=tuple(n for n in full_grid if n <= sz["reqflow_max_nfe"]),
            description=f"qflow + 1 reflow ({sz['reflow_pairs']} pairs at {_pair_nfe_text(sz['reflow_nfe'])}, "
            f"{sz['reflow_steps']} fine-tune steps at lr {sz['reflow_lr']:g})",
        ),
        Method(
            "reqflow-restraint",
            build=lambda dm: _build(),
            weights_of="reqflow",
            nfe_grid=(min(full_grid),),
            sample=functools.partial(_sample, restraint=0.2),
            description="reqflow weights + the sampling-time CA restraint (0.2 x 20 steps; a conditioner, it "
            "enforces the CA geometry the metrics score)",
        ),
    ]
    methods.append(
        Method(
            "reqflow-long",
            build=lambda dm: _build(trans_prior="rg"),
            init_from="reqflow",
            fit=functools.partial(fit_long, lr=sz["long_lr"], unroll=sz["long_unroll"]),
            train_steps=sz["long_steps"],
            nfe_grid=(min(full_grid),),
            sample=_sample_long,
            num_samples=sz["long_samples"],
            description=f"reqflow weights + {sz['long_steps']} steps on whole chains (length-aware batches) with the "
            "length-aware prior (Rg 2.2 L^0.38 A) and the unrolled loss (p = {}, K = {}); sampled at 50-250 "
            "residues".format(*sz["long_unroll"]),
        )
    )
    methods.append(
        Method(
            "reqflow-shipped",
            build=lambda dm: _shipped(),
            train_steps=0,
            nfe_grid=(min(full_grid),),
            sample=_sample_long,
            num_samples=sz["long_samples"],
            description="the shipped checkpoint ReQFlow.pretrained(), NOT trained by this suite (its recipe: this "
            "suite's reqflow grown to 4 blocks, 450 whole-chain steps, then 2700 with the unrolled loss p = 0.25, "
            "K = 2; proteins page), sampled like reqflow-long",
        )
    )
    methods.append(
        Method(
            "reqflow-long-speed",
            build=lambda dm: _build(trans_prior="rg"),
            weights_of="reqflow-long",
            nfe_grid=(min(full_grid),),
            sample=functools.partial(_sample_speed, passes=sz["speed_passes"]),
            description="reqflow-long weights and lengths, sampled 3 ways back to back "
            f"({'A B C C B A' if sz['speed_passes'] > 1 else 'A B C'}): one bucketed call, one call per length, one "
            "padded batch; set columns s_per_backbone_* and speedup_* (its s / sample column is all runs together)",
        )
    )
    if sz["igso3"]:
        methods.append(
            Method(
                "qflow-igso3",
                build=lambda dm: _build(train_rot_prior="igso3"),
                description="qflow trained with the paper's IGSO(3)(1.5) prior (uniform at sampling)",
            )
        )
    methods.append(
        Method(
            "frameflow-path",
            build=lambda dm: _build(rot_path="matrix"),
            baseline=True,
            description="FrameFlow's matrix exp/log rotation path, otherwise identical to qflow",
        )
    )
    return BenchmarkSpec(
        name="proteins",
        datamodule=datamodule,
        reference_data=_reference,
        methods=methods,
        metrics=[
            Metric(
                "geometry",
                _geometry,
                higher_is_better=_GEOMETRY_KEYS,
                description="CA-CA validity (+-0.1 A), clashes (CA<3 A, |i-j|>=3), angles, DSSP, Rg",
            ),
            Metric(
                "bucket",
                _buckets,
                higher_is_better={f"{k}@{lo}-{hi}": v for lo, hi in LENGTH_BUCKETS for k, v in _BUCKET_KEYS.items()},
                description="per length bucket (residues): CA-CA validity, clash-free, CA pairs < 3 A, helix, "
                "strand, median Rg / (2.2 L^0.38)",
            ),
            Metric(
                "set",
                _set_level,
                higher_is_better={
                    "pairwise_tm": False,
                    "novelty_max_tm": False,
                    "memorisation_frac_above_0.9": False,
                    "bend_angle_w1": False,
                    "ca_dihedral_w1": False,
                    **_SPEED_KEYS,
                },
                description="pairwise TM (diversity), max TM to 40 training chains, angle W1 to held-out; "
                "reqflow-long-speed: s per backbone bucketed / one call per length / padded, speedups",
            ),
        ],
        num_samples=sz["num_samples"],
        nfe_grid=sz["nfe_grid"],
        solvers=("euler",),
        train_steps=sz["train_steps"],
        seed=0,
        trainer_kwargs={"gradient_clip_val": 1.0},
        sample=_sample,
        postprocess=_postprocess,
        sample_plot=_plot_cell,
        primary_metric="ca_ca_valid",
        description=__doc__.split("\n\n")[0] + " Designability is not measured (no ProteinMPNN/ESMFold offline).",
        packages=("gemmi", "tmtools", "pydssp"),
        nfe_counter="net",
        version="7",
        warmup_samples=1,
    )


# --------------------------------------------------------------------------- diagnostics (README's extra tables)
