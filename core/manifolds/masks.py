"""Masks for variable-size sets (residues, atoms) so padded entries never leak into statistics or losses.

Dense batches carry a boolean ``mask`` of shape ``[B, N]`` (``True`` = real entry) next to points
``[B, N, d]``; graph batches (torch-geometric style) carry a ``batch`` index vector ``[M]`` next to points
``[M, d]``. Every helper here treats padded entries as absent: they receive no weight in sums and means, and
outputs put a fixed value (zero, or the manifold's :meth:`~flowsci.manifolds.Manifold.origin`) there.
"""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.manifolds.base import Manifold

__all__ = [
    "center_of_mass",
    "fill_padding",
    "mask_tangent",
    "masked_mean",
    "remove_com",
    "scatter_center_of_mass",
    "scatter_remove_com",
]


def _feature_mask(mask: Tensor, x: Tensor) -> Tensor:
    """Check ``mask`` ``[*S]`` against ``x`` ``[*S, d]`` and return it as a boolean ``[*S, 1]``."""
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match points {tuple(x.shape)} without last axis")
    return mask.to(device=x.device, dtype=torch.bool).unsqueeze(-1)


def masked_mean(x: Tensor, mask: Tensor | None, dim: int | tuple[int, ...]) -> Tensor:
    r"""Mean of ``x`` over ``dim`` counting only entries where ``mask`` is true.

    .. math:: \bar x = \frac{\sum_i m_i x_i}{\max(1, \sum_i m_i)}

    Args:
        x: Values ``[*S, ...]``.
        mask: Boolean or 0/1 mask ``[*S]`` (trailing axes of ``x`` are broadcast), or ``None`` for a
            plain mean.
        dim: Axis or axes of ``x`` to reduce (must be axes of ``mask``).

    Returns:
        ``x`` reduced over ``dim``; an all-padded slice gives 0.
    """
    if mask is None:
        return x.mean(dim=dim)
    m = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))
    m = m.expand_as(x)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp_min(1)


def center_of_mass(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Masked centre of mass of point sets.

    Args:
        x: Points ``[B, N, d]``.
        mask: Boolean mask ``[B, N]`` of real entries, or ``None`` (all real).

    Returns:
        Centres ``[B, 1, d]`` (keeps the set axis so it broadcasts against ``x``).
    """
    if mask is None:
        return x.mean(dim=-2, keepdim=True)
    m = _feature_mask(mask, x).to(x.dtype)
    return (x * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp_min(1)


def remove_com(x: Tensor, mask: Tensor | None = None) -> Tensor:
    r"""Subtract the masked centre of mass; padded entries become exactly zero.

    .. math:: x_i \leftarrow m_i \Big(x_i - \frac{\sum_j m_j x_j}{\sum_j m_j}\Big)

    Args:
        x: Points ``[B, N, d]``.
        mask: Boolean mask ``[B, N]``, or ``None``.

    Returns:
        Centred points ``[B, N, d]`` whose real entries have zero mean.
    """
    centred = x - center_of_mass(x, mask)
    if mask is None:
        return centred
    return torch.where(_feature_mask(mask, x), centred, torch.zeros_like(centred))


def fill_padding(manifold: Manifold, x: Tensor, mask: Tensor | None) -> Tensor:
    """Replace padded points by the manifold's origin so every entry is a valid point.

    Args:
        manifold: The manifold of one entry.
        x: Points ``[*S, point_dim]``.
        mask: Boolean mask ``[*S]``, or ``None`` (returns ``x``).

    Returns:
        Points ``[*S, point_dim]``.
    """
    if mask is None:
        return x
    fill = manifold.origin(x.shape[:-1], device=x.device, dtype=x.dtype)
    return torch.where(_feature_mask(mask, x), x, fill)


def mask_tangent(v: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the tangent vectors (velocities) of padded entries, so integration leaves them in place.

    Args:
        v: Tangent vectors ``[*S, tangent_dim]``.
        mask: Boolean mask ``[*S]``, or ``None`` (returns ``v``).

    Returns:
        ``[*S, tangent_dim]``.
    """
    if mask is None:
        return v
    return torch.where(_feature_mask(mask, v), v, torch.zeros_like(v))


def scatter_center_of_mass(x: Tensor, batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """Per-graph centre of mass for a flat (torch-geometric style) batch.

    Args:
        x: Points of all graphs ``[M, d]``.
        batch: Graph index of each point ``[M]`` (int64, values in ``[0, num_graphs)``).
        num_graphs: Number of graphs (default ``batch.max() + 1``).

    Returns:
        Centres ``[num_graphs, d]`` (zero for empty graphs).
    """
    n = int(batch.max()) + 1 if num_graphs is None else num_graphs
    sums = torch.zeros(n, x.shape[-1], device=x.device, dtype=x.dtype).index_add_(0, batch, x)
    counts = torch.zeros(n, device=x.device, dtype=x.dtype).index_add_(0, batch, torch.ones_like(x[:, 0]))
    return sums / counts.clamp_min(1).unsqueeze(-1)


def scatter_remove_com(x: Tensor, batch: Tensor, num_graphs: int | None = None) -> Tensor:
    """Subtract each graph's centre of mass from its points, ``[M, d]``."""
    return x - scatter_center_of_mass(x, batch, num_graphs)[batch]
