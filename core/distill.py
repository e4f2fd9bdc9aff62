r"""Distillation of a flow into a one- or few-step sampler on a stored coupling (InstaFlow, SlimFlow).

Given pairs :math:`(x_0, x_1 = \Phi(x_0))` from a teacher (:class:`~flowsci.reflow.ReflowPairs`), the student
:math:`v_\theta` is trained so that its :math:`K`-step Euler map :math:`\Phi_\theta^K` reproduces the coupling:

.. math:: \mathcal L(\theta) = E_{(x_0, x_1)}\; d\big(\Phi_\theta^K(x_0),\, x_1\big),

backpropagating through the :math:`K` steps (on a manifold, geodesic Euler steps). For :math:`K = 1` and the
CondOT path this is InstaFlow's distillation loss :math:`d(x_0 + v_\theta(x_0, 0), x_1)` (Liu et al., 2024).
The premetric :math:`d` is squared L2 (squared geodesic distance on a manifold), pseudo-Huber
:math:`\sqrt{\|a - b\|^2 + c^2} - c` (Song & Dhariwal, 2024; Lee et al., 2024), or a domain-supplied callable
(a perceptual or structural distance).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from flowsci.module import FlowMatching
from flowsci.paths import AffinePath
from flowsci.reflow import ReflowPairs, fit_on_pairs
from flowsci.solvers import solve_ode

__all__ = ["PREMETRICS", "Distillation", "Premetric", "distill", "make_premetric", "pseudo_huber", "squared_l2"]

Premetric = Callable[[Tensor, Tensor], Tensor]
"""A premetric ``d(x_hat, x1) -> [B]`` (non-negative, zero iff equal)."""

PREMETRICS = ("l2", "pseudo_huber")


def squared_l2(x: Tensor, y: Tensor) -> Tensor:
    r""":math:`\|x - y\|^2` per sample, summed over all non-batch axes: ``[B, *D] x [B, *D] -> [B]``."""
    return ((x - y) ** 2).flatten(1).sum(1)


def pseudo_huber(d2: Tensor, c: float) -> Tensor:
    r"""Pseudo-Huber of a squared distance: :math:`\sqrt{d^2 + c^2} - c` (quadratic near 0, linear far away)."""
    return torch.sqrt(d2 + c * c) - c


def make_premetric(
    name: str | Premetric = "l2", manifold: Any = None, dim: int | None = None, huber_c: float | None = None
) -> Premetric:
    r"""Build a premetric by name.

    Args:
        name: ``"l2"``, ``"pseudo_huber"`` or a callable ``d(x_hat, x1) -> [B]`` (returned unchanged).
        manifold: The state's manifold; squared distances are then :math:`\sum d_{\mathcal M}^2` over the set axes.
        dim: Data dimension per sample, for the default :math:`c = 0.00054\sqrt{\mathrm{dim}}` (Song & Dhariwal).
        huber_c: The pseudo-Huber constant :math:`c` (overrides the default).

    Returns:
        The premetric.

    """
    if callable(name):
        return name
    if name not in PREMETRICS:
        raise ValueError(f"premetric must be one of {PREMETRICS} or a callable, got {name!r}")

    def sq(x: Tensor, y: Tensor) -> Tensor:
        if manifold is None:
            return squared_l2(x, y)
        return (manifold.dist(x, y) ** 2).reshape(x.shape[0], -1).sum(1)

    if name == "l2":
        return sq
    c = huber_c if huber_c is not None else 0.00054 * math.sqrt(dim or 1)
    if c <= 0:
        raise ValueError(f"pseudo-Huber constant must be > 0, got {c}")
    return lambda x, y: pseudo_huber(sq(x, y), c)


class Distillation(pl.LightningModule):
    """Trains ``student`` so its ``steps``-step sampler maps each stored ``x0`` to its paired ``x1``.

    Batches come from :class:`~flowsci.reflow.ReflowDataModule` (``{"x1", "x0", **cond}``); the student's
    :meth:`~flowsci.module.FlowMatching.unpack_batch` and :meth:`~flowsci.module.FlowMatching.velocity` are
    used, so any domain module can be distilled. Afterwards sample with ``student.sample(n, steps=steps)``.

    Args:
        student: The flow to train (usually a copy of the rectified teacher; modified in place).
        steps: Euler steps :math:`K` of the distilled sampler.
        premetric: ``"l2"``, ``"pseudo_huber"`` or a callable ``d(x_hat, x1) -> [B]``.
        huber_c: Pseudo-Huber constant (default :math:`0.00054\\sqrt{d}`).
        lr: Adam learning rate.

    """

    def __init__(
        self,
        student: FlowMatching,
        steps: int = 1,
        premetric: str | Premetric = "l2",
        huber_c: float | None = None,
        lr: float = 1e-4,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        self.student, self.steps, self.lr = student, steps, lr
        self.manifold = None if isinstance(student.path, AffinePath) else student.path.manifold
        dim = math.prod(student.data_shape) if student.data_shape else None
        self.premetric = make_premetric(premetric, self.manifold, dim, huber_c)

    def forward(self, x0: Tensor, **cond: Any) -> Tensor:
        """The student's ``steps``-step Euler map :math:`\\Phi_\\theta^K(x_0)` (differentiable), ``[B, *D]``."""
        return solve_ode(self.student.velocity, x0, method="euler", steps=self.steps, manifold=self.manifold, **cond).x

    def loss(self, batch: Any) -> tuple[Tensor, int]:
        """Mean premetric between the student's map of the batch's ``x0`` and its ``x1``; and the batch size."""
        x1, cond, _ = self.student.unpack_batch(batch)
        cond = dict(cond)
        x0 = cond.pop("x0", None)
        if x0 is None:
            raise ValueError("Distillation needs paired batches with an 'x0' entry (flowsci.reflow.ReflowDataModule)")
        return self.premetric(self(x0, **cond), x1).mean(), int(x1.shape[0])

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Distillation loss of one training batch."""
        loss, bs = self.loss(batch)
        self.log("train/distill_loss", loss.detach(), prog_bar=True, batch_size=bs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Distillation loss on held-out pairs (``ReflowDataModule(val_fraction > 0)``)."""
        loss, bs = self.loss(batch)
        self.log("val/distill_loss", loss, prog_bar=True, sync_dist=True, batch_size=bs)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam on the student's parameters."""
        return torch.optim.Adam(self.student.parameters(), lr=self.lr)


