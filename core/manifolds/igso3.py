"""The isotropic Gaussian on SO(3), IGSO(3) (Nikolayev & Savyolov 1997; Leach et al. 2022).

Written here rather than taken from a library: no maintained package samples IGSO(3); e3nn and scipy only give
Haar draws. Protein frame flows (FrameDiff, FrameFlow, ReQFlow) use it as a training prior around data frames.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from flowsci.manifolds.base import ShapeLike, as_shape
from flowsci.manifolds.quaternion import axis_angle_to_quaternion

__all__ = ["igso3_angle_density", "sample_igso3"]

_GRID = 4096


def igso3_angle_density(omega: np.ndarray, sigma: float, l_max: int = 1000) -> np.ndarray:
    r"""Density of the rotation angle :math:`\omega \in [0, \pi]` of IGSO(3) with scale :math:`\sigma`.

    .. math::
        p(\omega) = \frac{1 - \cos\omega}{\pi} \sum_{l \ge 0} (2l + 1)\, e^{-l(l+1)\sigma^2/2}
        \frac{\sin((l + \tfrac12)\omega)}{\sin(\omega/2)}

    (the heat kernel on SO(3) at time :math:`\sigma^2/2`, times the Haar angle density). For small
    :math:`\sigma` the series converges slowly; there the closed small-angle limit is used instead,
    :math:`p(\omega) \approx \sqrt{2/\pi}\,\sigma^{-3}\,\omega^2 e^{-\omega^2/(2\sigma^2)}` (the norm of an
    :math:`N(0, \sigma^2 I_3)` rotation vector), which is accurate to <1e-3 for :math:`\sigma < 0.1`.

    Args:
        omega: Angles in radians.
        sigma: Scale :math:`\sigma > 0`.
        l_max: Truncation of the series.

    Returns:
        Unnormalised-to-grid density values (integrates to 1 over [0, π] up to truncation).
    """
    if sigma <= 0:
        raise ValueError(f"IGSO(3) needs sigma > 0, got {sigma}")
    omega = np.asarray(omega, dtype=np.float64)
    if sigma < 0.1:
        return math.sqrt(2 / math.pi) / sigma**3 * omega**2 * np.exp(-(omega**2) / (2 * sigma**2))
    ls = np.arange(l_max + 1, dtype=np.float64)[:, None]
    half = np.sin(omega / 2)
    safe = np.where(half < 1e-12, 1.0, half)
    ratio = np.where(half < 1e-12, 2 * ls + 1, np.sin((ls + 0.5) * omega) / safe)
    series = ((2 * ls + 1) * np.exp(-ls * (ls + 1) * sigma**2 / 2) * ratio).sum(0)
    return (1 - np.cos(omega)) / math.pi * series


@lru_cache(maxsize=16)
def _angle_cdf(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Tabulated angle CDF ``(grid, cdf)`` on [0, π] (cached per σ: training draws reuse it every step)."""
    grid = np.linspace(0.0, math.pi, _GRID)
    pdf = igso3_angle_density(grid, sigma)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    return grid, cdf / cdf[-1]


def sample_igso3(
    shape: ShapeLike,
    sigma: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Draw IGSO(3) rotations (around the identity) as unit quaternions ``[*shape, 4]``.

    The angle is drawn by inverting the tabulated CDF of :func:`igso3_angle_density`, the axis uniformly on S².
    Compose with data frames as ``q1 ⊗ q_noise`` (right multiplication, FrameFlow's convention).

    Args:
        shape: Batch shape.
        sigma: Scale (ReQFlow trains with 1.5).
        generator: Random generator.
        device: Device.
        dtype: Floating dtype (default float32).
    """
    shape = as_shape(shape)
    dtype = dtype or torch.get_default_dtype()
    grid, cdf = _angle_cdf(float(sigma))
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    angle = np.interp(u.cpu().numpy(), cdf, grid)
    axis = torch.randn((*shape, 3), generator=generator, device=device, dtype=torch.float64)
    q = axis_angle_to_quaternion(axis, torch.as_tensor(angle, device=axis.device))
    return q.to(dtype)
