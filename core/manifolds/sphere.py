r"""Unit hypersphere :math:`S^n \subset \mathbb R^{n+1}` with the round metric."""

from __future__ import annotations

import torch
from torch import Tensor

from flowsci.manifolds._utils import nan_where_nonfinite, resolve_dtype, safe_norm, sinc, unit_or
from flowsci.manifolds.base import Manifold, ShapeLike, as_shape

__all__ = ["Sphere"]


class Sphere(Manifold):
    r"""The unit sphere :math:`S^n = \{x \in \mathbb R^{n+1} : \|x\| = 1\}` (``Sphere(2)``: the 2-sphere).

    Points and tangents are both stored in ambient coordinates (``point_dim = tangent_dim = n + 1``); a
    tangent vector at ``x`` satisfies :math:`\langle x, v\rangle = 0`. With :math:`\theta = \|v\|`, :math:`c =
    \langle x, y\rangle` and :math:`w = y - c\,x` (Absil, Mahony & Sepulchre 2008, ex. 5.4.1;
    Chen & Lipman 2024):

    .. math::
        \exp_x(v) = \cos\theta\, x + \frac{\sin\theta}{\theta} v,\qquad
        \log_x(y) = \frac{\phi}{\|w\|} w,\quad \phi = \operatorname{atan2}(\|w\|, c),

    the geodesic :math:`\gamma(t) = \exp_x(t \log_x y)` and its velocity (the parallel transport of :math:`v =
    \log_x y`) :math:`\dot\gamma(t) = \cos(t\phi)\, v - \phi\sin(t\phi)\, x`. ``atan2`` keeps the angle
    accurate near 0 and :math:`\pi`; :math:`\sin\theta/\theta` uses its Taylor series for small angles. For
    antipodal points the shortest geodesic is not unique and :meth:`log` returns a deterministic direction of
    length :math:`\pi`. The prior is the uniform distribution (normalised Gaussian).

    Args:
        dim: Intrinsic dimension :math:`n` (points have :math:`n + 1` coordinates).
    """

    def __init__(self, dim: int = 2) -> None:
        if dim < 1:
            raise ValueError(f"Sphere needs dim >= 1, got {dim}")
        self.dim = dim
        self.point_dim = dim + 1
        self.tangent_dim = dim + 1

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`\cos\|v\| x + \mathrm{sinc}\|v\|\, v`, renormalised."""
        theta, _ = safe_norm(v)
        theta = torch.where((v * v).sum(-1, keepdim=True) > 0, theta, torch.zeros_like(theta))
        return nan_where_nonfinite(self.projx(torch.cos(theta) * x + sinc(theta) * v), x, v)

    def _antipodal_direction(self, x: Tensor) -> Tensor:
        """A unit tangent at ``x``: the projection of the coordinate axis least aligned with ``x``."""
        axis = torch.nn.functional.one_hot(x.abs().argmin(-1), x.shape[-1]).to(x)
        u = self.proju(x, axis)
        return u / safe_norm(u)[0]

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`\frac{\phi}{\|w\|} w`, :math:`w = y - \langle x, y\rangle x`; length :math:`\pi` along a
        fixed axis if ``y = -x``.
        """
        c = (x * y).sum(-1, keepdim=True)
        w = self.proju(x, y - c * x)  # second Gram-Schmidt pass removes round-off along x
        s, s2 = safe_norm(w)
        phi = torch.atan2(torch.where(s2 > 0, s, torch.zeros_like(s)), c)
        # phi / |w| is accurate at every angle (atan2 is); it tends to 1 as w -> 0 near y = x.
        v = torch.where(s2 > 0, phi / s, torch.ones_like(s)) * w
        antipodal = (s2 < torch.finfo(x.dtype).eps ** 2) & (c < 0)
        return nan_where_nonfinite(torch.where(antipodal, torch.pi * self._antipodal_direction(x), v), x, y)

    def proju(self, x: Tensor, v: Tensor) -> Tensor:
        r""":math:`v - \langle x, v\rangle x`."""
        return v - (x * v).sum(-1, keepdim=True) * x

    def projx(self, x: Tensor) -> Tensor:
        r""":math:`x / \|x\|`; the pole :meth:`origin` for the zero vector."""
        return unit_or(x, self.origin((), device=x.device, dtype=x.dtype))

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Angle :math:`\operatorname{atan2}(|y - \langle x,y\rangle x|, \langle x,y\rangle)`."""
        c = (x * y).sum(-1)
        s = (y - c.unsqueeze(-1) * x).norm(dim=-1)
        return nan_where_nonfinite(torch.atan2(s, c), x, y, reduced=True)

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        r"""Parallel transport along the shortest great circle, an isometry :math:`T_x S^n \to T_y S^n`.

        .. math:: P_{x \to y}(v) = v - \frac{\langle y, v\rangle}{1 + \langle x, y\rangle} (x + y)

        For (nearly) antipodal ``y`` the great circle is not unique and the projection onto :math:`T_y` is
        used.
        """
        c = (x * y).sum(-1, keepdim=True)
        eps = torch.finfo(x.dtype).eps ** 0.5
        denom = torch.where(1 + c > eps, 1 + c, torch.ones_like(c))
        moved = v - (y * v).sum(-1, keepdim=True) / denom * (x + y)
        return nan_where_nonfinite(torch.where(1 + c > eps, moved, self.proju(y, v)), x, y, v)

    def geodesic_with_velocity(self, x: Tensor, y: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""Closed form :math:`\dot\gamma(t) = \cos(t\phi) v - \phi \sin(t\phi) x`, :math:`v = \log_x y`."""
        v = self.log(x, y)
        t = torch.as_tensor(t).to(v)
        phi, phi2 = safe_norm(v)
        phi = torch.where(phi2 > 0, phi, torch.zeros_like(phi))
        x_t = self.exp(x, t * v)
        v_t = torch.cos(t * phi) * v - phi * torch.sin(t * phi) * x
        return x_t, self.proju(x_t, v_t)

    def random_base(
        self,
        shape: ShapeLike,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Uniform samples on :math:`S^n` (normalised standard normals), ``[*shape, n + 1]``."""
        size = (*as_shape(shape), self.point_dim)
        g = torch.randn(size, generator=generator, device=device, dtype=resolve_dtype(dtype))
        return self.projx(g)

    def origin(
        self, shape: ShapeLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        r"""The pole :math:`e_0 = (1, 0, \dots, 0)` broadcast to ``[*shape, n + 1]``."""
        e0 = torch.zeros((*as_shape(shape), self.point_dim), device=device, dtype=resolve_dtype(dtype))
        e0[..., 0] = 1
        return e0

    def __repr__(self) -> str:
        return f"Sphere(dim={self.dim})"
