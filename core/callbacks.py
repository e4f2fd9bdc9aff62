"""Lightning callbacks: exponential moving average of weights."""

from __future__ import annotations

from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn

__all__ = ["EMA"]


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
