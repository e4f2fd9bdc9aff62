"""Lightning callbacks: EMA of weights with warm-up, a non-finite gradient stop, resumable checkpoints, sample writer.

:class:`EMA`
    Exponential moving average of the weights whose decay ramps up over the first updates, so a short run
    samples sensible weights rather than the initial ones.
:class:`StopOnNonFiniteGradient`
    Stops training with :class:`~flowsci.errors.NonFiniteError` at the first NaN/Inf gradient, naming the step
    and the parameter, before the optimiser changes a weight.
:class:`ResumableCheckpoint`
    Writes ``last.ckpt`` every ``every_n_steps`` steps and/or ``every_n_minutes`` minutes, whenever fitting ends
    (also when ``max_steps`` stops it mid-epoch) and on SIGINT (Ctrl-C) / SIGTERM (cluster preemption): the
    signal saves at the end of the current step, then training stops cleanly. ``Trainer.fit(...,
    ckpt_path=".../last.ckpt")`` resumes from the saved step. A checkpoint with non-finite weights is never
    written over the last good one.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback, ModelCheckpoint, WeightAveraging

from flowsci.errors import NonFiniteError

__all__ = ["EMA", "ResumableCheckpoint", "SampleWriter", "StopOnNonFiniteGradient", "ema_decay"]


def ema_decay(decay: float, num_averaged: int, warmup: bool = True) -> float:
    r"""Decay of the EMA update after ``num_averaged`` updates: :math:`\min(d, (1 + n) / (10 + n))` with warm-up.

    The warm-up (TensorFlow's ``ExponentialMovingAverage(num_updates=...)``, timm's and diffusers' ``EMAModel``)
    makes the average forget the initial weights quickly: after :math:`n` updates the weight left on the
    initial parameters is :math:`\prod_k d_k \approx 10 / (10 + n)` (e.g. 1 % after 1,000 steps) instead of
    :math:`d^n` (37 % for :math:`d = 0.999`).

    Args:
        decay: The final (maximum) decay :math:`d`.
        num_averaged: Updates made so far, :math:`n \ge 1` (the first update copies the weights).
        warmup: Ramp the decay up; ``False`` gives the constant ``decay``.

    """
    if not warmup:
        return decay
    return min(decay, (1.0 + num_averaged) / (10.0 + num_averaged))


class _WarmupEMAUpdate:
    """``multi_avg_fn`` of :class:`torch.optim.swa_utils.AveragedModel` with the decay of :func:`ema_decay`."""

    def __init__(self, decay: float, warmup: bool) -> None:
        self.decay, self.warmup = decay, warmup

    @torch.no_grad()
    def __call__(self, ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: Any) -> None:
        d = ema_decay(self.decay, int(num_averaged), self.warmup)
        floats = [(e, p) for e, p in zip(ema_params, params, strict=True) if e.is_floating_point() or e.is_complex()]
        if floats:
            torch._foreach_lerp_([e for e, _ in floats], [p for _, p in floats], 1.0 - d)
        for e, p in zip(ema_params, params, strict=True):
            if not (e.is_floating_point() or e.is_complex()):
                e.copy_(p)  # integer buffers (counters) follow the live model


class EMA(WeightAveraging):
    r"""Exponential moving average of the weights with warm-up, :math:`\bar\theta \gets d_n\bar\theta + (1-d_n)\theta`.

    The decay ramps up as :math:`d_n = \min(d, (1 + n) / (10 + n))` after :math:`n` updates (see
    :func:`ema_decay`), so after a short run the average is not dominated by the initial weights (with a
    constant :math:`d = 0.999`, 37 % of the average after 1,000 steps would still be the initial weights).
    Built on pytorch-lightning's :class:`~pytorch_lightning.callbacks.WeightAveraging`: the averaged weights are
    swapped in for validation and at the end of fitting (so sampling uses them), and their state (including
    the update count that drives the warm-up) is saved in and restored from checkpoints.

    Args:
        decay: Final EMA decay :math:`d`, in (0, 1).
        start_step: Optimizer step from which averaging starts (earlier steps copy the weights).
        every_n_steps: Update period in optimizer steps.
        warmup: Ramp the decay up over the first updates (``False``: constant ``decay``, the old behaviour).

    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, every_n_steps: int = 1, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if every_n_steps < 1:
            raise ValueError(f"EMA every_n_steps must be >= 1, got {every_n_steps}")
        super().__init__(multi_avg_fn=_WarmupEMAUpdate(decay, warmup), use_buffers=True)
        self.decay, self.start_step, self.every_n_steps, self.warmup = decay, start_step, every_n_steps, warmup

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """Average on optimizer steps past ``start_step``."""
        return step_idx is not None and step_idx >= self.start_step and step_idx % self.every_n_steps == 0

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Save the averaged weights as the model state, keeping the live module's non-tensor extra state.

        The averaged copy is made when fitting starts, so state a module sets later through
        ``get_extra_state`` (e.g. dataset statistics computed in ``on_fit_start``) would otherwise be saved
        with its initial value.
        """
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        current = checkpoint.get("current_model_state")
        if current is not None:
            for key, value in current.items():
                if key.endswith("_extra_state"):
                    checkpoint["state_dict"][key] = value


class StopOnNonFiniteGradient(Callback):
    """Stop training at the first NaN/Inf gradient, before the optimiser step, naming the step and the parameter.

    The check runs after gradient accumulation, the DDP all-reduce and AMP unscaling, and before gradient
    clipping and ``optimizer.step()``, so no weight is changed and nothing non-finite is saved: the exception
    ends ``Trainer.fit`` and :class:`ResumableCheckpoint` does not save on an exception, so the last good
    checkpoint stays. Under fp16 mixed precision a ``GradScaler`` is in charge (non-finite gradients are part of
    its loss-scale search and the step is skipped), so the check is left to it.

    Args:
        every_n_steps: Check every this many optimizer steps (1: every step; the check costs one reduction and
            one host synchronisation per step).

    Raises:
        flowsci.errors.NonFiniteError: At the first non-finite gradient.

    """

    def __init__(self, every_n_steps: int = 1) -> None:
        if every_n_steps < 1:
            raise ValueError(f"StopOnNonFiniteGradient every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """Raise :class:`~flowsci.errors.NonFiniteError` if any gradient holds NaN or Inf."""
        if trainer.global_step % self.every_n_steps:
            return
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            return
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return
        grads = [g for _, g in named]
        norms = torch._foreach_norm([g.detach() for g in grads])
        total = torch.stack([n.to(grads[0].device, torch.float32) for n in norms]).sum()
        if bool(torch.isfinite(total)):
            return
        bad = [n for n, g in named if not bool(torch.isfinite(g).all())]
        raise NonFiniteError(
            f"{type(pl_module).__name__}: non-finite gradient at global step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}) in {len(bad)} parameter(s), first {bad[0] if bad else '?'}; training "
            "stopped before the optimiser step, the last saved checkpoint is kept (check the data for NaN/Inf, "
            "or lower the learning rate)"
        )


def _rank_zero_print(trainer: pl.Trainer, message: str) -> None:
    if trainer.is_global_zero:
        print(message, file=sys.stderr, flush=True)


class ResumableCheckpoint(Callback):
    """Write ``last.ckpt`` on a step and/or time interval, when fitting ends and on SIGINT/SIGTERM.

    ``Trainer.fit(model, data, ckpt_path=callback.last_path)`` resumes from the saved step (optimizer, EMA,
    loop counters included). The file is written to a temporary sibling and renamed, so an interrupted save
    never leaves a truncated ``last.ckpt``; a checkpoint whose weights are not all finite is not written (the
    previous one stays). Nothing is saved when fitting ends with an exception (a non-finite loss or gradient,
    a crash): the last good checkpoint is kept and its path printed.

    Signals: during ``fit`` the first SIGINT (Ctrl-C) or SIGTERM (the preemption signal of clusters) requests a
    save at the end of the current training step; the checkpoint is written, its path printed, and training stops
    cleanly (``Trainer.fit`` returns; :attr:`interrupted_by` holds the signal number so a command line can exit
    with ``128 + signum``). A second SIGINT aborts at once, as before. The previous handlers are restored when
    fitting ends. Under DDP the request is shared by all ranks at each step, so they save at the same step.

    Next to a ``ModelCheckpoint(save_last=True)`` writing to the same folder, both write the same ``last.ckpt``
    (the newest wins; ``ModelCheckpoint`` is told the file is its own, so it does not write ``last-v1.ckpt``).

    Args:
        dirpath: Folder of the checkpoint; by default the one ``ModelCheckpoint`` uses
            (``<save_dir>/<name>/<version>/checkpoints`` of the first logger, else ``<default_root_dir>/checkpoints``).
        filename: File name in ``dirpath``.
        every_n_steps: Save every this many optimizer steps (``None``: no step interval).
        every_n_minutes: Save when this many minutes have passed since the last save (``None``: no time interval).
        on_signal: Save and stop on SIGINT/SIGTERM.
        verbose: Print the path of every save (the final and the signal saves are always printed).

    Attributes:
        last_path: Path of the last checkpoint written (``None`` before the first).
        last_step: Its global step.
        interrupted_by: The signal number that stopped fitting, or ``None``.

    """

    def __init__(
        self,
        dirpath: str | os.PathLike | None = None,
        filename: str = "last.ckpt",
        every_n_steps: int | None = None,
        every_n_minutes: float | None = 10.0,
        on_signal: bool = True,
        verbose: bool = False,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"ResumableCheckpoint every_n_steps must be >= 1 or None, got {every_n_steps}")
        if every_n_minutes is not None and not every_n_minutes > 0:
            raise ValueError(f"ResumableCheckpoint every_n_minutes must be > 0 or None, got {every_n_minutes}")
        if not filename.endswith(".ckpt") or os.sep in filename:
            raise ValueError(f"ResumableCheckpoint filename must be a file name ending in .ckpt, got {filename!r}")
        self.dirpath = None if dirpath is None else Path(dirpath)
        self.filename = filename
        self.every_n_steps = every_n_steps
        self.every_n_minutes = every_n_minutes
        self.on_signal = on_signal
        self.verbose = verbose
        self.last_path: Path | None = None
        self.last_step: int | None = None
        self.interrupted_by: int | None = None
        self._requested: int | None = None
        self._previous_handlers: dict[int, Any] = {}
        self._last_time = time.monotonic()

    # ----------------------------------------------------------------- where
    def _resolve_dir(self, trainer: pl.Trainer) -> Path:
        if self.dirpath is not None:
            return self.dirpath
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath:
                return Path(cb.dirpath)
        if trainer.loggers:
            logger = trainer.loggers[0]
            save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            path = os.path.join(save_dir, str(logger.name), version, "checkpoints")
        else:
            path = os.path.join(trainer.default_root_dir, "checkpoints")
        return Path(trainer.strategy.broadcast(path))

    # ----------------------------------------------------------------- saving
    def save(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str) -> Path | None:
        """Write the checkpoint now (on every rank, as ``Trainer.save_checkpoint`` must be); returns its path.

        Returns ``None`` and keeps the previous checkpoint if a weight is not finite.
        """
        path = self._resolve_dir(trainer) / self.filename
        finite = all(bool(torch.isfinite(t).all()) for t in pl_module.state_dict().values() if t.is_floating_point())
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            _rank_zero_print(
                trainer,
                f"flowsci: not saving a checkpoint at step {trainer.global_step}: the weights are not finite; "
                f"the last good checkpoint is {self.last_path or 'none'}",
            )
            return None
        tmp = path.with_name(f".{path.name}.tmp")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp, weights_only=False)  # full state: resumable
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("ResumableCheckpoint.save")
        self.last_path, self.last_step = path, trainer.global_step
        self._last_time = time.monotonic()
        for cb in trainer.checkpoint_callbacks:  # a ModelCheckpoint(save_last=True) writing the same file owns it
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath and Path(cb.dirpath) == path.parent:
                if cb.format_checkpoint_name({}, cb.CHECKPOINT_NAME_LAST) == str(path):
                    cb.last_model_path = str(path)
        if self.verbose or reason != "interval":
            _rank_zero_print(trainer, f"flowsci: checkpoint ({reason}, step {trainer.global_step}) saved to {path}")
        return path

    # ----------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Reset the state of a previous fit."""
        self._requested = None
        self.interrupted_by = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clock and install the signal handlers.

        Installed here, after Lightning's own SIGTERM handler (which would only stop at the end of the epoch and
        then raise ``SystemExit``), and in its place; Lightning restores its handlers when fitting ends.
        """
        self._last_time = time.monotonic()
        if self.on_signal and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle_signal)

    def _handle_signal(self, signum: int, frame: Any) -> None:
        if self._requested is not None and signum == signal.SIGINT:  # a second Ctrl-C aborts at once
            self._restore_handlers()
            raise KeyboardInterrupt
        self._requested = signum
        name = signal.Signals(signum).name
        print(
            f"flowsci: {name} received; saving a checkpoint at the end of this step, then stopping"
            + (" (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""),
            file=sys.stderr,
            flush=True,
        )

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Save on a pending signal (then stop) or when a step or time interval is due."""
        step = trainer.global_step
        requested = self._requested is not None
        if trainer.world_size > 1:
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if requested:
            signum = self._requested if self._requested is not None else int(signal.SIGTERM)
            if self.last_step != step:
                self.save(trainer, pl_module, f"{signal.Signals(signum).name.lower()}")
            self.interrupted_by = signum
            trainer.should_stop = True
            return
        if step == self.last_step or step == 0:
            return
        due = self.every_n_steps is not None and step % self.every_n_steps == 0
        if not due and self.every_n_minutes is not None:
            due = time.monotonic() - self._last_time >= 60.0 * self.every_n_minutes
            if trainer.world_size > 1:
                due = bool(trainer.strategy.broadcast(due, src=0))
        if due:
            self.save(trainer, pl_module, "interval")

    def _stopping(self, trainer: pl.Trainer) -> bool:
        max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
        if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
            return True
        if max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs:
            return True
        return bool(trainer.should_stop)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save when this epoch is the last (``max_steps`` or ``max_epochs`` reached, or stopping requested).

        Saved here, before ``on_train_end`` (where :class:`EMA` copies the averaged weights into the model), so the
        checkpoint holds both the live and the averaged weights and resuming continues exactly.
        """
        if self._stopping(trainer) and self.last_step != trainer.global_step:
            self.save(trainer, pl_module, "end of fit")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save if the final step is not saved yet (e.g. a stop requested after ``on_train_epoch_end``)."""
        if self.last_step != trainer.global_step and trainer.global_step > 0:
            self.save(trainer, pl_module, "end of fit")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Restore the signal handlers."""
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Save nothing (the weights may be bad); restore the handlers and name the last good checkpoint."""
        self._restore_handlers()
        if self.last_path is not None:
            _rank_zero_print(
                trainer,
                f"flowsci: fit stopped by {type(exception).__name__}; the last good checkpoint is {self.last_path} "
                f"(step {self.last_step})",
            )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Restore the signal handlers (also after an exception)."""
        self._restore_handlers()


class SampleWriter(BasePredictionWriter):
    """Writes what ``flowsci predict`` generates in the module's native format (``write_samples``).

    Each predict batch returns a :class:`~flowsci.solvers.Solution`; at the end of the epoch the samples of all
    batches are concatenated and handed to ``pl_module.write_samples`` (one folder per rank under DDP).

    Args:
        out_dir: Output folder.
    """

    def __init__(self, out_dir: str = "predictions") -> None:
        super().__init__(write_interval="epoch")
        self.out_dir = out_dir

    def write_on_epoch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        """Concatenate the predicted solutions and write them."""
        from flowsci.solvers import Solution

        sols = [p for p in predictions if isinstance(p, Solution)]
        if not sols:
            raise TypeError(f"SampleWriter expects predict_step to return Solution objects, got {type(predictions[0])}")
        merged = Solution(x=torch.cat([s.x for s in sols]), nfe=sols[0].nfe, times=sols[0].times, seed=sols[0].seed)
        out = Path(self.out_dir) if trainer.world_size == 1 else Path(self.out_dir) / f"rank{trainer.global_rank}"
        pl_module.write_samples(merged, out)
