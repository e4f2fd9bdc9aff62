"""``flowsci fit|validate|test|predict``: a LightningCLI in subclass mode (model and data chosen by ``class_path``).

Every LightningCLI convention works (``--print_config``, dotted overrides, several ``--config`` files,
``--ckpt_path``), as microsoft/torchgeo does it. A ``--config`` that is not a file but names a shipped config
(``toy2d/fm.yaml``, or ``<domain>/<file>.yaml`` of a registered plugin domain) is read from its package.

What flowsci adds: logs and checkpoints go under ``--trainer.default_root_dir`` (default ``runs``); every fit has
a :class:`~flowsci.callbacks.ResumableCheckpoint` (``--checkpoint.every_n_minutes``, ``--checkpoint.every_n_steps``)
that writes ``last.ckpt`` on an interval, when fitting ends (also mid-epoch at ``max_steps``) and on Ctrl-C or
SIGTERM (then the command exits with 128 + the signal number), and prints where it is; a
:class:`~flowsci.callbacks.StopOnNonFiniteGradient` stops at the first NaN/Inf gradient; ``validate``/``test``/
``predict`` refuse to run without ``--ckpt_path``.
"""

from __future__ import annotations

import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

from flowsci.errors import InputError

__all__ = ["resolve_config", "run", "shipped_configs"]

DEFAULT_ROOT = "runs"


def shipped_configs() -> list[str]:
    """Names of the configs shipped with flowsci (``toy2d/fm.yaml``, ``proteins/qflow_tiny.yaml``...)."""
    root = resources.files("flowsci.configs")
    return sorted(str(p.relative_to(str(root))) for p in Path(str(root)).rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """Return ``value`` if it is a file, else the path of the shipped config it names (``toy2d/fm.yaml``).

    Raises:
        InputError: neither a file nor a shipped config (of flowsci or a registered domain).
    """
    if Path(value).exists():
        return value
    name = value.removeprefix("configs/")
    shipped = resources.files("flowsci.configs").joinpath(name)
    if shipped.is_file():
        return str(shipped)
    domain, _, _ = name.partition("/")
    from flowsci.registry import domain_names, load_domain

    if domain in domain_names():
        plugin = resources.files(load_domain(domain).config_package).joinpath(name)
        if plugin.is_file():
            return str(plugin)
    raise InputError("--config", f"{value!r} is neither a file nor a shipped config (see `flowsci configs`)")


def _resolve_config_args(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--config" and i + 1 < len(out):
            out[i + 1] = resolve_config(out[i + 1])
        elif a.startswith("--config="):
            out[i] = "--config=" + resolve_config(a.split("=", 1)[1])
    return out


def _quiet_console() -> None:
    """Silence foreign deprecation warnings and advertisements that are not about the user's run."""
    warnings.filterwarnings("ignore", message=r".*_pytree.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter.*")


def run(argv: list[str], from_sys: bool = False) -> None:
    """Run the LightningCLI verb ``argv[0]`` with the remaining arguments (``from_sys``: they are ``sys.argv``).

    Raises:
        InputError: an unknown shipped config, or ``validate``/``test``/``predict`` without ``--ckpt_path``.
    """
    verb = argv[0]
    rest = argv[1:]
    if verb in ("validate", "test", "predict") and not any(a.startswith("--ckpt_path") for a in rest):
        if not any(a in ("-h", "--help", "--print_config") or a.startswith("--print_config") for a in rest):
            raise InputError(
                "--ckpt_path",
                f"`flowsci {verb}` would evaluate an untrained model; pass --ckpt_path <run>/checkpoints/last.ckpt",
            )
    args = [verb, *_resolve_config_args(rest)]
    _quiet_console()
    if from_sys:  # DDP starts the other ranks by re-running sys.argv: give them resolved config paths
        sys.argv[1:] = args
        _lightning_cli(None)
    else:
        _lightning_cli(args)


_LIGHTNING_CKPT_ALIASES = {"last", "best", "hpc", "registry"}


def _lightning_cli(args: list[str] | None) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

    from flowsci.callbacks import ResumableCheckpoint, StopOnNonFiniteGradient
    from flowsci.checkpoint import allowed_globals, read_checkpoint

    class FlowsciCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
            parser.add_lightning_class_args(StopOnNonFiniteGradient, "nonfinite")

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            trainer = cfg["trainer"]
            root = trainer.get("default_root_dir") or DEFAULT_ROOT
            logger = trainer.get("logger")
            if _is_default_logger(logger):
                logger["init_args"]["save_dir"] = root

        def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
            kwargs = super()._prepare_subcommand_kwargs(subcommand)
            if "weights_only" in kwargs:
                kwargs["weights_only"] = True  # flowsci never unpickles a checkpoint it is handed
            return kwargs

        def _parse_ckpt_path(self) -> None:
            # --ckpt_path is read like every flowsci checkpoint: weights_only with the allow-list, and a missing,
            # truncated or foreign file fails with one error naming it before Lightning reads it.
            sub = self.config.get("subcommand")
            ckpt = self.config[sub].get("ckpt_path") if sub else None
            if ckpt is not None and str(ckpt) not in _LIGHTNING_CKPT_ALIASES:
                read_checkpoint(ckpt)
            with allowed_globals():
                super()._parse_ckpt_path()

        def _run_subcommand(self, subcommand: str) -> None:
            with allowed_globals():
                super()._run_subcommand(subcommand)

        def before_fit(self) -> None:
            _epoch_label_without_limit(self.trainer)

        def after_fit(self) -> None:
            cb = next((c for c in self.trainer.callbacks if isinstance(c, ResumableCheckpoint)), None)
            if cb is not None and cb.interrupted_by is not None:
                raise SystemExit(128 + int(cb.interrupted_by))

    FlowsciCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": DEFAULT_ROOT,
            "logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": DEFAULT_ROOT}},
        },
        args=args,
        auto_configure_optimizers=False,
    )


def _epoch_label_without_limit(trainer: Any) -> None:
    """Show "Epoch N" instead of Lightning's "Epoch N/-2" when only ``max_steps`` bounds the fit."""
    import types

    bar = trainer.progress_bar_callback
    if bar is None or not hasattr(bar, "_get_train_description") or (trainer.max_epochs or -1) > 0:
        return

    def describe(self: Any, current_epoch: int) -> str:
        return f"Epoch {current_epoch} (step limit {self.trainer.max_steps})"

    bar._get_train_description = types.MethodType(describe, bar)


def _is_default_logger(logger: Any) -> bool:
    try:
        return logger["class_path"].endswith("CSVLogger") and logger["init_args"]["save_dir"] == DEFAULT_ROOT
    except (KeyError, TypeError):
        return False
