"""Affine Gaussian paths :math:`x_t = \\alpha_t x_1 + \\sigma_t x_0` and parametrisation conversions."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from torch import Tensor

from flowsci.paths.base import PathSample, ProbPath, expand_t
from flowsci.paths.schedulers import CondOTScheduler, Scheduler

if TYPE_CHECKING:
    from flowsci.manifolds import Manifold

__all__ = ["AffinePath", "CondOTPath"]


class AffinePath(ProbPath):
    """Affine conditional path on Euclidean space.

    .. math::
        x_t = \\alpha_t x_1 + \\sigma_t x_0,\\qquad
        \\dot x_t = \\dot\\alpha_t x_1 + \\dot\\sigma_t x_0.

    The target ``dx_t`` is the conditional velocity. Conversions between the velocity :math:`v`, the data
    prediction :math:`\\hat x_1` and the noise prediction :math:`\\hat\\epsilon = \\hat x_0` use
    :math:`x_t = \\alpha_t x_1 + \\sigma_t x_0` and :math:`v = \\dot\\alpha_t x_1 + \\dot\\sigma_t x_0`.

    Args:
        scheduler: The :class:`~flowsci.paths.schedulers.Scheduler` giving :math:`(\\alpha_t, \\sigma_t)`.

    """

    def __init__(self, scheduler: Scheduler | None = None) -> None:
        self.scheduler = scheduler if scheduler is not None else CondOTScheduler()

    @cached_property
    def manifold(self) -> Manifold:  # type: ignore[override]
        """Flat Euclidean space (tangent = point representation)."""
        from flowsci.manifolds import Euclidean

        return Euclidean()

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        """Sample :math:`x_t` and :math:`\\dot x_t` for ``x0, x1`` of shape ``[B, *D]`` and ``t`` of shape ``[B]``."""
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        s = self.scheduler(expand_t(t, x1))
        x_t = s.alpha_t * x1 + s.sigma_t * x0
        dx_t = s.d_alpha_t * x1 + s.d_sigma_t * x0
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=dx_t)

    def _coeffs(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        s = self.scheduler(expand_t(t, x_t))
        return s.alpha_t, s.sigma_t, s.d_alpha_t, s.d_sigma_t

    def x1_to_velocity(self, x1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Velocity from a data prediction: :math:`v = \\dot\\sigma_t/\\sigma_t\\, x_t + (\\dot\\alpha_t -
        \\alpha_t\\dot\\sigma_t/\\sigma_t)\\, x_1` (undefined at :math:`\\sigma_t = 0`).
        """
        a, s, da, ds = self._coeffs(x_t, t)
        return ds / s * x_t + (da - a * ds / s) * x1

    def velocity_to_x1(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Data prediction from a velocity: :math:`x_1 = (\\sigma_t v - \\dot\\sigma_t x_t)/(\\sigma_t\\dot\\alpha_t
        - \\dot\\sigma_t\\alpha_t)`.
        """
        a, s, da, ds = self._coeffs(x_t, t)
        return (s * velocity - ds * x_t) / (s * da - ds * a)

    def epsilon_to_velocity(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Velocity from a noise prediction: :math:`v = \\dot\\alpha_t/\\alpha_t\\, x_t + (\\dot\\sigma_t -
        \\sigma_t\\dot\\alpha_t/\\alpha_t)\\,\\epsilon` (undefined at :math:`\\alpha_t = 0`).
        """
        a, s, da, ds = self._coeffs(x_t, t)
        return da / a * x_t + (ds - s * da / a) * epsilon

    def velocity_to_epsilon(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Noise prediction from a velocity: :math:`\\epsilon = (\\alpha_t v - \\dot\\alpha_t x_t)/(\\alpha_t
        \\dot\\sigma_t - \\dot\\alpha_t\\sigma_t)`.
        """
        a, s, da, ds = self._coeffs(x_t, t)
        return (a * velocity - da * x_t) / (a * ds - da * s)

    def x1_to_epsilon(self, x1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Noise from data prediction: :math:`\\epsilon = (x_t - \\alpha_t x_1)/\\sigma_t`."""
        a, s, _, _ = self._coeffs(x_t, t)
        return (x_t - a * x1) / s

    def epsilon_to_x1(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Data from noise prediction: :math:`x_1 = (x_t - \\sigma_t\\epsilon)/\\alpha_t`."""
        a, s, _, _ = self._coeffs(x_t, t)
        return (x_t - s * epsilon) / a


class CondOTPath(AffinePath):
    """The rectified-flow / conditional-OT path :math:`x_t = t x_1 + (1-t) x_0`, target :math:`x_1 - x_0`."""

    def __init__(self) -> None:
        super().__init__(CondOTScheduler())
