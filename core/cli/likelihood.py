"""``flowsci likelihood``: per-sample log-likelihoods (nats and bits/dim) of data under a trained flow.

Reads ``--data`` (``.npy`` array ``[N, *D]``, or ``.npz`` with key ``x`` and an optional ``mask``), integrates the
instantaneous change of variables (:mod:`flowsci.likelihood`) and writes ``likelihood.npz`` (``log_prob``,
``bits_per_dim``, ``prior_log_prob``, ``delta``, ``dims``) and ``likelihood.csv`` into ``--out``, atomically
(:func:`flowsci.io.atomic_dir`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flowsci.errors import InputError

__all__ = ["load_data", "run"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsci likelihood",
        description="Per-sample log-likelihoods of data under a trained flow (instantaneous change of variables).",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint written by `flowsci fit` (or a model's shipped .pt/.ckpt)")
    src.add_argument("--run", help="a run folder (e.g. runs/): its newest last.ckpt is used")
    p.add_argument("--data", required=True, help="FILE.npy [N, *D] or FILE.npz with key x (and optional mask)")
    p.add_argument("--out", default="likelihood", help="output folder (refused if not empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--steps", type=int, default=50, help="solver steps on 1 -> 0 (default 50)")
    p.add_argument("--solver", default="rk4", help="euler, midpoint, heun, rk4 or dopri5 (Euclidean only)")
    p.add_argument("--estimator", default="exact", choices=["exact", "hutchinson"], help="divergence estimator")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes per evaluation (default 1)")
    p.add_argument("--probe", default="rademacher", choices=["rademacher", "gaussian"], help="probe distribution")
    p.add_argument("--seed", type=int, default=0, help="seed of the Hutchinson probes")
    p.add_argument("--batch-size", type=int, default=256, help="samples per solve (default 256)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--trust", action="store_true", help="allow a checkpoint to name classes outside flowsci")
    return p


def load_data(path: str | Path) -> tuple[Any, Any]:
    """``(x, mask)`` as numpy arrays from ``.npy`` or ``.npz`` (keys ``x`` or the only array, optional ``mask``).

    Raises:
        InputError: missing file, unknown suffix, no array, or non-finite values.

    """
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InputError("--data", f"{p} is not a file")
    try:
        if p.suffix == ".npy":
            x, mask = np.load(p, allow_pickle=False), None
        elif p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = [k for k in z.files if k != "mask"]
                key = "x" if "x" in z.files else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise InputError("--data", f"{p}: needs an array named x (found {z.files})")
                x, mask = z[key], (z["mask"] if "mask" in z.files else None)
        else:
            raise InputError("--data", f"{p}: expected a .npy or .npz file")
    except (OSError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError("--data", f"{p}: cannot read ({err})") from err
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise InputError("--data", f"{p}: x must be a finite float array [N, *D], got {x.dtype} {x.shape}")
    return x, mask


def run(argv: list[str]) -> None:
    """``flowsci likelihood`` on ``argv`` (without the verb)."""
    a = _parser().parse_args(argv)
    import numpy as np
    import torch

    from flowsci.checkpoint import load_module
    from flowsci.cli.sample import _device, find_checkpoint
    from flowsci.io import atomic_dir, atomic_write, atomic_write_text, check_out_dir

    if a.steps < 1 or a.batch_size < 1 or a.probes < 1:
        raise InputError("--steps/--batch-size/--probes", "must be >= 1")
    check_out_dir(a.out, overwrite=a.overwrite, source="--out")
    x_np, mask_np = load_data(a.data)
    device = _device(a.device)
    ckpt = Path(a.ckpt) if a.ckpt else find_checkpoint(a.run)
    module = load_module(ckpt, trust=a.trust).to(device)
    module.eval()
    if not hasattr(module, "log_prob"):
        raise InputError("--ckpt", f"{type(module).__name__} has no log_prob (not a FlowMatching model)")
    dtype = next(module.parameters()).dtype
    parts: dict[str, list[Any]] = {k: [] for k in ("log_prob", "bits_per_dim", "prior_log_prob", "delta", "dims")}
    nfe = 0
    for i in range(0, len(x_np), a.batch_size):
        xb = torch.as_tensor(x_np[i : i + a.batch_size], dtype=dtype, device=device)
        kw: dict[str, Any] = {}
        if mask_np is not None:
            kw["mask"] = torch.as_tensor(mask_np[i : i + a.batch_size], device=device).bool()
        res = module.log_prob(
            xb,
            steps=a.steps,
            method=a.solver,
            estimator=a.estimator,
            num_probes=a.probes,
            probe=a.probe,
            seed=a.seed,
            **kw,
        )
        nfe += res.nfe
        for k in parts:
            parts[k].append(getattr(res, k).detach().cpu().double().numpy())
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    with atomic_dir(a.out, overwrite=a.overwrite, source="--out") as tmp:
        atomic_write(tmp / "likelihood.npz", lambda p: np.savez(p, **arrays, nfe=nfe, seed=a.seed))
        rows = ["index,log_prob_nats,bits_per_dim,prior_log_prob,delta,dims"]
        rows += [
            f"{j},{arrays['log_prob'][j]:.6f},{arrays['bits_per_dim'][j]:.6f},{arrays['prior_log_prob'][j]:.6f},"
            f"{arrays['delta'][j]:.6f},{arrays['dims'][j]:.0f}"
            for j in range(len(arrays["log_prob"]))
        ]
        atomic_write_text(tmp / "likelihood.csv", "\n".join(rows) + "\n")
    bpd = float(arrays["bits_per_dim"].mean())
    print(f"checkpoint: {ckpt}")
    print(Path(a.out) / "likelihood.npz")
    print(Path(a.out) / "likelihood.csv")
    print(f"n={len(x_np)} mean NLL={-float(arrays['log_prob'].mean()):.4f} nats, {bpd:.4f} bits/dim, NFE={nfe}")
