"""Proteins diagnostics behind the measured tables of the proteins documentation page.

Each is a function here and a subcommand of ``python -m flowsci.domains.proteins.diagnostics``:
:func:`sampling_sweep` (NFE × prior seed × sampler), :func:`sampling_speed` (length × batch timing),
:func:`denoiser_vs_t` (teacher-forced x̂1 on held-out chains), :func:`training_curve` (one run scored at several
step counts), :func:`real_reference` (the metrics of real chains), :func:`path_stability` (float32 stability of the
two rotation paths near π), :func:`reflow_checkpoint` (turn any QFlow checkpoint into ReQFlow) and
:func:`pretrain` (the shipped ``ReQFlow.pretrained()`` weights), :func:`bucket_table` (quality per length bucket)
and :func:`long_curve` (fine-tuning on whole chains with the length-aware prior, scored per length bucket). The
benchmark spec itself is
:mod:`flowsci.domains.proteins.benchmark`.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from flowsci.checkpoint import save_module
from flowsci.domains.proteins.benchmark import (
    _SIZES,
    LENGTHS,
    _geometry,
    _rectify,
    _reference,
    _set_level,
    _trainer,
    bucket_lengths,
    build_model,
    datamodule,
    fit_long,
    fit_qflow,
    fit_reqflow,
    sample_lengths,
    teacher_best_nfe,
)
from flowsci.domains.proteins.flow import RepeatedSeedWarning

__all__ = [
    "bucket_table",
    "denoiser_vs_t",
    "long_curve",
    "main",
    "path_stability",
    "pretrain",
    "real_reference",
    "reflow_checkpoint",
    "sampling_speed",
    "sampling_sweep",
    "time_per_backbone",
    "training_curve",
]


def reflow_checkpoint(
    ckpt: str,
    out: str,
    pairs: int = 48,
    nfe: int | Sequence[int] = 100,
    steps: int = 300,
    lr: float = 1e-4,
    lengths: Sequence[int] = LENGTHS,
    max_coil: float | None = 0.9,
    device: str = "cpu",
    batch_size: int = 8,
    seed: int = 1234,
) -> dict[str, Any]:
    """Turn a trained QFlow checkpoint (``flowsci fit``, any size) into ReQFlow and save it small.

    Generates ``pairs`` (prior draw, sample) pairs at ``nfe`` Euler steps (a sequence: the teacher's best of
    those by :func:`teacher_best_nfe`, as the quick suite does) with lengths cycling through ``lengths`` (prior
    seed ``seed``), fine-tunes ``steps`` optimizer steps at ``lr`` (batches of ``batch_size`` pairs) on
    ``device`` (``"cpu"`` or ``"cuda"``), and writes the result as :func:`pretrain` does (readable by
    :meth:`ReQFlow.from_checkpoint`).

    Returns:
        The ``meta`` dict written (pair counts, ``teacher_probe`` {NFE: CA–CA validity} when ``nfe`` is a
        sequence, steps, seconds).
    """
    from flowsci.domains.proteins.flow import ReQFlow

    t0 = time.perf_counter()
    model = ReQFlow.from_checkpoint(ckpt).to(device)
    probe: dict[int, float] = {}
    if not isinstance(nfe, int):
        nfe, probe = teacher_best_nfe(model, nfe)  # from_checkpoint returns the model in eval mode
    todo = [int(lengths[i % len(lengths)]) for i in range(pairs)]
    meta = _rectify(model, todo, nfe, steps, lr, max_coil, device, pair_batch=64, batch_size=batch_size, seed=seed)
    meta = {
        "teacher": str(ckpt),
        "pairs": meta,
        "teacher_probe": probe,
        "reflow_steps": steps,
        "reflow_lr": lr,
        "parameters": sum(p.numel() for p in model.net.parameters()),
        "seconds": time.perf_counter() - t0,
    }
    save_module(model.cpu().eval(), out, meta)
    return meta


def path_stability(n: int = 20000, seed: int = 0) -> dict[str, float]:
    """Float32 accuracy of the quaternion (SLERP-exp) and matrix (FrameFlow) rotation paths near angle π.

    Draws ``n`` pairs (q0, q1) whose relative angle is π − δ with δ log-uniform in [1e-7, 1e-2], evaluates
    both
    paths at t = 0.5 in float32 and reports the max / mean geodesic error (rad) against the float64 SLERP, and
    the fraction of non-finite outputs.
    """
    from flowsci.domains.proteins.flow import matrix_geodesic
    from flowsci.manifolds import SO3, random_quaternion

    so3 = SO3()
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(n, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    ang = torch.pi - 10 ** (-7 + 5 * torch.rand(n, generator=g, dtype=torch.float64))
    q0 = random_quaternion((n,), generator=g, dtype=torch.float64)
    q1 = so3.exp(q0, axis * ang[:, None])
    t = torch.full((n, 1), 0.5, dtype=torch.float64)
    exact = so3.geodesic(q0, q1, t)
    out: dict[str, float] = {}
    for name, q in (
        ("quaternion", so3.geodesic(q0.float(), q1.float(), t.float())),
        ("matrix", matrix_geodesic(q0.float(), q1.float(), t.float())[0]),
    ):
        finite = torch.isfinite(q).all(-1)
        err = so3.dist(q.double()[finite], exact[finite])
        out[f"{name}_max_err_rad"] = float(err.max())
        out[f"{name}_mean_err_rad"] = float(err.mean())
        out[f"{name}_nonfinite_frac"] = float((~finite).double().mean())
    return out


def time_per_backbone(model: Any, length: int = 100, num: int = 8, steps: int = 10, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds per backbone for ``num`` backbones of ``length`` at ``steps`` NFE, on the
    model's device (CUDA work is synchronised before the clock stops; the first call is a warm-up).
    """
    model.eval()
    cuda = model.device.type == "cuda"
    best = float("inf")
    for r in range(repeats + int(cuda)):
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # timing runs reuse seeds on purpose
            warnings.simplefilter("ignore", RepeatedSeedWarning)
            model.sample(lengths=[length] * num, steps=steps, seed=r, progress=False)
        if cuda:
            torch.cuda.synchronize(model.device)
        if r or not cuda:
            best = min(best, (time.perf_counter() - t0) / num)
    return best


