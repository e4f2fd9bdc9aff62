r"""Flat Euclidean space :math:`\mathbb R^d`."""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.manifolds._utils import nan_where_nonfinite, resolve_dtype
from flowsci.manifolds.base import Manifold, ShapeLike, as_shape

__all__ = ["Euclidean"]


class Euclidean(Manifold):
    r"""Euclidean space :math:`\mathbb R^d` with :math:`\exp_x(v) = x + v` and :math:`\log_x(y) = y - x`.

    The geodesic path is the straight line :math:`x_t = (1-t)x_0 + t x_1` with velocity :math:`x_1 - x_0`
    (rectified flow / conditional OT, Lipman et al. 2023; Liu et al. 2023). The prior is
    :math:`\mathcal N(0, I)`.

    Args:
        dim: Size of the last axis; ``None`` accepts any size (then :meth:`random_base` and
            :meth:`origin` need a known size and raise).
    """

    def __init__(self, dim: int | None = None) -> None:
        if dim is not None and dim < 1:
            raise ValueError(f"Euclidean needs dim >= 1, got {dim}")
        self.dim = dim
        self.point_dim = dim
        self.tangent_dim = dim

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """:math:`x + v`."""
        return nan_where_nonfinite(x + v, x, v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """:math:`y - x`."""
        return nan_where_nonfinite(y - x, x, y)

    def proju(self, x: Tensor, v: Tensor) -> Tensor:
        """Identity (every vector is tangent)."""
        return v

    def projx(self, x: Tensor) -> Tensor:
        """Identity (every finite vector is a point; one with a NaN or Inf coordinate becomes NaN)."""
        return nan_where_nonfinite(x, x)

    def geodesic(self, x: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        """:math:`(1 - t) x + t y`."""
        return nan_where_nonfinite(torch.lerp(x, y, torch.as_tensor(t).to(x)), x, y)

    def geodesic_with_velocity(self, x: Tensor, y: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r""":math:`((1-t)x + ty,\ y - x)`."""
        return self.geodesic(x, y, t), self.log(x, y)

    def _need_dim(self) -> int:
        if self.dim is None:
            raise ValueError("Euclidean(dim=None) cannot create points; construct it with an explicit dim")
        return self.dim

    def random_base(
        self,
        shape: ShapeLike,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Standard normal samples ``[*shape, dim]``."""
        size = (*as_shape(shape), self._need_dim())
        return torch.randn(size, generator=generator, device=device, dtype=resolve_dtype(dtype))

    def origin(
        self, shape: ShapeLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zeros ``[*shape, dim]``."""
        return torch.zeros((*as_shape(shape), self._need_dim()), device=device, dtype=resolve_dtype(dtype))

    def __repr__(self) -> str:
        return f"Euclidean(dim={self.dim})"
