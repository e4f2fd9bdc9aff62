"""Probability-path base types: :class:`PathSample` and :class:`ProbPath`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from flowsci.manifolds import Manifold

__all__ = ["PathSample", "ProbPath", "expand_t"]


@dataclass
class PathSample:
    """One draw from a conditional probability path.

    Attributes:
        x0: Source (prior) points, ``[B, *D]``.
        x1: Target (data) points, ``[B, *D]``.
        t: Times, ``[B]``.
        x_t: Points on the path at time ``t``, ``[B, *D]``.
        dx_t: The regression target: the conditional velocity :math:`\\dot x_t` expressed in the tangent
            representation of the path's manifold, ``[B, *T]``.

    """

    x0: Tensor
    x1: Tensor
    t: Tensor
    x_t: Tensor
    dx_t: Tensor


def expand_t(t: Tensor, like: Tensor) -> Tensor:
    """Reshape per-sample times ``[B]`` so they broadcast against ``like`` (``[B, *D]``)."""
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1))).to(like)


class ProbPath(ABC):
    """A conditional probability path :math:`p_t(x \\mid x_0, x_1)`; stateless, not an ``nn.Module``.

    Attributes:
        manifold: The space the path lives on (its tangent representation defines the target's shape).

    """

    manifold: Manifold

    @abstractmethod
    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        """Sample :math:`x_t` and its conditional velocity.

        Args:
            x0: Source points ``[B, *D]``.
            x1: Target points ``[B, *D]``.
            t: Times ``[B]`` in [0, 1].

        Returns:
            The :class:`PathSample`.

        """
