r"""Product manifolds :math:`\mathcal M_1 \times \dots \times \mathcal M_k` with concatenated coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowsci.manifolds._utils import safe_norm
from flowsci.manifolds.base import Manifold, ShapeLike

__all__ = ["Product"]


class Product(Manifold):
    r"""Cartesian product of manifolds; points and tangents are the factors' concatenated along the last axis.

    With the product metric every operation acts factor-wise (Chen & Lipman 2024; FlowMM):
    :math:`\exp_{(x_i)}((v_i)) = (\exp_{x_i} v_i)`, :math:`\log_{(x_i)}((y_i)) = (\log_{x_i} y_i)`,
    :math:`\langle u, v\rangle = \sum_i \langle u_i, v_i\rangle_{x_i}`, :math:`d^2 = \sum_i d_i^2`, and the
    geodesic is the product of the factors' geodesics at the same ``t``. A set of :math:`N` residue frames is
    ``Product([Euclidean(3), SO3()])`` applied to points ``[B, N, 7]`` and tangents ``[B, N, 6]`` (translation
    velocity then angular velocity); the set axis is a batch axis.

    Args:
        manifolds: The factors; each needs a fixed ``point_dim`` and ``tangent_dim``.
    """

    def __init__(self, manifolds: Sequence[Manifold]) -> None:
        if len(manifolds) == 0:
            raise ValueError("Product needs at least one factor manifold")
        for m in manifolds:
            if m.point_dim is None or m.tangent_dim is None:
                raise ValueError(f"Product factors need fixed dimensions; {m!r} has none (pass dim=...)")
        self.manifolds = list(manifolds)
        self.point_sizes = [int(m.point_dim) for m in self.manifolds]  # type: ignore[arg-type]
        self.tangent_sizes = [int(m.tangent_dim) for m in self.manifolds]  # type: ignore[arg-type]
        self.point_dim = sum(self.point_sizes)
        self.tangent_dim = sum(self.tangent_sizes)

    def split_point(self, x: Tensor) -> list[Tensor]:
        """Split points ``[..., point_dim]`` into the factors' points."""
        return list(torch.split(x, self.point_sizes, dim=-1))

    def split_tangent(self, v: Tensor) -> list[Tensor]:
        """Split tangents ``[..., tangent_dim]`` into the factors' tangents."""
        return list(torch.split(v, self.tangent_sizes, dim=-1))

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """Factor-wise exponential map."""
        parts = zip(self.manifolds, self.split_point(x), self.split_tangent(v), strict=True)
        return torch.cat([m.exp(xi, vi) for m, xi, vi in parts], dim=-1)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """Factor-wise logarithm map."""
        parts = zip(self.manifolds, self.split_point(x), self.split_point(y), strict=True)
        return torch.cat([m.log(xi, yi) for m, xi, yi in parts], dim=-1)

    def proju(self, x: Tensor, v: Tensor) -> Tensor:
        """Factor-wise tangent projection."""
        parts = zip(self.manifolds, self.split_point(x), self.split_tangent(v), strict=True)
        return torch.cat([m.proju(xi, vi) for m, xi, vi in parts], dim=-1)

    def projx(self, x: Tensor) -> Tensor:
        """Factor-wise point projection."""
        return torch.cat([m.projx(xi) for m, xi in zip(self.manifolds, self.split_point(x), strict=True)], dim=-1)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """Sum of the factors' metrics."""
        parts = zip(self.manifolds, self.split_point(x), self.split_tangent(u), self.split_tangent(v), strict=True)
        return torch.stack([m.inner(xi, ui, vi) for m, xi, ui, vi in parts], dim=-1).sum(-1)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`\sqrt{\sum_i d_i(x_i, y_i)^2}`."""
        parts = zip(self.manifolds, self.split_point(x), self.split_point(y), strict=True)
        d, sq = safe_norm(torch.stack([m.dist(xi, yi) for m, xi, yi in parts], dim=-1), keepdim=False)
        return torch.where(sq > 0, d, sq * 0)  # 0 at x = y, NaN (not 0) for NaN input

    def geodesic(self, x: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        """Product of the factors' geodesics at the same ``t``."""
        parts = zip(self.manifolds, self.split_point(x), self.split_point(y), strict=True)
        return torch.cat([m.geodesic(xi, yi, t) for m, xi, yi in parts], dim=-1)

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """Factor-wise transport."""
        parts = zip(self.manifolds, self.split_point(x), self.split_point(y), self.split_tangent(v), strict=True)
        return torch.cat([m.transport(xi, yi, vi) for m, xi, yi, vi in parts], dim=-1)

    def geodesic_with_velocity(self, x: Tensor, y: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Factor-wise geodesic points and velocities, concatenated."""
        parts = zip(self.manifolds, self.split_point(x), self.split_point(y), strict=True)
        points, velocities = zip(*[m.geodesic_with_velocity(xi, yi, t) for m, xi, yi in parts], strict=True)
        return torch.cat(points, dim=-1), torch.cat(velocities, dim=-1)

    def random_base(
        self,
        shape: ShapeLike,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Independent draws from each factor's prior, concatenated: ``[*shape, point_dim]``."""
        return torch.cat(
            [m.random_base(shape, generator=generator, device=device, dtype=dtype) for m in self.manifolds],
            dim=-1,
        )

    def origin(
        self, shape: ShapeLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Concatenated factor origins ``[*shape, point_dim]``."""
        return torch.cat([m.origin(shape, device=device, dtype=dtype) for m in self.manifolds], dim=-1)

    def __repr__(self) -> str:
        return f"Product([{', '.join(repr(m) for m in self.manifolds)}])"
