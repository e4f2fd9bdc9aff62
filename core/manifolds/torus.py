r"""Flat torus :math:`\mathbb T^d = \mathbb R^d / \mathbb Z^d` with period 1 (fractional coordinates)."""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.manifolds._utils import nan_where_nonfinite, resolve_dtype
from flowsci.manifolds.base import Manifold, ShapeLike, as_shape

__all__ = ["FlatTorus", "wrap", "wrap_diff"]


def wrap(x: Tensor) -> Tensor:
    r"""Canonical representative in :math:`[0, 1)`: :math:`x - \lfloor x \rfloor`.

    Guards the float round-off case where a tiny negative ``x`` gives exactly ``1.0``.
    """
    y = x - torch.floor(x)
    return torch.where(y >= 1, y - 1, y)


def wrap_diff(d: Tensor) -> Tensor:
    r"""Shortest signed periodic difference in :math:`[-1/2, 1/2)`: :math:`d - \mathrm{round}(d)`."""
    return d - torch.floor(d + 0.5)


class FlatTorus(Manifold):
    r"""Flat torus of period 1, the space of fractional coordinates of crystals.

    Points are coordinates in :math:`[0, 1)^d`, tangents are vectors of :math:`\mathbb R^d`. The metric is the
    flat one inherited from :math:`\mathbb R^d`, so (Chen & Lipman 2024; FlowMM, Miller et al. 2024)

    .. math::
        \exp_x(v) = (x + v) \bmod 1,\qquad \log_x(y) = (y - x) - \mathrm{round}(y - x),\qquad
        x_t = (x_0 + t \log_{x_0} x_1) \bmod 1,\quad \dot x_t = \log_{x_0} x_1 .

    The prior is the uniform distribution (Haar measure) on the torus.

    Args:
        dim: Number of periodic coordinates :math:`d`.
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"FlatTorus needs dim >= 1, got {dim}")
        self.dim = dim
        self.point_dim = dim
        self.tangent_dim = dim

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`(x + v) \bmod 1`."""
        return nan_where_nonfinite(wrap(x + v), x, v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """Shortest signed difference :math:`y - x` wrapped to :math:`[-1/2, 1/2)`."""
        return nan_where_nonfinite(wrap_diff(y - x), x, y)

    def proju(self, x: Tensor, v: Tensor) -> Tensor:
        r"""Identity (the tangent space is :math:`\mathbb R^d`)."""
        return v

    def projx(self, x: Tensor) -> Tensor:
        """Wrap into :math:`[0, 1)` (a point with a NaN or infinite coordinate becomes NaN in every coordinate)."""
        return nan_where_nonfinite(wrap(x), x)

    def geodesic_with_velocity(self, x: Tensor, y: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r""":math:`((x + t\,\log_x y) \bmod 1,\ \log_x y)`: constant velocity."""
        v = self.log(x, y)
        return nan_where_nonfinite(wrap(x + torch.as_tensor(t).to(v) * v), v), v

    def random_base(
        self,
        shape: ShapeLike,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Uniform samples in :math:`[0, 1)^d`, ``[*shape, dim]``."""
        size = (*as_shape(shape), self.dim)
        return torch.rand(size, generator=generator, device=device, dtype=resolve_dtype(dtype))

    def origin(
        self, shape: ShapeLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Zeros ``[*shape, dim]``."""
        return torch.zeros((*as_shape(shape), self.dim), device=device, dtype=resolve_dtype(dtype))

    def __repr__(self) -> str:
        return f"FlatTorus(dim={self.dim})"
