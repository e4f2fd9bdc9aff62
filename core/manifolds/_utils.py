"""Small numerical helpers shared by the manifolds (dtype/device resolution, stable trigonometric ratios)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["nan_where_nonfinite", "resolve_dtype", "safe_norm", "sinc", "unit_or"]

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


def nan_where_nonfinite(out: Tensor, *inputs: Tensor, reduced: bool = False) -> Tensor:
    """Set to NaN every entry of ``out`` whose point or vector in ``inputs`` has a NaN or infinite coordinate.

    This is the manifolds' documented answer to non-finite input: NaN in every coordinate of the result (never
    a finite value computed from NaN or Inf, so the non-finite checks of training and sampling see it).

    Args:
        out: The result, ``[..., k]`` (or ``[...]`` if ``reduced``).
        inputs: The points and tangent vectors it was computed from, each ``[..., d_i]`` (broadcastable).
        reduced: ``out`` has no last axis (a distance or a norm).

    Returns:
        ``out`` with NaN where any input row is non-finite.
    """
    bad = None
    for t in inputs:
        row = ~torch.isfinite(t).all(-1, keepdim=not reduced)
        bad = row if bad is None else bad | row
    if bad is None:
        return out
    return torch.where(bad, torch.full_like(out, float("nan")), out)


def unit_or(x: Tensor, fallback: Tensor) -> Tensor:
    """``x / |x|`` over the last axis, without overflow or underflow; ``fallback`` where ``x`` is zero.

    The vector is first divided by its largest absolute coordinate, so huge (``1e30``) and tiny (``1e-30``)
    vectors normalise correctly in float32. Rows with a NaN or infinite coordinate become NaN.

    Args:
        x: Vectors ``[..., d]``.
        fallback: Unit vector(s) broadcastable to ``x``, used where ``x`` is exactly zero.
    """
    scale = x.abs().amax(-1, keepdim=True)
    nonzero = scale > 0
    y = x / torch.where(nonzero, scale, torch.ones_like(scale))
    unit = y / safe_norm(y)[0]
    return nan_where_nonfinite(torch.where(nonzero, unit, fallback.to(x).expand_as(x)), x)
