"""Optimisers with the learning-rate schedule inside them (no Lightning scheduler config needed)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["WarmupCosineAdamW"]


class WarmupCosineAdamW(torch.optim.AdamW):
    """AdamW whose learning rate follows a linear warm-up, then a cosine decay to ``final * lr`` at step ``total``.

    The schedule is read from AdamW's own step count (stored in its ``state_dict``), so a run resumed from a
    checkpoint continues the schedule where it stopped. In a LightningCLI config::

        optimizer:
          class_path: flowsci.optim.WarmupCosineAdamW
          init_args: {lr: 1.0e-3, total: 6000, warmup: 50}

    Args:
        params: Parameters or parameter groups.
        lr: Peak learning rate.
        total: Optimiser steps of the whole schedule; the rate stays at ``final * lr`` after it.
        warmup: Steps of the linear warm-up from ``lr / warmup`` to ``lr``.
        final: Final rate as a fraction of the peak.
        weight_decay: AdamW's decoupled weight decay.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        total: int,
        warmup: int = 50,
        final: float = 0.05,
        weight_decay: float = 0.0,
    ) -> None:
        if total < 1 or warmup < 0 or not 0.0 <= final <= 1.0:
            raise ValueError(
                f"WarmupCosineAdamW needs total >= 1, warmup >= 0, 0 <= final <= 1 (got {total}, {warmup}, {final})"
            )
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.peak, self.total, self.warmup, self.final = float(lr), int(total), int(warmup), float(final)

    def rate(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        frac = min(1.0, (step - self.warmup) / max(self.total - self.warmup, 1))
        return self.peak * (self.final + (1.0 - self.final) * 0.5 * (1.0 + math.cos(math.pi * frac)))

    def steps_done(self) -> int:
        """Optimiser steps taken so far (AdamW's per-parameter ``step``, restored with the state dict)."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if state and "step" in state:
                    return int(state["step"])
        return 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        rate = self.rate(self.steps_done())
        for group in self.param_groups:
            group["lr"] = rate
        return super().step(closure)
