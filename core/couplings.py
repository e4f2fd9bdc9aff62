"""Couplings: how noise draws :math:`x_0` are paired with data :math:`x_1` inside a minibatch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from flowsci.manifolds import Manifold

__all__ = ["Coupling", "IndependentCoupling", "MinibatchOTCoupling", "ImmiscibleCoupling", "pair_cost"]


def pair_cost(x0: Tensor, x1: Tensor, manifold: Manifold | None = None) -> Tensor:
    r"""Squared distance cost matrix ``[B0, B1]`` between samples ``[B, *S, d]``.

    Euclidean: squared norm of the flattened difference. On a manifold: :math:`\sum_s d_M(x_0^{i,s}, x_1^{j,s})^2`
    over the set axes ``S`` (so the torus wraps and SO(3) identifies :math:`q \equiv -q`).
    """
    if manifold is None:
        return torch.cdist(x0.reshape(x0.shape[0], -1).double(), x1.reshape(x1.shape[0], -1).double()) ** 2
    a = x0.double().unsqueeze(1)
    b = x1.double().unsqueeze(0)
    d = manifold.dist(*torch.broadcast_tensors(a, b))  # [B0, B1, *S]
    return (d**2).reshape(d.shape[0], d.shape[1], -1).sum(-1)


class Coupling(ABC):
    """Reorders ``(x0, x1)`` pairs of one minibatch; conditions stay attached to ``x1``.

    Attributes:
        candidates: Prior draws the caller supplies per data point (``x0`` holds ``candidates * B`` rows).
        group_key: Conditioning key whose values ``[B]`` split a batch into groups that are never paired across
            (e.g. class labels, so a class-conditional prior keeps its class); None: one group.

    """

    candidates: int = 1
    group_key: str | None = None

    @abstractmethod
    def __call__(
        self, x0: Tensor, x1: Tensor, manifold: Manifold | None = None, groups: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return the paired ``(x0, x1)``, both ``[B, *D]``; ``manifold`` supplies the geodesic distance and
        ``groups`` ``[B]`` the group of each data point (pairs stay inside a group).
        """


class IndependentCoupling(Coupling):
    """The product coupling :math:`q(x_0)\\,q(x_1)`: pairs are kept as drawn."""

    def __call__(
        self, x0: Tensor, x1: Tensor, manifold: Manifold | None = None, groups: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Return the pairs unchanged."""
        return x0, x1


class MinibatchOTCoupling(Coupling):
    """Minibatch optimal transport (Tong et al., 2023; Pooladian et al., 2023).

    Solves the exact assignment :math:`\\min_\\pi \\sum_i \\|x_0^{\\pi(i)} - x_1^i\\|^2` over permutations with
    scipy's Hungarian solver (for uniform weights the OT plan is a permutation, so this equals POT's ``ot.emd``
    without its sampling step) and permutes the noise, so data and conditions keep their order.

    With ``group_key`` the assignment is solved within each group of equal conditioning values (class-wise OT):
    the noise drawn for a class-conditional prior, or meant for one class under classifier-free guidance, is
    only ever paired with data of that class, so each class's noise marginal stays the prior.

    Args:
        group_key: Conditioning key holding the group of each data point (e.g. ``"y"``), or None.
    """

    def __init__(self, group_key: str | None = None) -> None:
        self.group_key = group_key

    def __call__(
        self, x0: Tensor, x1: Tensor, manifold: Manifold | None = None, groups: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Permute ``x0`` to its optimal partners (geodesic cost on a manifold), within ``groups`` when given."""
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(f"OT coupling needs equal batch sizes, got {x0.shape[0]} and {x1.shape[0]}")
        import ot

        cost = pair_cost(x0, x1, manifold).cpu().numpy()
        labels = np.zeros(x1.shape[0], dtype=np.int64) if groups is None else groups.reshape(-1).cpu().numpy()
        if labels.shape[0] != x1.shape[0]:
            raise ValueError(f"OT coupling got {labels.shape[0]} group labels for {x1.shape[0]} data points")
        perm = np.arange(x1.shape[0])  # data j gets noise perm[j]
        for g in np.unique(labels):
            idx = np.flatnonzero(labels == g)
            uniform = np.full(len(idx), 1.0 / len(idx))
            plan = ot.emd(uniform, uniform, np.ascontiguousarray(cost[np.ix_(idx, idx)]))
            perm[idx] = idx[plan.argmax(axis=0)]
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

    def __call__(
        self, x0: Tensor, x1: Tensor, manifold: Manifold | None = None, groups: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Choose, per data point, the nearest of its ``k`` prior candidates (geodesic distance on a manifold);
        candidates are never shared between data points, so ``groups`` needs no handling.
        """
        b = x1.shape[0]
        if x0.shape[0] != self.k * b:
            raise ValueError(f"ImmiscibleCoupling(k={self.k}) needs {self.k * b} prior draws, got {x0.shape[0]}")
        cand = x0.reshape(b, self.k, *x1.shape[1:])
        if manifold is None:
            d = ((cand - x1.unsqueeze(1)) ** 2).reshape(b, self.k, -1).sum(-1)
        else:
            d = (manifold.dist(cand, x1.unsqueeze(1).expand_as(cand)) ** 2).reshape(b, self.k, -1).sum(-1)
        best = d.argmin(dim=1)
        return cand[torch.arange(b, device=x1.device), best], x1
