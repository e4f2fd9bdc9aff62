"""The ``flowsci`` console script: LightningCLI verbs plus ``sample``, ``reflow`` and ``bench``.

``flowsci fit|validate|test|predict --config ...`` is a plain :class:`~pytorch_lightning.cli.LightningCLI` in
subclass mode (model and data chosen by ``class_path``, as microsoft/torchgeo does), so every LightningCLI
convention works: ``--print_config``, dotted overrides, several ``--config`` files, ``--ckpt_path``. A
``--config`` that is not a file but names a shipped config (``toy2d/fm.yaml``) is read from the package.
Domain packages are imported only when a config names them.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module, resources
from pathlib import Path
from typing import Any

__all__ = ["main", "resolve_config", "load_module", "EXTRA_VERBS"]

EXTRA_VERBS = ("sample", "reflow", "bench")
DESCRIPTION = (
    "flowsci: flow matching for science. LightningCLI verbs fit|validate|test|predict take --config "
    "(a YAML file or a shipped one such as toy2d/fm.yaml). Extra verbs: `flowsci sample --ckpt ...` (native "
    "output files), `flowsci reflow --ckpt ...` (rectify a trained flow), `flowsci bench --suite quick` "
    "(leaderboard), `flowsci configs` (list shipped configs); each takes --help."
)


def resolve_config(value: str) -> str:
    """Return ``value`` if it is a file, else the path of the shipped config it names (``toy2d/fm.yaml``)."""
    if Path(value).exists():
        return value
    name = value.removeprefix("configs/")
    shipped = resources.files("flowsci.configs").joinpath(name)
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(f"config {value!r} is neither a file nor a shipped config (see `flowsci configs`)")


def _resolve_config_args(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + resolve_config(a.split("=", 1)[1])
    return out


def _lightning_cli(argv: list[str] | None) -> None:
    """Run LightningCLI on ``argv`` (``None``: on ``sys.argv``, after resolving shipped config names)."""
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}
        },
        args=None if argv is None else _resolve_config_args(argv),
        auto_configure_optimizers=False,
        parser_kwargs={"description": DESCRIPTION},
    )


def load_module(ckpt: str | Path) -> Any:
    """Load a LightningModule from a checkpoint written by ``flowsci fit`` (class and arguments are in it).

    Raises:
        FileNotFoundError: ``ckpt`` does not exist.
        ValueError: The checkpoint does not record how to rebuild its module.

    """
    import pytorch_lightning as pl
    import torch

    path = Path(ckpt)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    meta = torch.load(path, map_location="cpu", weights_only=False)
    hparams = meta.get("hyper_parameters", {})
    if "_instantiator" not in hparams or "_class_path" not in hparams:
        raise ValueError(
            f"{path}: this checkpoint was not written by `flowsci fit`, so it does not record its model class; "
            "load it in Python with YourModule.load_from_checkpoint(path, net=...)"
        )
    module_name, _, cls_name = hparams["_class_path"].rpartition(".")
    cls = getattr(import_module(module_name), cls_name)  # the class named by the user's own config
    if not issubclass(cls, pl.LightningModule):
        raise ValueError(f"{path}: {hparams['_class_path']} is not a LightningModule")
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=False)


def _parse_set(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k] = yaml.safe_load(v)
    return out


def _sample(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="flowsci sample", description="Sample a trained model to its native format.")
    p.add_argument("--ckpt", required=True, help="checkpoint written by `flowsci fit`")
    p.add_argument("--num", type=int, default=16, help="number of samples")
    p.add_argument("--steps", type=int, default=None, help="solver steps (default: the model's)")
    p.add_argument("--solver", default=None, help="euler | midpoint | heun | rk4 | dopri5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="where to sample: cpu, cuda, cuda:1, mps (default: cpu)")
    p.add_argument("--out", default="samples", help="output folder")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword for the model's sample() (YAML value), e.g. --set lengths=[60,80]",
    )
    p.add_argument(
        "--cond",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="conditioning tensor for the network (YAML list, one entry per sample), e.g. --cond y=[0,1]",
    )
    p.add_argument(
        "--cfg-scale",
        type=float,
        default=None,
        help="classifier-free guidance weight (needs a model trained with cond_dropout)",
    )
    a = p.parse_args(argv)
    import torch

    try:
        device = torch.device(a.device)
    except RuntimeError as err:
        raise ValueError(f"--device {a.device!r} is not a torch device (cpu, cuda, cuda:1, mps)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {a.device}: torch sees no CUDA device on this machine (use --device cpu)")
    module = load_module(a.ckpt).to(device)
    module.eval()
    extra = _parse_set(a.set)
    if a.cond:
        extra["cond"] = {k: torch.as_tensor(v, device=device) for k, v in _parse_set(a.cond).items()}
        bad = {k: len(v) for k, v in extra["cond"].items() if v.dim() == 0 or len(v) != a.num}
        if bad:
            raise ValueError(f"--cond values need one entry per sample (--num {a.num}); got lengths {bad}")
    if a.cfg_scale is not None:
        from flowsci.guidance import ClassifierFreeGuidance

        if getattr(module, "cond_dropout", None) is None:
            raise ValueError(f"{a.ckpt}: --cfg-scale needs a model trained with cond_dropout (see toy2d/cfg.yaml)")
        extra["guidance"] = ClassifierFreeGuidance(a.cfg_scale, module.cond_dropout)
    sol = module.sample(a.num, steps=a.steps, solver=a.solver, seed=a.seed, **extra)
    for f in module.write_samples(sol, a.out):
        print(f)
    print(f"NFE={sol.nfe} seed={a.seed}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``flowsci`` console script."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv else ""
    if verb == "sample":
        try:
            _sample(argv[1:])
        except (FileNotFoundError, ValueError) as err:  # bad input: one clear line, no traceback
            print(f"flowsci sample: error: {err}", file=sys.stderr)
            raise SystemExit(2) from err
    elif verb == "reflow":
        from flowsci.reflow import cli_main

        cli_main(argv[1:])
    elif verb == "bench":
        from flowsci.benchmarks.cli import main as bench_main

        raise SystemExit(bench_main(argv[1:]))
    elif verb == "configs":
        root = resources.files("flowsci.configs")
        for f in sorted(str(p.relative_to(root)) for p in Path(str(root)).rglob("*.yaml")):
            print(f)
    elif from_sys:
        sys.argv[1:] = _resolve_config_args(argv)
        _lightning_cli(None)
    else:
        _lightning_cli(argv)


if __name__ == "__main__":
    main()
