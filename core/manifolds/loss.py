"""Riemannian flow-matching regression loss in the tangent representation, with masks."""

from __future__ import annotations

from torch import Tensor

from flowsci.manifolds.base import Manifold
from flowsci.manifolds.masks import masked_mean

__all__ = ["riemannian_mse"]


def riemannian_mse(manifold: Manifold, x_t: Tensor, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Per-sample Riemannian flow-matching loss (Chen & Lipman, ICLR 2024).

    .. math::
        \mathcal L = \frac{1}{|\{i: m_i\}|\, d_T}
        \sum_{i: m_i} \| v_\theta(x_t)_i - u_t(x_t \mid x_1)_i \|^2_{x_{t,i}}

    with :math:`d_T` = ``manifold.tangent_dim``, so the Euclidean case equals the element-wise mean squared
    error. The prediction is first projected onto the tangent space at ``x_t``.

    Args:
        manifold: Manifold of one entry.
        x_t: Points ``[B, *S, point_dim]``.
        pred: Predicted velocities ``[B, *S, tangent_dim]``.
        target: Target velocities (``PathSample.dx_t``) ``[B, *S, tangent_dim]``.
        mask: Optional boolean mask ``[B, *S]`` of real entries (padded entries contribute nothing).

    Returns:
        Loss per sample ``[B]``.
    """
    diff = manifold.proju(x_t, pred) - target
    sq = manifold.inner(x_t, diff, diff) / diff.shape[-1]
    if sq.dim() == 1:
        return sq if mask is None else sq * mask.to(sq)
    return masked_mean(sq, mask, dim=tuple(range(1, sq.dim())))
