"""``flowsci sample``: load a trained model through the safe loader and write its samples in native formats.

The output folder is filled atomically (:func:`flowsci.io.atomic_dir`): a failing run leaves an earlier folder as
it was, and a non-empty ``--out`` is refused unless ``--overwrite`` is given. ``--run DIR`` takes the newest
``last.ckpt`` under a run folder, so nobody has to guess ``version_N``.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any

from flowsci.errors import InputError

__all__ = ["find_checkpoint", "parse_set", "run"]

DEFAULT_NUM = 16


def parse_set(items: list[str], flag: str = "--set") -> dict[str, Any]:
    """``["key=value", ...]`` -> dict with YAML-parsed values (``--set lengths=[60,80]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(flag, f"expects key=value, got {item!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise InputError(flag, f"{key}: {value!r} is not a valid YAML value ({err.__class__.__name__})") from err
    return out


def find_checkpoint(run_dir: str | Path) -> Path:
    """The newest ``last.ckpt`` below ``run_dir`` (by modification time).

    Raises:
        InputError: the folder does not exist or holds no ``last.ckpt``.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise InputError("--run", f"{root} is not a folder")
    found = sorted(root.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise InputError("--run", f"no last.ckpt below {root} (did the fit save a checkpoint?)")
    return found[-1]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsci sample",
        description="Sample a trained model and write its native files (PDB, CIF, h5ad, OBJ, netCDF...) and a "
        "figure. `flowsci sample --ckpt CKPT --help` also lists the model's --set options.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="checkpoint written by `flowsci fit` (or a model's shipped .pt/.ckpt)")
    src.add_argument("--run", help="a run folder (e.g. runs/): its newest last.ckpt is used")
    p.add_argument(
        "--num", type=int, default=None, help=f"number of samples (default: the model's, else {DEFAULT_NUM})"
    )
    p.add_argument("--steps", type=int, default=None, help="solver steps, >= 1 (default: the model's)")
    p.add_argument("--solver", default=None, help="solver or sampler (default: the model's; checked per model)")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draw (recorded with the samples)")
    p.add_argument("--device", default="cpu", help="where to sample: cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--out", default="samples", help="output folder (refused if not empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--trust", action="store_true", help="allow a checkpoint to name classes outside flowsci")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword of the model's sample() (YAML value), e.g. --set lengths=[60,80]",
    )
    p.add_argument(
        "--cond",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="conditioning tensor for the network (YAML list, one entry per sample), e.g. --cond y=[0,1]",
    )
    p.add_argument("--cfg-scale", type=float, default=None, help="classifier-free guidance weight")
    return p


def _device(name: str) -> Any:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise InputError("--device", f"{name!r} is not a torch device (cpu, cuda, cuda:1, mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"{name}: torch sees no CUDA device on this machine (use --device cpu)")
    return device


def _options_help(module: Any) -> str:
    lines = [f"{type(module).__name__}.sample options (--set KEY=VALUE):"]
    for name, prm in inspect.signature(module.sample).parameters.items():
        if name in ("self", "num") or prm.kind in (prm.VAR_KEYWORD, prm.VAR_POSITIONAL):
            continue
        ann = prm.annotation if isinstance(prm.annotation, str) else getattr(prm.annotation, "__name__", "")
        default = "" if prm.default is inspect.Parameter.empty else f" = {prm.default!r}"
        lines.append(f"  {name}: {ann}{default}")
    return "\n".join(lines)


def run(argv: list[str]) -> None:
    """``flowsci sample`` on ``argv`` (without the verb)."""
    import torch

    from flowsci.checkpoint import load_module
    from flowsci.contract import check_sample_args, check_sample_options
    from flowsci.io import atomic_dir, check_out_dir

    wants_help = any(a in ("-h", "--help") for a in argv)
    p = _parser()
    if wants_help and "--ckpt" in argv:  # the model's own options, after loading it
        ckpt = argv[argv.index("--ckpt") + 1]
        p.print_help()
        print("\n" + _options_help(load_module(ckpt)))
        return
    a = p.parse_args(argv)
    check_out_dir(a.out, overwrite=a.overwrite, source="--out")  # fail before a long sampling run
    device = _device(a.device)
    ckpt = Path(a.ckpt) if a.ckpt else find_checkpoint(a.run)
    module = load_module(ckpt, trust=a.trust).to(device)
    module.eval()
    extra = parse_set(a.set)
    check_sample_options(module.sample, extra)
    params = inspect.signature(module.sample).parameters
    num = a.num
    if num is None and params.get("num") is not None and params["num"].default is inspect.Parameter.empty:
        num = DEFAULT_NUM
    check_sample_args(1 if num is None else num, a.steps, None)
    if a.cond:
        n = DEFAULT_NUM if num is None else num
        extra["cond"] = {k: torch.as_tensor(v, device=device) for k, v in parse_set(a.cond, "--cond").items()}
        bad = {k: len(v) for k, v in extra["cond"].items() if v.dim() == 0 or len(v) != n}
        if bad:
            raise InputError("--cond", f"values need one entry per sample (--num {n}); got lengths {bad}")
    if a.cfg_scale is not None:
        from flowsci.guidance import ClassifierFreeGuidance

        if getattr(module, "cond_dropout", None) is None:
            raise InputError("--cfg-scale", f"{ckpt}: needs a model trained with cond_dropout (see toy2d/cfg.yaml)")
        extra["guidance"] = ClassifierFreeGuidance(a.cfg_scale, module.cond_dropout)
    kwargs: dict[str, Any] = {"steps": a.steps, "seed": a.seed, **extra}
    if a.solver is not None:
        kwargs["solver"] = a.solver
    with atomic_dir(a.out, overwrite=a.overwrite, source="--out") as tmp:
        sol = module.sample(num, **kwargs) if num is not None else module.sample(**kwargs)
        written = module.write_samples(sol, tmp)
    out = Path(a.out)
    print(f"checkpoint: {ckpt}")
    for f in written:
        print(out / Path(f).relative_to(tmp))
    print(f"NFE={sol.nfe} seed={a.seed}")
