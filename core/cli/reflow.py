"""``flowsci reflow``: rectify a trained flow (and optionally distil it), or run the 2-D toy demo (``--demo``).

Writes ``pairs.npz``, ``reflow.ckpt`` (loadable by ``flowsci sample --ckpt``), ``distilled.ckpt`` when
``--distill-steps > 0`` and ``metrics.json`` (straightness before/after, NFE) into ``--out``, atomically: a run that
fails (a bad argument is caught before training) leaves an earlier folder as it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from flowsci.checkpoint import load_module
from flowsci.distill import PREMETRICS, distill
from flowsci.errors import InputError
from flowsci.io import atomic_dir, atomic_write, check_out_dir
from flowsci.module import QUIET_TRAINER, FlowMatching
from flowsci.reflow import (
    ReflowPairs,
    generate_pairs,
    module_straightness,
    rectify,
    save_student_checkpoint,
)

__all__ = ["run", "toy_demo"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsci reflow",
        description="Rectify a trained flow: sample (noise, sample) pairs with the teacher, store them, train the "
        "rectified student from the teacher's weights (optionally distil it to few steps) and report straightness.",
    )
    p.add_argument("--ckpt", help="teacher checkpoint written by `flowsci fit` (or an earlier reflow)")
    p.add_argument("--pairs", type=int, default=10_000, help="number of (noise, sample) pairs")
    p.add_argument("--pairs-file", default=None, help="reuse stored pairs instead of sampling new ones")
    p.add_argument("--steps", type=int, default=None, help="teacher solver steps (default: the model's)")
    p.add_argument("--solver", default=None, help="teacher solver: euler | midpoint | heun | rk4 | dopri5")
    p.add_argument("--train-steps", type=int, default=2000, help="optimisation steps of the student")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--distill-steps", type=int, default=0, help="then distil to --distill-nfe steps (0: skip)")
    p.add_argument("--distill-nfe", type=int, default=1, help="Euler steps of the distilled student")
    p.add_argument("--premetric", default="l2", help="distillation premetric: l2 | pseudo_huber")
    p.add_argument("--eval-num", type=int, default=2000, help="samples for the straightness metric")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="reflow", help="output folder (refused if not empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--trust", action="store_true", help="allow a checkpoint to name classes outside flowsci")
    p.add_argument("--demo", action="store_true", help="run the 2-D toy experiment (no --ckpt needed)")
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """``flowsci reflow``: rectify (and optionally distil) a trained flow; prints and returns the metrics.

    Writes ``pairs.npz``, ``reflow.ckpt`` (loadable by ``flowsci sample --ckpt``), ``distilled.ckpt`` when
    ``--distill-steps > 0``, and ``metrics.json`` (straightness before/after, NFE) into ``--out``.
    """
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.demo:
        with atomic_dir(args.out, overwrite=args.overwrite, source="--out") as tmp:
            metrics = toy_demo(seed=args.seed, out=tmp)
        return metrics
    if not args.ckpt:
        raise InputError("--ckpt", "is required (or --demo)")
    if args.premetric not in PREMETRICS:  # checked before any training
        raise InputError("--premetric", f"unknown premetric {args.premetric!r}; choose one of {sorted(PREMETRICS)}")
    for flag, value in (
        ("--pairs", args.pairs),
        ("--train-steps", args.train_steps),
        ("--batch-size", args.batch_size),
    ):
        if value < 1:
            raise InputError(flag, f"must be >= 1, got {value}")
    check_out_dir(args.out, overwrite=args.overwrite, source="--out")
    pl.seed_everything(args.seed, verbose=False)
    teacher = load_module(args.ckpt, trust=args.trust)
    if not isinstance(teacher, FlowMatching):
        raise InputError(args.ckpt, f"holds a {type(teacher).__name__}, not a FlowMatching model")
    with atomic_dir(args.out, overwrite=args.overwrite, source="--out") as out:
        metrics = _reflow(args, teacher, out)
    return metrics


def _reflow(args: argparse.Namespace, teacher: FlowMatching, out: Path) -> dict[str, Any]:
    """Pairs, rectified student, optional distillation and metrics, written into ``out``."""
    t0 = time.perf_counter()
    if args.pairs_file:
        pairs = ReflowPairs.load(args.pairs_file)
    else:
        pairs = generate_pairs(teacher, args.pairs, steps=args.steps, solver=args.solver, seed=args.seed)
        pairs.meta["teacher_ckpt"] = str(args.ckpt)
        pairs.save(out / "pairs.npz")
    student = rectify(teacher, pairs, max_steps=args.train_steps, batch_size=args.batch_size)
    metrics: dict[str, Any] = {
        "pairs": len(pairs),
        "teacher_nfe_per_pair": pairs.meta.get("nfe_per_sample"),
        "straightness_teacher": module_straightness(teacher, args.eval_num, seed=args.seed + 1),
        "straightness_reflow": module_straightness(student, args.eval_num, seed=args.seed + 1),
    }
    info = {"pairs": len(pairs), "train_steps": args.train_steps, "teacher_ckpt": str(args.ckpt)}
    files = [save_student_checkpoint(student, args.ckpt, out / "reflow.ckpt", info)]
    if args.distill_steps > 0:
        distilled = distill(
            student,
            pairs,
            steps=args.distill_nfe,
            premetric=args.premetric,
            max_steps=args.distill_steps,
            batch_size=args.batch_size,
        )
        metrics["straightness_distilled"] = module_straightness(distilled, args.eval_num, seed=args.seed + 1)
        files.append(save_student_checkpoint(distilled, args.ckpt, out / "distilled.ckpt", {**info, "distill": True}))
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    files.append(atomic_write(out / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2))))
    for f in files:
        print(Path(args.out) / Path(f).relative_to(out))
    print(json.dumps(metrics, indent=2))
    return metrics


def toy_demo(
    dataset: str = "moons",
    *,
    teacher_steps: int = 3000,
    num_pairs: int = 20_000,
    pair_steps: int = 100,
    reflow_steps: int = 2000,
    distill_steps: int = 1000,
    eval_num: int = 4000,
    seed: int = 0,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The README's 2-D experiment: teacher -> 2-rectified flow -> 1-step distilled student, on one CPU thread.

    Trains a 3x256 MLP rectified flow (CondOT path, independent coupling, Adam 1e-3, batch 256) from
    :math:`N(0, I)` to ``dataset``, samples ``num_pairs`` pairs with ``pair_steps`` Euler steps, rectifies
    (Adam 1e-3, ``reflow_steps`` steps from the teacher's weights), distils the rectified flow to one Euler step
    (L2 premetric, Adam 1e-4), and reports mean straightness (2000 draws, 100 Euler steps) and the sliced
    Wasserstein-2 distance (:func:`flowsci.metrics.sliced_wasserstein2`, 512 projections) of
    ``eval_num`` samples to ``eval_num`` fresh data points at 1, 2, 4 and 100 NFE.

    Args:
        dataset: A name in :data:`flowsci.data.TOY_DATASETS`.
        teacher_steps: Training steps of the teacher.
        num_pairs: Reflow pairs.
        pair_steps: Euler steps of the teacher per pair.
        reflow_steps: Training steps of the rectified student.
        distill_steps: Training steps of the distilled student.
        eval_num: Samples per evaluation.
        seed: Global seed.
        out: Folder for ``metrics.json`` (optional).

    Returns:
        The metrics (also printed as a table).

    """
    from flowsci.data import Toy2DDataModule, sample_toy
    from flowsci.metrics import sliced_wasserstein2
    from flowsci.nets import MLP

    torch.set_num_threads(1)
    pl.seed_everything(seed, verbose=False)
    t_start = time.perf_counter()
    teacher = FlowMatching(MLP(dim=2, hidden=256, depth=3), data_shape=[2])
    data = Toy2DDataModule(dataset, batch_size=256, seed=seed)
    trainer_kwargs = {**QUIET_TRAINER, "devices": 1}
    pl.Trainer(max_steps=teacher_steps, **trainer_kwargs).fit(teacher, datamodule=data)
    teacher.eval()
    pairs = generate_pairs(teacher, num_pairs, steps=pair_steps, solver="euler", seed=seed + 1)
    reflowed = rectify(teacher, pairs, max_steps=reflow_steps)
    distilled = distill(reflowed, pairs, steps=1, max_steps=distill_steps)
    reference = sample_toy(dataset, eval_num, seed=seed + 99)
    models = {"teacher (1-RF)": teacher, "reflow (2-RF)": reflowed, "distilled 1-step": distilled}
    metrics: dict[str, Any] = {"dataset": dataset, "seed": seed}
    rows = []
    for name, model in models.items():
        sw = {}
        for n in (1, 2, 4, 100):
            x = model.sample(eval_num, steps=n, solver="euler", seed=seed + 7, progress=False).x
            sw[n] = sliced_wasserstein2(x, reference)
        s = module_straightness(model, 2000, steps=100, seed=seed + 5)
        metrics[name] = {"straightness": s, **{f"sw2@{n}": v for n, v in sw.items()}}
        rows.append(f"{name:<18} {s:>12.4f} " + " ".join(f"{sw[n]:>9.4f}" for n in (1, 2, 4, 100)))
    metrics["seconds"] = round(time.perf_counter() - t_start, 1)
    print(f"2-D toy reflow demo ({dataset}, seed {seed}, {metrics['seconds']} s)")
    print(f"{'model':<18} {'straightness':>12} " + " ".join(f"{'SW2@' + str(n):>9}" for n in (1, 2, 4, 100)))
    print("\n".join(rows))
    if out is not None:
        atomic_write(Path(out) / "metrics.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2)))
    return metrics
