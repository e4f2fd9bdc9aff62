"""Schedulers :math:`(\\alpha_t, \\sigma_t)` for affine paths :math:`x_t = \\alpha_t x_1 + \\sigma_t x_0`.

Conventions follow Lipman et al., "Flow Matching Guide and Code" (2024): :math:`t=0` is noise, :math:`t=1` data,
:math:`\\alpha_0 = \\sigma_1 = 0`, :math:`\\alpha_1 = \\sigma_0 = 1`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "SchedulerOutput",
    "Scheduler",
    "CondOTScheduler",
    "VPScheduler",
    "CosineScheduler",
    "PolynomialScheduler",
    "ShiftedScheduler",
]


@dataclass
class SchedulerOutput:
    """Scheduler values at times ``t`` (each shaped like ``t``)."""

    alpha_t: Tensor
    sigma_t: Tensor
    d_alpha_t: Tensor
    d_sigma_t: Tensor


class Scheduler(ABC):
    """Maps times ``t`` to :class:`SchedulerOutput`."""

    @abstractmethod
    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Evaluate the schedule at ``t`` (any shape)."""


class CondOTScheduler(Scheduler):
    """Conditional-OT / rectified-flow schedule: :math:`\\alpha_t = t,\\ \\sigma_t = 1 - t`."""

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Evaluate the schedule."""
        one = torch.ones_like(t)
        return SchedulerOutput(alpha_t=t, sigma_t=1 - t, d_alpha_t=one, d_sigma_t=-one)


class PolynomialScheduler(Scheduler):
    """Polynomial convex schedule :math:`\\alpha_t = t^n,\\ \\sigma_t = 1 - t^n`.

    Args:
        n: The exponent (``n=1`` is :class:`CondOTScheduler`).

    """

    def __init__(self, n: float = 2.0) -> None:
        if n <= 0:
            raise ValueError(f"PolynomialScheduler needs n > 0, got {n}")
        self.n = float(n)

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Evaluate the schedule."""
        a = t**self.n
        da = self.n * t ** (self.n - 1)
        return SchedulerOutput(alpha_t=a, sigma_t=1 - a, d_alpha_t=da, d_sigma_t=-da)


class VPScheduler(Scheduler):
    """Variance-preserving schedule of Song et al. (2021), time-reversed to t=1 data.

    .. math::
        T(s) = \\tfrac12 s^2 (\\beta_{max}-\\beta_{min}) + s\\,\\beta_{min},\\quad
        \\alpha_t = e^{-T(1-t)/2},\\quad \\sigma_t = \\sqrt{1 - \\alpha_t^2}.

    Args:
        beta_min: :math:`\\beta_{min}`.
        beta_max: :math:`\\beta_{max}`.

    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        self.beta_min = beta_min
        self.beta_max = beta_max

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Evaluate the schedule."""
        s = 1 - t
        big_t = 0.5 * s**2 * (self.beta_max - self.beta_min) + s * self.beta_min
        d_big_t = -(s * (self.beta_max - self.beta_min) + self.beta_min)  # d/dt of T(1 - t)
        alpha = torch.exp(-0.5 * big_t)
        d_alpha = -0.5 * d_big_t * alpha
        sigma = torch.sqrt((1 - alpha**2).clamp_min(1e-12))
        d_sigma = -alpha * d_alpha / sigma
        return SchedulerOutput(alpha_t=alpha, sigma_t=sigma, d_alpha_t=d_alpha, d_sigma_t=d_sigma)


class CosineScheduler(Scheduler):
    """Cosine schedule :math:`\\alpha_t = \\sin(\\pi t/2),\\ \\sigma_t = \\cos(\\pi t/2)` (Nichol & Dhariwal 2021)."""

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Evaluate the schedule."""
        h = 0.5 * math.pi
        return SchedulerOutput(
            alpha_t=torch.sin(h * t),
            sigma_t=torch.cos(h * t),
            d_alpha_t=h * torch.cos(h * t),
            d_sigma_t=-h * torch.sin(h * t),
        )


class ShiftedScheduler(Scheduler):
    """Resolution-shifted time of Esser et al. (SD3, 2024) applied to a base schedule.

    With noise-fraction :math:`s = 1 - t`, the shift maps :math:`s \\mapsto \\frac{m s}{1 + (m - 1) s}`, so the
    path spends more time at high noise for ``shift`` :math:`m > 1`. In this module's time:

    .. math:: \\tau(t) = 1 - \\frac{m (1-t)}{1 + (m-1)(1-t)},\\qquad
        \\alpha_t = \\alpha^{base}_{\\tau(t)},\\ \\sigma_t = \\sigma^{base}_{\\tau(t)}.

    Args:
        shift: The shift :math:`m` (``1`` leaves the base schedule unchanged).
        base: The base scheduler (default :class:`CondOTScheduler`).

    """

    def __init__(self, shift: float = 3.0, base: Scheduler | None = None) -> None:
        if shift <= 0:
            raise ValueError(f"ShiftedScheduler needs shift > 0, got {shift}")
        self.shift = float(shift)
        self.base = base if base is not None else CondOTScheduler()

    def __call__(self, t: Tensor) -> SchedulerOutput:
        """Evaluate the schedule."""
        m = self.shift
        s = 1 - t
        den = 1 + (m - 1) * s
        tau = 1 - m * s / den
        d_tau = m / den**2  # d tau / dt
        out = self.base(tau)
        return SchedulerOutput(
            alpha_t=out.alpha_t,
            sigma_t=out.sigma_t,
            d_alpha_t=out.d_alpha_t * d_tau,
            d_sigma_t=out.d_sigma_t * d_tau,
        )
