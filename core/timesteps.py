"""Training-time samplers :math:`t \\sim p(t)` on [0, 1]."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

__all__ = ["TimeSampler", "UniformTime", "LogitNormalTime", "UShapedTime"]


class TimeSampler(ABC):
    """Draws per-sample training times."""

    @abstractmethod
    def sample(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return ``n`` times, shape ``[n]``, in [0, 1]."""

    @abstractmethod
    def density(self, t: Tensor) -> Tensor:
        """Probability density of the sampler at ``t`` (used by tests and importance weighting)."""


class UniformTime(TimeSampler):
    """:math:`t \\sim U[t_{min}, t_{max}]`.

    Args:
        t_min: Lower end (e.g. 0.01 as ReQFlow).
        t_max: Upper end.

    """

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0) -> None:
        if not 0.0 <= t_min < t_max <= 1.0:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.t_min, self.t_max = t_min, t_max

    def sample(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``n`` uniform times."""
        u = torch.rand(n, device=device, generator=generator)
        return self.t_min + (self.t_max - self.t_min) * u

    def density(self, t: Tensor) -> Tensor:
        """Constant density on the interval."""
        inside = (t >= self.t_min) & (t <= self.t_max)
        return inside.to(t.dtype) / (self.t_max - self.t_min)


class LogitNormalTime(TimeSampler):
    """Logit-normal times of SD3 (Esser et al., 2024): :math:`t = \\mathrm{sigmoid}(m + s\\,u),\\ u \\sim N(0,1)`.

    .. math::
        p(t) = \\frac{1}{s\\sqrt{2\\pi}}\\frac{1}{t(1-t)}
        \\exp\\Big(-\\frac{(\\mathrm{logit}\\,t - m)^2}{2s^2}\\Big)

    Args:
        mean: Location :math:`m`.
        std: Scale :math:`s`.

    """

    def __init__(self, mean: float = 0.0, std: float = 1.0) -> None:
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.mean, self.std = mean, std

    def sample(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``n`` logit-normal times."""
        u = torch.randn(n, device=device, generator=generator)
        return torch.sigmoid(self.mean + self.std * u)

    def density(self, t: Tensor) -> Tensor:
        """Logit-normal density."""
        logit = torch.log(t) - torch.log1p(-t)
        z = (logit - self.mean) / self.std
        return torch.exp(-0.5 * z**2) / (self.std * (2 * torch.pi) ** 0.5 * t * (1 - t))


class UShapedTime(TimeSampler):
    """U-shaped times of Lee et al., "Improving the Training of Rectified Flows" (2024).

    .. math:: p(t) \\propto \\cosh(a(t - \\tfrac12)),\\quad t \\in [0, 1],

    sampled exactly by inverting the CDF :math:`F(t) = \\frac{\\sinh(a(t-\\frac12)) + \\sinh(a/2)}{2\\sinh(a/2)}`.

    Args:
        a: Concentration at the end points (the paper uses 4).

    """

    def __init__(self, a: float = 4.0) -> None:
        if a <= 0:
            raise ValueError(f"a must be > 0, got {a}")
        self.a = float(a)

    def sample(
        self, n: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draw ``n`` U-shaped times by inverse-CDF sampling."""
        u = torch.rand(n, device=device, generator=generator, dtype=torch.float64)
        half = torch.sinh(torch.tensor(self.a / 2, dtype=torch.float64))
        t = 0.5 + torch.asinh((2 * u - 1) * half) / self.a
        return t.float()

    def density(self, t: Tensor) -> Tensor:
        """Normalised density :math:`\\frac{a\\cosh(a(t-1/2))}{2\\sinh(a/2)}`."""
        return self.a * torch.cosh(self.a * (t - 0.5)) / (2 * torch.sinh(torch.tensor(self.a / 2)))