def sampling_speed(
    model: Any,
    lengths: Sequence[int] = (50, 100, 150, 200, 250),
    batch_sizes: Sequence[int] = (1, 8),
    steps: int = 10,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Wall-clock sampling cost per backbone over length × batch size at a fixed NFE (the field's speed table).

    Returns:
        Rows ``length, batch, nfe, s_per_backbone, ms_per_nfe`` (ms per network evaluation per backbone).
    """
    rows = []
    for n in lengths:
        for b in batch_sizes:
            sec = time_per_backbone(model, int(n), int(b), int(steps), repeats)
            rows.append(
                {
                    "length": int(n),
                    "batch": int(b),
                    "nfe": int(steps),
                    "s_per_backbone": sec,
                    "ms_per_nfe": 1000 * sec / steps,
                }
            )
    return rows


_SWEEP_KEYS = (
    "ca_ca_valid",
    "ca_ca_mean",
    "clash_free",
    "clash_fraction",
    "num_ca_ca_clashes",
    "helix",
    "strand",
    "coil",
    "rg_ratio_median",
)


def sampling_sweep(
    model: Any,
    nfes: Sequence[int] = (10, 20, 50, 100),
    seeds: Sequence[int] = (0,),
    num: int = 12,
    final_steps: Sequence[str] = ("euler",),
    rot_schedules: Sequence[str] = ("exp",),
    restraint: float = 0.0,
) -> list[dict[str, Any]]:
    """Sample quality of one trained model over NFE × prior seed × sampler (the README's seed / sampler tables).

    Each cell samples ``num`` backbones (lengths :func:`sample_lengths`) and scores them with
    :func:`~flowsci.domains.proteins.metrics.evaluate` (no TM-based metrics, so it is fast).

    Args:
        model: A trained :class:`~flowsci.domains.proteins.flow.ReQFlow`.
        nfes: Network evaluations per sample.
        seeds: Prior seeds (one cell each).
        num: Backbones per cell.
        final_steps: ``"euler"`` and/or ``"x1"`` (the paper's sampler).
        rot_schedules: ``"exp"`` and/or ``"linear"``.
        restraint: Sampling-time CA restraint weight (:meth:`ReQFlow.sample`; 0 = plain sampler).

    Returns:
        One row per cell: ``nfe, seed, final_step, rot_schedule, seconds`` and the per-chain means of
        ``ca_ca_valid`` (±0.1 Å), ``ca_ca_mean`` (Å), ``clash_free``, ``clash_fraction``, ``num_ca_ca_clashes``
        (pairs < 1 Å per chain), ``helix``, ``strand``, ``coil`` and the median ``rg_ratio_median``.
    """
    from flowsci.domains.proteins.metrics import evaluate

    model.eval()
    rows = []
    for final in final_steps:
        for sched in rot_schedules:
            for nfe in nfes:
                for seed in seeds:
                    t0 = time.perf_counter()
                    sol = model.sample(
                        lengths=sample_lengths(num),
                        steps=int(nfe),
                        seed=int(seed),
                        final_step=final,
                        rot_schedule=sched,
                        progress=False,
                        restraint=restraint,
                    )
                    dt = time.perf_counter() - t0
                    s = evaluate(list(sol), diversity_per_length=False).summary
                    row = {"nfe": int(nfe), "seed": int(seed), "final_step": final, "rot_schedule": sched}
                    row.update({k: float(s[k]) for k in _SWEEP_KEYS})
                    row["seconds"] = dt
                    rows.append(row)
    return rows


def denoiser_vs_t(
    model: Any,
    backbones: Sequence[Any],
    times: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1.0),
    crop_length: int | None = 100,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Teacher-forced clean-frame prediction on real chains at fixed t (the README's denoiser-vs-t line).

    For each t the chains are noised on the training path, x_t = interpolate(x0, x1, t) with a seeded prior
    draw, and the network predicts x̂1 twice (the second call self-conditioned on the first, as in sampling).

    Args:
        model: A :class:`~flowsci.domains.proteins.flow.ReQFlow`.
        backbones: Real chains (e.g. ``ProteinDataModule.val_backbones``).
        times: Times to probe.
        crop_length: Chains are cut to their first ``crop_length`` residues (None: whole chains).
        seed: Seed of the prior draw.

    Returns:
        Rows ``{t, pred_ca_ca_mean, x_t_ca_ca_mean, data_ca_ca_mean, ca_error}`` with CA–CA means over
        consecutive residues of x̂1, x_t and the data (Å) and the mean CA displacement |x̂1 − x1| (Å, no
        superposition: the frames share the data's coordinate system).
    """
    from flowsci.domains.proteins.data import BackboneDataset, collate_backbones
    from flowsci.domains.proteins.flow import ANG_PER_NM

    model.eval()
    chains = [b if crop_length is None or len(b) <= crop_length else _head(b, crop_length) for b in backbones]
    ds = BackboneDataset(chains, crop_length=None)
    batch = collate_backbones([ds[i] for i in range(len(ds))])
    dtype = next(model.parameters()).dtype
    batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}
    x1, cond, mask = model.unpack_batch(batch)
    x0 = model.sample_prior(x1, cond, torch.Generator().manual_seed(seed))
    mb = mask.bool()
    bond = mb[:, 1:] & mb[:, :-1]

    def ca_ca(x: torch.Tensor) -> float:
        ca = x[..., :3] * ANG_PER_NM
        return float((ca[:, 1:] - ca[:, :-1]).norm(dim=-1)[bond].mean())

    rows = []
    with torch.no_grad():
        for t in times:
            tt = torch.full((x1.shape[0],), float(t), dtype=x1.dtype)
            xt = torch.where(mb[..., None], model._interpolate(x0, x1, tt), x1)
            sc = model._predict(xt, tt, mask.to(x1.dtype), cond["res_idx"], None)[..., :3]
            pred = model._predict(xt, tt, mask.to(x1.dtype), cond["res_idx"], sc)
            err = ((pred[..., :3] - x1[..., :3]) * ANG_PER_NM).norm(dim=-1)[mb].mean()
            rows.append(
                {
                    "t": float(t),
                    "pred_ca_ca_mean": ca_ca(pred),
                    "x_t_ca_ca_mean": ca_ca(xt),
                    "data_ca_ca_mean": ca_ca(x1),
                    "ca_error": float(err),
                }
            )
    return rows


def real_reference(num: int = 12) -> dict[str, float]:
    """The suite's metrics on real chains: the first ``num`` held-out chains of ≥ 100 residues, cut to the
    sample lengths 60/80/100 (the README's "real held-out chains" row).
    """
    dm = datamodule()
    dm.setup("fit")
    ref = _reference(dm, num, 0)
    val = [b for b in dm.val_backbones if len(b) >= max(LENGTHS)][:num]
    cut = [_head(b, n) for b, n in zip(val, sample_lengths(len(val)), strict=True)]
    return {"num": float(len(cut)), **_geometry(cut, ref), **_set_level(cut, ref)}


def _head(bb: Any, n: int) -> Any:
    from flowsci.domains.proteins.data import Backbone

    return Backbone(bb.coords[:n], bb.seq[:n], bb.chain, bb.res_ids[:n], name=bb.name, meta=dict(bb.meta))


def training_curve(
    checkpoints: Sequence[int] = (800, 1200, 1600, 2000),
    nfes: Sequence[int] = (10, 100),
    num: int = 12,
    seed: int = 0,
    final_steps: Sequence[str] = ("euler",),
    sample_seeds: Sequence[int] = (0,),
    res_idx_from: str = "chain",
    train_rot_prior: str = "uniform",
    aux_t: float = 0.5,
) -> list[dict[str, Any]]:
    """Train one quick-suite QFlow (:func:`build_model`, :func:`datamodule`) and score it at several step counts.

    The weights are snapshotted after each step count in ``checkpoints`` during a single run of
    ``max(checkpoints)`` steps, then each snapshot is scored with :func:`sampling_sweep`.

    Args:
        checkpoints: Optimizer steps at which to snapshot.
        nfes: NFE of the scored cells.
        num: Backbones per cell.
        seed: ``pl.seed_everything`` seed of the training run.
        final_steps: Samplers to score.
        sample_seeds: Prior seeds of the scored cells.
        res_idx_from: Residue indices of the training crops (``"chain"``, the suite's, or ``"crop"``: the
            previous default, for the ablation in the README).
        train_rot_prior: Rotation prior of training (``"uniform"``, the suite's, or ``"igso3"``: the paper's
            IGSO(3)(1.5) around the data; sampling stays uniform).
        aux_t: The auxiliary (backbone-atom, pair-distance) losses apply when t > ``aux_t`` (suite: 0.5).

    Returns:
        :func:`sampling_sweep` rows with an added ``train_steps``.
    """
    import pytorch_lightning as pl

    pl.seed_everything(seed)
    wanted = sorted({int(c) for c in checkpoints})
    snaps: dict[int, dict[str, torch.Tensor]] = {}

    class _Snap(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.global_step in wanted:
                snaps[trainer.global_step] = copy.deepcopy(pl_module.state_dict())

    model = build_model(train_rot_prior=train_rot_prior, aux_t=aux_t)
    trainer = _trainer(wanted[-1])
    trainer.callbacks.append(_Snap())
    trainer.fit(model, datamodule=datamodule(res_idx_from))
    rows = []
    for step in wanted:
        model.load_state_dict(snaps[step])
        for row in sampling_sweep(model, nfes, sample_seeds, num, final_steps):
            rows.append({"train_steps": step, **row})
    return rows


_BUCKET_TABLE_KEYS = (
    "ca_ca_valid",
    "ca_ca_valid_0.25",
    "clash_free",
    "num_ca_clashes_3A",
    "helix",
    "strand",
    "coil",
    "rg_ratio_median",
)


def bucket_table(
    model: Any, per_bucket: int = 8, nfe: int = 10, seed: int = 0, restraint: float = 0.0
) -> list[dict[str, Any]]:
    """Sample quality per length bucket (50–99, 100–149, 150–199, 200–250 residues), the proteins page's table.

    ``per_bucket`` chains at evenly spaced lengths in each bucket (:func:`bucket_lengths`), all in one
    :meth:`~flowsci.domains.proteins.flow.ReQFlow.sample` call (prior seed ``seed``, Euler, ``nfe`` steps), scored
    by ``evaluate(...).by_length``.

    Returns:
        One row per bucket: ``bucket``, ``num``, per-chain means of ``ca_ca_valid`` (±0.1 Å), ``ca_ca_valid_0.25``,
        ``clash_free``, ``num_ca_clashes_3A`` (CA pairs with |i − j| ≥ 3 under 3 Å, per chain), ``helix``,
        ``strand``, ``coil``, the median ``rg_ratio_median`` (Rg / 2.2·L^0.38) and the call's ``seconds``.
    """
    from flowsci.domains.proteins.metrics import LENGTH_BUCKETS, evaluate

    lengths = [n for lo, hi in LENGTH_BUCKETS for n in bucket_lengths(per_bucket, lo, hi)]
    model.eval()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepeatedSeedWarning)  # a curve re-samples the same seed on new weights
        sol = model.sample(lengths=lengths, steps=nfe, seed=seed, restraint=restraint, progress=False)
    dt = time.perf_counter() - t0
    by = evaluate(list(sol), diversity_per_length=False).by_length
    return [
        {"bucket": label, "num": int(v["num"]), **{k: float(v[k]) for k in _BUCKET_TABLE_KEYS}, "seconds": dt}
        for label, v in by.items()
    ]


def long_curve(
    ckpt: str | None = None,
    checkpoints: Sequence[int] = (150, 300, 600),
    lr: float = 1e-4,
    per_bucket: int = 4,
    trans_prior: str = "rg",
    out: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_blocks: int | None = None,
    relpos_k: int | None = None,
    max_dist: float | None = None,
    rg_weight: float | None = None,
    centroid_feats: bool | None = None,
    length_feats: bool | None = None,
    seeds: Sequence[int] = (0,),
    loss_chains: int | None = None,
    grad_clip: float = 1.0,
    unroll_prob: float | None = None,
    unroll_steps: int | None = None,
) -> list[dict[str, Any]]:
    """Fine-tune a trained model on whole chains (:func:`fit_long`) and score snapshots per length bucket.

    The model (``ckpt``; None: ``ReQFlow.pretrained()``) switches to the translation prior ``trans_prior`` (``"rg"``:
    length-aware, :func:`~flowsci.domains.proteins.flow.translation_prior_std`) for training and sampling, is
    trained for ``max(checkpoints)`` steps at ``lr`` and scored by :func:`bucket_table` (NFE 10, each prior seed of
    ``seeds``) at step 0 and after each step count in ``checkpoints``.

    Args:
        ckpt: Starting checkpoint.
        checkpoints: Optimizer steps at which to snapshot.
        lr: AdamW learning rate of the fine-tuning (fresh optimizer).
        per_bucket: Chains per length bucket in each scored cell.
        trans_prior: Translation prior of fine-tuning and sampling.
        out: Write the final weights here (:func:`flowsci.checkpoint.save_module`, with the run's metadata).
        seed: ``pl.seed_everything`` seed of the run.
        device: Training device (``"cpu"`` or ``"cuda"``).
        num_blocks: If set, the trunk first grows to this many blocks
            (:meth:`~flowsci.domains.proteins.model.IPAFrameNet.grown`: the same function at step 0).
        relpos_k: If set, the relative-position clip first grows to this (``grown``).
        max_dist: If set, the distance bins first grow out to this many Å (``grown``).
        centroid_feats: If True, the trunk first gains the centroid node features (``grown``).
        length_feats: If True, the trunk first gains the chain-length node features (``grown``).
        loss_chains: If set, the fine-tuning's batch loss is the sum over chains / this (``ReQFlow(loss_chains=...)``:
            every chain the same weight in length-aware batches).
        grad_clip: Gradient-norm clipping of the fine-tuning (:func:`fit_long`).
        seeds: Prior seeds of the scored cells (one :func:`bucket_table` each; choose on seeds other than the
            reported ones).
        rg_weight: If set, the fine-tuning adds the chain-size loss with this weight (``ReQFlow(rg_weight=...)``).
        unroll_prob: If set, the fine-tuning takes this share of its batches' losses on the sampler's own unrolled
            states (``ReQFlow(unroll_prob=...)``: trajectory-level training against exposure bias).
        unroll_steps: If set, at most this many sampler steps are unrolled (``ReQFlow(unroll_steps=...)``).

    Returns:
        :func:`bucket_table` rows with ``train_steps``, ``train_seconds`` (wall time of training so far),
        ``parameters`` (of the trunk) and the prior ``seed``.
    """
    import pytorch_lightning as pl

    from flowsci.domains.proteins.flow import ReQFlow

    model = ReQFlow.pretrained() if ckpt is None else ReQFlow.from_checkpoint(ckpt)
    model.trans_prior = trans_prior
    if (num_blocks, relpos_k, max_dist, centroid_feats, length_feats) != (None,) * 5:
        model.net = model.net.grown(num_blocks, relpos_k, max_dist, centroid_feats, length_feats)
    if rg_weight is not None:
        model.rg_weight = rg_weight
    if loss_chains is not None:
        model.loss_chains = int(loss_chains)
    if unroll_prob is not None or unroll_steps is not None:
        model.set_unroll(unroll_prob if unroll_prob is not None else model.unroll_prob, unroll_steps)
    params = sum(p.numel() for p in model.net.parameters())
    wanted = sorted({int(c) for c in checkpoints})
    snaps: dict[int, tuple[dict[str, torch.Tensor], float]] = {}
    t0 = time.perf_counter()

    class _Snap(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
            if trainer.global_step in wanted and trainer.global_step not in snaps:
                snaps[trainer.global_step] = (copy.deepcopy(pl_module.state_dict()), time.perf_counter() - t0)

    def score(step: int, sec: float) -> list[dict[str, Any]]:
        return [
            {"train_steps": step, "train_seconds": sec, "parameters": params, "seed": int(s), **r}
            for s in seeds
            for r in bucket_table(model, per_bucket, seed=int(s))
        ]

    rows = score(0, 0.0)
    pl.seed_everything(seed, verbose=False)
    t0 = time.perf_counter()
    fit_long(model, None, wanted[-1], device, lr=lr, callbacks=[_Snap()], grad_clip=grad_clip)
    for step in wanted:
        state, sec = snaps[step]
        model.load_state_dict(state)
        rows += score(step, sec)
    if out:
        meta = {
            "base": ckpt or "ReQFlow.pretrained()",
            "long_steps": wanted[-1],
            "long_lr": lr,
            "trans_prior": trans_prior,
            "train_seconds": snaps[wanted[-1]][1],
            "parameters": params,
            "net": model.net.config,
            "command": "python -m flowsci.domains.proteins.diagnostics long "
            + (f"--ckpt {ckpt} " if ckpt else "")
            + "".join(
                f"--{flag} {v} "
                for flag, v in (
                    ("blocks", num_blocks),
                    ("relpos-k", relpos_k),
                    ("max-dist", max_dist),
                    ("rg-weight", rg_weight),
                    ("loss-chains", loss_chains),
                    ("grad-clip", grad_clip if grad_clip != 1.0 else None),
                    ("unroll", unroll_prob),
                    ("unroll-steps", unroll_steps),
                )
                if v is not None
            )
            + ("--centroid " if centroid_feats else "")
            + ("--length-feats " if length_feats else "")
            + f"--train-seed {seed} --seeds {','.join(map(str, seeds))} "
            + f"--checkpoints {','.join(map(str, wanted))} --lr {lr:g} --num {per_bucket} --out {out}",
        }
        save_module(model.eval(), out, meta)
    return rows


def pretrain(
    out: str, steps: int | None = None, suite: str = "quick", qflow_out: str | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Train the suite's ReQFlow (QFlow ``steps`` + one reflow, as the ``reqflow`` method) and save it small.

    Seeds as the benchmark runner does (``seed_everything(0, workers=True)`` before building), trains the
    ``qflow`` weights, makes the reflow pairs at the teacher's best NFE and fine-tunes, then writes
    ``{"state_dict", "flowsci", "meta"}`` (:func:`flowsci.checkpoint.save_module`;
    readable by :meth:`ReQFlow.from_checkpoint`; float32, < 1 MB).

    Args:
        out: Output file (``.pt``).
        steps: QFlow training steps (default: the suite's).
        suite: Sizes of the reflow stage (``quick``: 48 pairs, 600 fine-tuning steps).
        qflow_out: Also write the QFlow teacher (before reflow) here, in the same format.
        device: Training device (``"cpu"`` or ``"cuda"``).

    Returns:
        The ``meta`` dict written (steps, pair NFE and teacher probe, parameter count, seconds).
    """
    import pytorch_lightning as pl

    sz = _SIZES[suite]
    steps = int(steps or sz["train_steps"])
    t0 = time.perf_counter()
    dm = datamodule()
    pl.seed_everything(0, workers=True, verbose=False)  # as the runner: the qflow method first ...
    teacher = build_model()
    fit_qflow(teacher, dm, steps, device)
    if qflow_out:
        save_module(teacher.eval(), qflow_out, {"qflow_steps": steps, "reflow": None})
    pl.seed_everything(0, workers=True, verbose=False)  # ... then reqflow from the qflow weights (init_from)
    model = build_model()
    model.load_state_dict(teacher.state_dict())
    fit_reqflow(
        model,
        dm,
        steps,
        device,
        sz["reflow_pairs"],
        sz["reflow_nfe"],
        sz["reflow_steps"],
        sz["reflow_lr"],
        sz["reflow_max_coil"],
    )
    model.eval()
    meta = {
        "qflow_steps": steps,
        "suite": suite,
        "reflow": {k: v for k, v in model.reflow_meta.items() if k != "teacher"},
        "parameters": sum(p.numel() for p in model.net.parameters()),
        "seconds": time.perf_counter() - t0,
        "command": f"python -m flowsci.domains.proteins.diagnostics pretrain --out {out} --steps {steps}"
        + (f" --qflow-out {qflow_out}" if qflow_out else ""),
    }
    save_module(model, out, meta)
    return meta


def _rows_markdown(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        out.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m flowsci.domains.proteins.diagnostics {sweep,denoiser,curve,pretrain,real} ...``: diagnostics.

    ``sweep --ckpt C [--nfe 10,100] [--seeds 0,1,2] [--final-steps euler,x1] [--restraint 0.2]``:
    :func:`sampling_sweep`;
    ``denoiser --ckpt C [--times ...]``: :func:`denoiser_vs_t` on the 18 held-out chains of the quick suite;
    ``curve [--checkpoints 800,1200,1600,2000] [--nfe 10,100] [--seeds 0] [--train-seed 0] [--res-idx chain]
    [--train-rot-prior uniform] [--aux-t 0.5]``:
    :func:`training_curve`;
    ``pretrain --out PATH [--steps N] [--qflow-out PATH]``: :func:`pretrain`; ``real``: :func:`real_reference`;
    ``speed --ckpt C [--lengths 50,100,150,200,250] [--batches 1,8] [--nfe 10]``: :func:`sampling_speed`;
    ``buckets --ckpt C [--num 8] [--nfe 10] [--seeds 0] [--restraint 0]``: :func:`bucket_table` (``--num`` chains per
    bucket); ``long [--ckpt C] [--checkpoints 150,300,600] [--lr 1e-4] [--num 4] [--out PATH] [--blocks 4]
    [--relpos-k 64] [--max-dist 40] [--centroid] [--length-feats] [--rg-weight 2] [--loss-chains 8] [--grad-clip 100]
    [--unroll 0.5] [--unroll-steps 4] [--seeds 1,2]``: :func:`long_curve` (the trunk grown first);
    ``reflow --ckpt C --out PATH [--pairs 48] [--nfe 10,20,50] [--steps 300] [--lengths 60,80,100] [--max-coil 0.9]``:
    :func:`reflow_checkpoint` (several NFE: pairs at the teacher's best of them). ``--device cuda`` runs sweep,
    speed and reflow on a GPU. Prints a Markdown table (pretrain, reflow: the metadata); ``--json PATH`` also
    writes the rows. On the CPU
    it runs on one thread.
    """
    import argparse

    def ints(s: str) -> list[int]:
        return [int(v) for v in s.split(",")]

    p = argparse.ArgumentParser(prog="python -m flowsci.domains.proteins.diagnostics")
    p.add_argument(
        "what", choices=("sweep", "denoiser", "curve", "pretrain", "real", "speed", "reflow", "buckets", "long")
    )
    p.add_argument("--lr", type=float, default=1e-4, help="long: fine-tuning learning rate")
    p.add_argument("--out", help="pretrain: output .pt file")
    p.add_argument("--qflow-out", help="pretrain: also write the QFlow teacher here")
    p.add_argument(
        "--steps",
        type=int,
        help="pretrain: QFlow training steps (default: the quick suite's); reflow: fine-tuning steps (default 300)",
    )
    p.add_argument("--pairs", type=int, default=48, help="reflow: pairs generated")
    p.add_argument("--max-coil", type=float, default=0.9, help="reflow: drop pairs whose sample is more coil")
    p.add_argument("--pair-seed", type=int, default=1234, help="reflow: prior seed of the pairs")
    p.add_argument("--lengths", type=ints, default=None, help="speed / reflow: backbone lengths")
    p.add_argument("--batches", type=ints, default=[1, 8], help="speed: batch sizes")
    p.add_argument("--device", default="cpu", help="sweep / speed / reflow / pretrain / long: cpu or cuda")
    p.add_argument("--ckpt", help="ReQFlow checkpoint (sweep, denoiser, ...; buckets, long: default the shipped one)")
    p.add_argument("--nfe", type=ints, default=[10, 100])
    p.add_argument("--seeds", type=ints, default=[0])
    p.add_argument("--num", type=int, default=12)
    p.add_argument("--final-steps", default="euler")
    p.add_argument("--times", default="0.1,0.3,0.5,0.7,0.9,0.99,1.0")
    p.add_argument("--checkpoints", type=ints, default=None, help="curve: 800,1200,1600,2000; long: 150,300,600")
    p.add_argument("--train-seed", type=int, default=0, help="curve / long: seed of the training run")
    p.add_argument("--res-idx", default="chain", choices=("chain", "crop"), help="curve: crop residue indices")
    p.add_argument("--train-rot-prior", default="uniform", choices=("uniform", "igso3"), help="curve: training prior")
    p.add_argument("--aux-t", type=float, default=0.5, help="curve: auxiliary losses when t > this")
    p.add_argument("--blocks", type=int, help="long: grow the trunk to this many blocks first")
    p.add_argument("--relpos-k", type=int, help="long: grow the relative-position clip to this first")
    p.add_argument("--max-dist", type=float, help="long: grow the distance bins out to this many Å first")
    p.add_argument("--centroid", action="store_true", help="long: add the centroid node features first")
    p.add_argument("--length-feats", action="store_true", help="long: add the chain-length node features first")
    p.add_argument("--loss-chains", type=int, help="long: batch loss = sum over chains / this (per-chain weight)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="long: gradient-norm clipping of the fine-tuning")
    p.add_argument("--rg-weight", type=float, help="long: add the chain-size loss with this weight")
    p.add_argument("--unroll", type=float, help="long: share of batches trained on unrolled sampler states")
    p.add_argument("--unroll-steps", type=int, help="long: most sampler steps unrolled (default 4)")
    p.add_argument("--restraint", type=float, default=0.0, help="sweep: sampling-time CA restraint weight")
    p.add_argument("--json", help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(1)
    finals = a.final_steps.split(",")
    if a.what in ("pretrain", "reflow") and not a.out:
        p.error(f"{a.what} needs --out")
    if a.what == "pretrain":
        print(json.dumps(pretrain(a.out, a.steps, qflow_out=a.qflow_out, device=a.device), indent=1))
        return
    if a.what == "reflow":
        if not a.ckpt:
            p.error("reflow needs --ckpt")
        meta = reflow_checkpoint(
            a.ckpt,
            a.out,
            a.pairs,
            a.nfe[0] if len(a.nfe) == 1 else a.nfe,
            a.steps or 300,
            lengths=a.lengths or LENGTHS,
            max_coil=a.max_coil,
            device=a.device,
            seed=a.pair_seed,
        )
        print(json.dumps(meta, indent=1))
        return
    if a.what == "real":
        rows = [real_reference(a.num)]
    elif a.what == "long":
        rows = long_curve(
            a.ckpt,
            a.checkpoints or (150, 300, 600),
            a.lr,
            a.num,
            out=a.out,
            seed=a.train_seed,
            device=a.device,
            num_blocks=a.blocks,
            relpos_k=a.relpos_k,
            max_dist=a.max_dist,
            rg_weight=a.rg_weight,
            centroid_feats=a.centroid or None,
            length_feats=a.length_feats or None,
            seeds=a.seeds,
            loss_chains=a.loss_chains,
            grad_clip=a.grad_clip,
            unroll_prob=a.unroll,
            unroll_steps=a.unroll_steps,
        )
    elif a.what == "curve":
        rows = training_curve(
            a.checkpoints or (800, 1200, 1600, 2000),
            a.nfe,
            a.num,
            a.train_seed,
            finals,
            a.seeds,
            a.res_idx,
            a.train_rot_prior,
            a.aux_t,
        )
    else:
        from flowsci.domains.proteins.flow import ReQFlow

        if not a.ckpt and a.what != "buckets":
            p.error(f"{a.what} needs --ckpt")
        model = (ReQFlow.from_checkpoint(a.ckpt) if a.ckpt else ReQFlow.pretrained()).to(a.device)
        if a.what == "sweep":
            rows = sampling_sweep(model, a.nfe, a.seeds, a.num, finals, restraint=a.restraint)
        elif a.what == "buckets":
            rows = [{"seed": s, **r} for s in a.seeds for r in bucket_table(model, a.num, a.nfe[0], s, a.restraint)]
        elif a.what == "speed":
            rows = sampling_speed(model, a.lengths or (50, 100, 150, 200, 250), a.batches, a.nfe[0])
        else:
            dm = datamodule()
            dm.setup("fit")
            rows = denoiser_vs_t(model, dm.val_backbones, [float(v) for v in a.times.split(",")])
    print(_rows_markdown(rows))
    if a.json:
        from flowsci.io import atomic_write_text

        atomic_write_text(a.json, json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
