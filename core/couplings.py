"""Couplings: how noise draws :math:`x_0` are paired with data :math:`x_1` inside a minibatch."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["Coupling", "IndependentCoupling", "MinibatchOTCoupling", "ImmiscibleCoupling", "pair_cost"]


def pair_cost(x0: Tensor, x1: Tensor) -> Tensor:
    """Squared Euclidean cost matrix between flattened samples: ``[B0, B1]``."""
    return torch.cdist(x0.reshape(x0.shape[0], -1).double(), x1.reshape(x1.shape[0], -1).double()) ** 2


class Coupling(ABC):
    """Reorders ``(x0, x1)`` pairs of one minibatch; conditions stay attached to ``x1``.

    Attributes:
        candidates: Prior draws the caller supplies per data point (``x0`` holds ``candidates * B`` rows).

    """

    candidates: int = 1

    @abstractmethod
    def __call__(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Return the paired ``(x0, x1)``, both ``[B, *D]``."""


class IndependentCoupling(Coupling):
    """The product coupling :math:`q(x_0)\\,q(x_1)`: pairs are kept as drawn."""

    def __call__(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Return the pairs unchanged."""
        return x0, x1


class MinibatchOTCoupling(Coupling):
    """Minibatch optimal transport (Tong et al., 2023; Pooladian et al., 2023).

    Solves the exact assignment :math:`\\min_\\pi \\sum_i \\|x_0^{\\pi(i)} - x_1^i\\|^2` over permutations with
    scipy's Hungarian solver (for uniform weights the OT plan is a permutation, so this equals POT's ``ot.emd``
    without its sampling step) and permutes the noise, so data and conditions keep their order.
    """

    def __call__(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Permute ``x0`` to its optimal partners."""
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(f"OT coupling needs equal batch sizes, got {x0.shape[0]} and {x1.shape[0]}")
        cost = pair_cost(x0, x1).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        perm = np.empty_like(rows)
        perm[cols] = rows  # data i gets noise perm[i]
        return x0[torch.as_tensor(perm, device=x0.device)], x1


class ImmiscibleCoupling(Coupling):
    """Immiscible-diffusion noise assignment with KNN (Li et al., 2024, "Immiscible Diffusion").

    Each data point gets ``k`` candidate prior draws and keeps the nearest one, a cheap approximation to the
    batch assignment that scales linearly in the batch size. The caller passes ``k * B`` prior draws in ``x0``
    (``[k*B, *D]``; see :attr:`Coupling.candidates`), so any prior works, not only a standard Gaussian.

    Args:
        k: Candidates per data point.

    """

    def __init__(self, k: int = 4) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.candidates = k

    def __call__(self, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Choose, per data point, the nearest of its ``k`` prior candidates."""
        b = x1.shape[0]
        if x0.shape[0] != self.k * b:
            raise ValueError(f"ImmiscibleCoupling(k={self.k}) needs {self.k * b} prior draws, got {x0.shape[0]}")
        cand = x0.reshape(b, self.k, -1)
        d = ((cand - x1.reshape(b, 1, -1)) ** 2).sum(-1)
        best = d.argmin(dim=1)
        return cand[torch.arange(b, device=x1.device), best].reshape(x1.shape), x1
