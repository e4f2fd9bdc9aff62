"""Stochastic interpolants :math:`x_t = \\alpha_t x_1 + \\sigma_t x_0 + \\gamma_t z` (Albergo et al., 2023)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.paths.affine import AffinePath
from flowsci.paths.base import PathSample, expand_t
from flowsci.paths.schedulers import Scheduler

__all__ = ["StochasticInterpolant"]


class StochasticInterpolant(AffinePath):
    """Affine path plus a latent Gaussian bridge term :math:`\\gamma_t z`, :math:`z \\sim N(0, I)`.

    .. math::
        x_t = \\alpha_t x_1 + \\sigma_t x_0 + \\gamma_t z,\\qquad \\gamma_t = a\\sqrt{t(1-t)},\\qquad
        \\dot x_t = \\dot\\alpha_t x_1 + \\dot\\sigma_t x_0 + \\dot\\gamma_t z.

    Regressing a network on ``dx_t`` learns the interpolant's drift :math:`b(t, x) = E[\\dot x_t | x_t = x]`,
    whose ODE transports the marginals exactly like a flow-matching velocity.

    Args:
        scheduler: Base schedule for :math:`(\\alpha_t, \\sigma_t)` (default CondOT).
        gamma_scale: The amplitude :math:`a` of :math:`\\gamma_t`.

    """

    def __init__(self, scheduler: Scheduler | None = None, gamma_scale: float = 0.1) -> None:
        super().__init__(scheduler)
        if gamma_scale < 0:
            raise ValueError(f"gamma_scale must be >= 0, got {gamma_scale}")
        self.gamma_scale = float(gamma_scale)

    def gamma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return :math:`(\\gamma_t, \\dot\\gamma_t)`; :math:`\\dot\\gamma_t` is clipped near the end points."""
        tc = t.clamp(1e-4, 1 - 1e-4)
        g = self.gamma_scale * torch.sqrt(tc * (1 - tc))
        dg = self.gamma_scale * (1 - 2 * tc) / (2 * torch.sqrt(tc * (1 - tc)))
        return g, dg

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor, z: Tensor | None = None) -> PathSample:
        """Sample the interpolant; ``z`` defaults to fresh standard normal noise shaped like ``x1``."""
        base = super().sample(x0, x1, t)
        if z is None:
            z = torch.randn_like(x1)
        g, dg = self.gamma(expand_t(t, x1))
        return PathSample(x0=x0, x1=x1, t=t, x_t=base.x_t + g * z, dx_t=base.dx_t + dg * z)

    def __repr__(self) -> str:
        return f"StochasticInterpolant(gamma_scale={self.gamma_scale:g})"
