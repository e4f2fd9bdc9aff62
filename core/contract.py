"""The domain contract: what every generative module and every domain package of flowsci provides.

This module is the reference a new domain is written against (the documentation's "adding a domain" page is its
checklist). Two parts:

**A generative module** (:class:`GenerativeModule`, a ``pl.LightningModule``; :class:`GenerativeModel` is the
same contract as a :class:`typing.Protocol` for duck-typed checks). It provides

- ``compute_loss(batch, generator=None) -> (loss, logs)``: the training objective of one batch (scalar loss, a
  dict of detached values to log). The Lightning steps come from :class:`GenerativeModule`; training stops with
  :class:`~flowsci.errors.NonFiniteError` at the first non-finite loss.
- ``sample(num, *, steps=None, solver=None, seed=None, **options) -> Solution``: ``num`` samples as a
  :class:`~flowsci.solvers.Solution` (or a subclass) that carries the NFE, the seed and the field's native
  objects (``Structure``, ``Backbone``, ``AnnData``, ``trimesh.Trimesh``, ``xarray.Dataset``...). Domain options
  are keyword arguments with type hints: ``flowsci sample --set key=value`` is checked against them. Invalid
  ``num``/``steps``/``solver`` raise :class:`~flowsci.errors.InputError` (see :func:`check_sample_args`), and a
  non-finite sample raises instead of being returned.
- ``write_samples(solution, out_dir) -> list[Path]``: the native files (PDB, CIF, h5ad, OBJ, netCDF...) and at
  least one PNG figure of the samples, each written atomically (:func:`flowsci.io.atomic_write`).
- ``from_checkpoint(path, map_location="cpu")`` and ``pretrained(name)``: loading through the one safe loader
  (:func:`flowsci.checkpoint.load_module`; ``torch.load(weights_only=True)``, only trusted classes rebuilt). A
  module built in Python stores its network's class and ``net.config`` (a dict of plain constructor arguments,
  which every flowsci network keeps) so it can be rebuilt; a module built by ``flowsci fit`` stores its config.

**A domain package** ``flowsci.domains.<name>`` exports a :class:`Domain` under the entry-point group
``flowsci.domains`` (``[project.entry-points."flowsci.domains"]`` in ``pyproject.toml``; a third-party package
registers the same way) and its benchmark specs under ``flowsci.benchmarks`` (``name = "pkg.module:spec"``, a
function ``spec(suite) -> BenchmarkSpec``). The test ``tests/test_domain_contract.py`` is parametrised over every
registered domain: its tiny config fits through ``flowsci fit`` (also under DDP on two CPU processes), ``flowsci
sample`` writes native files and a figure, the checkpoint reloads and samples identically for a fixed seed,
``evaluate`` returns a table and the smoke benchmark runs.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import pytorch_lightning as pl
import torch
from torch import Tensor

from flowsci.errors import InputError, NonFiniteError

__all__ = [
    "Domain",
    "GenerativeModel",
    "GenerativeModule",
    "LossSteps",
    "check_sample_args",
    "check_sample_options",
    "outside_cli",
]

M = TypeVar("M", bound="GenerativeModule")


@runtime_checkable
class GenerativeModel(Protocol):
    """The generative-module contract as a protocol (see the module docstring for the meaning of each member)."""

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss of one batch and the values to log."""
        ...

    def sample(self, num: int, *, steps: int | None = None, seed: int | None = None, **options: Any) -> Any:
        """``num`` samples as a :class:`~flowsci.solvers.Solution` holding the field's native objects."""
        ...

    def write_samples(self, solution: Any, out_dir: str | os.PathLike) -> list[Path]:
        """Native files and a figure of ``solution`` in ``out_dir``; returns the written paths."""
        ...

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
        """A trained module, through the one safe loader."""
        ...


class LossSteps:
    """Lightning train/validation/test steps for any module with ``compute_loss`` and ``num_examples``.

    ``compute_loss(batch, generator=None) -> (loss, logs)`` gives the scalar loss and the values to log;
    validation and test draw their noise from generators seeded by the batch index, so the numbers are
    comparable across epochs. Training raises :class:`~flowsci.errors.NonFiniteError` at the first non-finite
    loss, naming the step, before the optimiser touches the weights (so no checkpoint is saved over the last good
    one with NaN weights).
    """

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One optimisation step's loss."""
        loss, logs = self.compute_loss(batch)
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteError(
                f"{type(self).__name__}: non-finite training loss ({float(loss.detach())}) at global step "
                f"{self.global_step}, batch {batch_idx}; training stopped (check the data for NaN/Inf, or lower "
                "the learning rate)"
            )
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=self.num_examples(batch))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Validation loss with noise seeded by the batch index."""
        return self._seeded_loss("val", batch, 10_000 + batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Test loss, as validation."""
        return self._seeded_loss("test", batch, 20_000 + batch_idx)

    def _seeded_loss(self, stage: str, batch: Any, seed: int) -> Tensor:
        gen = torch.Generator(device=self.device).manual_seed(seed)
        loss, logs = self.compute_loss(batch, generator=gen)
        self.log_dict(
            {f"{stage}/{k}": v for k, v in logs.items()},
            prog_bar=stage == "val",
            sync_dist=True,
            batch_size=self.num_examples(batch),
        )
        return loss