def distill(
    teacher: FlowMatching,
    pairs: ReflowPairs,
    *,
    steps: int = 1,
    premetric: str | Premetric = "l2",
    huber_c: float | None = None,
    lr: float = 1e-4,
    max_steps: int = 1000,
    batch_size: int = 256,
    trainer_kwargs: dict[str, Any] | None = None,
) -> FlowMatching:
    """Distil a copy of ``teacher`` into a ``steps``-step sampler of the coupling ``pairs``.

    Args:
        teacher: Initialisation of the student (left unchanged).
        pairs: The coupling to reproduce.
        steps: Euler steps of the student.
        premetric: See :class:`Distillation`.
        huber_c: Pseudo-Huber constant.
        lr: Learning rate.
        max_steps: Optimisation steps.
        batch_size: Batch size.
        trainer_kwargs: Extra :class:`pytorch_lightning.Trainer` arguments.

    Returns:
        The distilled student (eval mode), with ``sample_steps = steps`` and ``sample_solver = "euler"``.

    """
    student = copy.deepcopy(teacher).train()
    task = Distillation(student, steps=steps, premetric=premetric, huber_c=huber_c, lr=lr)
    fit_on_pairs(task, pairs, max_steps, batch_size, trainer_kwargs)
    student.sample_steps, student.sample_solver = steps, "euler"
    return student.eval()
