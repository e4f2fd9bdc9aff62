"""Small numerical helpers shared by the manifolds (dtype/device resolution, stable trigonometric ratios)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["resolve_dtype", "safe_norm", "sinc"]

#: Below this angle sin(x)/x uses its Taylor series (truncation error < 1e-16 in float64).
SERIES_THRESHOLD = 1e-2


def resolve_dtype(dtype: torch.dtype | None) -> torch.dtype:
    """Return ``dtype`` or the default floating dtype."""
    return dtype if dtype is not None else torch.get_default_dtype()


def safe_norm(v: Tensor, keepdim: bool = True) -> tuple[Tensor, Tensor]:
    """Euclidean norm over the last axis with a finite gradient at zero.

    Args:
        v: Vectors ``[..., d]``.
        keepdim: Keep the reduced axis.

    Returns:
        ``(norm, sq_norm)``; ``norm`` is exact except where it is 0, where it is replaced by 1 (use
        ``sq_norm`` to detect that case), so ``sqrt`` never sees 0 and backward stays finite.
    """
    sq = (v * v).sum(-1, keepdim=keepdim)
    return torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt(), sq


def sinc(theta: Tensor) -> Tensor:
    r""":math:`\sin\theta/\theta`, with the series :math:`1 - \theta^2/6 + \theta^4/120` for small angles."""
    small = theta.abs() < SERIES_THRESHOLD
    th = torch.where(small, torch.ones_like(theta), theta)
    t2 = theta * theta
    return torch.where(small, 1 - t2 / 6 * (1 - t2 / 20), torch.sin(th) / th)
