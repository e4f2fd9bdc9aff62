"""Lightning callbacks: exponential moving average of weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["EMA", "SampleWriter"]


class EMA(WeightAveraging):
    """Exponential moving average of the weights, :math:`\\bar\\theta \\leftarrow d\\,\\bar\\theta + (1-d)\\,\\theta`.

    Built on pytorch-lightning's :class:`~pytorch_lightning.callbacks.WeightAveraging`: the averaged weights are
    swapped in for validation and at the end of fitting (so sampling uses them), and their state is saved in and
    restored from checkpoints.

    Args:
        decay: EMA decay :math:`d`.
        start_step: Optimizer step from which averaging starts (earlier steps copy the weights).
        every_n_steps: Update period in optimizer steps.

    """

    def __init__(self, decay: float = 0.999, start_step: int = 0, every_n_steps: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.decay, self.start_step, self.every_n_steps = decay, start_step, every_n_steps

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