class GenerativeModule(LossSteps, pl.LightningModule):
    """Base class of every flowsci generative module (flow matching, Bayesian flows, domain models).

    Subclasses implement :meth:`compute_loss`, :meth:`sample` and :meth:`write_samples`, set ``self.net`` (the
    network, with a ``config`` dict of plain constructor arguments) and, if they are optimised by Lightning,
    ``self.optimizer_factory`` / ``self.lr_scheduler_factory``. This class gives them the Lightning steps, the
    optimiser set-up, checkpoint records for the safe loader, :meth:`from_checkpoint` and :meth:`pretrained`.
    """

    net: torch.nn.Module
    optimizer_factory: Callable[..., Any] | None = None
    lr_scheduler_factory: Callable[..., Any] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        """Deep copy (weight averaging copies the module) sharing the optimizer and scheduler factories.

        The factories are stateless configuration; under DDP the ones LightningCLI builds hold a lock that cannot
        be copied, so the EMA copy made at fit start would fail.
        """
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        shared = ("optimizer_factory", "lr_scheduler_factory")
        state = self.__getstate__()
        new.__setstate__({k: v if k in shared else copy.deepcopy(v, memo) for k, v in state.items()})
        return new

    # ----------------------------------------------------------------- the contract
    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar training loss of one batch and the values to log (implemented by every module)."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_loss")

    def sample(self, num: int, *, steps: int | None = None, seed: int | None = None, **options: Any) -> Any:
        """``num`` samples as a :class:`~flowsci.solvers.Solution` (implemented by every module)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample")

    def write_samples(self, solution: Any, out_dir: str | os.PathLike) -> list[Path]:
        """Native files and a PNG figure of ``solution`` in ``out_dir`` (implemented by every module)."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_samples")

    def num_examples(self, batch: Any) -> int:
        """Number of examples in a batch (for logging); override for batches that are not tensors or dicts."""
        if isinstance(batch, Tensor):
            return int(batch.shape[0])
        if isinstance(batch, Mapping):
            first = next(v for v in batch.values() if isinstance(v, Tensor))
            return int(first.shape[0])
        if isinstance(batch, (tuple, list)):
            return int(batch[0].shape[0])
        return int(getattr(batch, "num_graphs", 1))

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(cls: type[M], path: str | os.PathLike, map_location: str | torch.device = "cpu") -> M:
        """Load a trained module (``flowsci fit`` or ``Trainer.save_checkpoint``) through the one safe loader.

        Raises:
            flowsci.errors.CheckpointError: unreadable file, not a checkpoint of this class, or untrusted code.

        """
        from flowsci.checkpoint import load_module

        return load_module(path, expected=cls, map_location=map_location)

    @classmethod
    def pretrained(cls: type[M], name: str) -> M:
        """A trained model shipped in the ``sample_data`` folder next to the class's module (``<name>.ckpt``/``.pt``).

        Raises:
            FileNotFoundError: No such shipped model (the message lists the shipped ones).

        """
        import importlib

        folder = Path(inspect.getfile(importlib.import_module(cls.__module__))).parent / "sample_data"
        for suffix in (".ckpt", ".pt"):
            if (folder / f"{name}{suffix}").is_file():
                return cls.from_checkpoint(folder / f"{name}{suffix}")
        shipped = sorted(p.stem for p in folder.glob("*.ckpt")) + sorted(p.stem for p in folder.glob("*.pt"))
        raise FileNotFoundError(f"{cls.__name__}: no shipped model {name!r} in {folder}; shipped: {shipped}")

    def init_options(self) -> dict[str, Any]:
        """Plain constructor arguments (everything but the network and factories) to rebuild this module.

        Default: the plain values among ``self.hparams`` (modules built in Python store only those) that are
        parameters of this class's ``__init__``.
        """
        params = inspect.signature(type(self).__init__).parameters
        return {k: v for k, v in dict(self.hparams).items() if k in params and k != "net" and _is_plain(v)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the module class, its network class and ``config``, and :meth:`init_options` for the loader."""
        net = getattr(self, "net", None)
        record: dict[str, Any] = {"module": f"{type(self).__module__}.{type(self).__qualname__}"}
        if net is not None and getattr(net, "config", None) is not None:
            record["net"] = {"class": f"{type(net).__module__}.{type(net).__qualname__}", "config": dict(net.config)}
        record["init"] = self.init_options()
        checkpoint["flowsci"] = record

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        """Optimizer and optional scheduler from the factories given at construction.

        A scheduler with a ``monitor`` attribute (LightningCLI's ``ReduceLROnPlateau``) is stepped on that metric.
        """
        if self.optimizer_factory is None:
            raise RuntimeError(f"{type(self).__name__} has no optimizer factory (pass optimizer=...)")
        opt = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return opt
        sched = self.lr_scheduler_factory(opt)
        cfg: dict[str, Any] = {"scheduler": sched}
        if getattr(sched, "monitor", None):
            cfg["monitor"] = sched.monitor
        return {"optimizer": opt, "lr_scheduler": cfg}


def outside_cli() -> bool:
    """True unless LightningCLI is instantiating a module (then it stores the config, not the objects).

    Modules call ``self.save_hyperparameters(ignore=OBJECT_ARGS if outside_cli() else None)`` so checkpoints
    written from Python hold only plain values and load with ``weights_only=True``.
    """
    from pytorch_lightning.core.mixins.hparams_mixin import _given_hyperparameters

    return _given_hyperparameters.get() is None


def _is_plain(value: Any) -> bool:
    """True for JSON-like values (None, bool, int, float, str and lists/dicts of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def check_sample_args(num: Any, steps: Any = None, solver: Any = None, solvers: Sequence[str] | None = None) -> None:
    """Validate the common sampling arguments; raise :class:`~flowsci.errors.InputError` naming the argument.

    Args:
        num: Number of samples (an ``int`` >= 1).
        steps: Solver steps (``None`` for the model's default, else an ``int`` >= 1; ``0`` is an error, not "default").
        solver: Solver name (``None`` for the default, else one of ``solvers``).
        solvers: The solvers the module supports (``None``: any name is accepted here).

    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise InputError("num", f"must be a whole number >= 1, got {num!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError("steps", f"must be a whole number >= 1 (or omitted for the model's default), got {steps!r}")
    if solver is not None and solvers is not None and solver not in solvers:
        raise InputError("solver", f"unknown solver {solver!r}; this model supports {sorted(solvers)}")


def check_sample_options(sample: Callable[..., Any], options: Mapping[str, Any], source: str = "--set") -> None:
    """Check that every key of ``options`` is a keyword of ``sample`` (the module's ``sample`` method).

    Raises:
        InputError: An unknown key; the message lists the accepted ones.

    """
    params = inspect.signature(sample).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)} - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(source, f"unknown option(s) {unknown} for {sample.__qualname__}; accepted: {sorted(accepted)}")


@dataclass(frozen=True)
class Domain:
    """What a domain package registers under the entry-point group ``flowsci.domains``.

    Attributes:
        name: Registry name (``"proteins"``); configs live under ``<config_package>/<name>/``.
        module: The domain's main generative module class (a :class:`GenerativeModule` subclass).
        datamodule: Its ``pl.LightningDataModule`` class.
        evaluate: ``evaluate(samples, reference) -> table`` (a ``pandas.DataFrame``, or an object whose
            ``to_frame()`` gives one),
            ``samples`` being what ``module.sample`` returns (or its native objects).
        plot: ``plot(samples, reference, path, ...)`` writing a PNG of samples against real data.
        reference: ``reference(num) -> reference`` real held-out data shipped with the package (for the contract
            test's ``evaluate`` call and the docs' gallery).
        tiny_config: Shipped config that fits in seconds to minutes on a CPU (``"proteins/qflow_tiny.yaml"``).
        extra: The optional-dependency extra of the domain (``pip install 'flowsci[<extra>]'``).
        sample_args: ``flowsci sample`` arguments of a small, fast draw (e.g. ``("--num", "2", "--steps", "2")``).
        smoke_benchmark: Registered benchmark name whose smoke suite the contract test runs.
        modules: Other generative module classes of the domain (their checkpoints are trusted too).
        config_package: Importable package holding the configs (``flowsci.configs`` for built-in domains).
        fit_args: Extra ``flowsci fit`` arguments for the contract test (e.g. a smaller data subset).
        ddp_strategy: The Lightning strategy for multi-process training (``"ddp"``, or
            ``"ddp_find_unused_parameters_true"`` for a network with heads a task does not use).

    """

    name: str
    module: type
    datamodule: type
    evaluate: Callable[..., Any]
    plot: Callable[..., Any]
    reference: Callable[[int], Any]
    tiny_config: str
    extra: str
    sample_args: Sequence[str] = ("--num", "2", "--steps", "2")
    smoke_benchmark: str | None = None
    modules: Sequence[type] = field(default_factory=tuple)
    config_package: str = "flowsci.configs"
    fit_args: Sequence[str] = field(default_factory=tuple)
    ddp_strategy: str = "ddp"

    @property
    def package(self) -> str:
        """The top importable package of the domain (``flowsci.domains.proteins``)."""
        return self.module.__module__.rsplit(".", 1)[0]
