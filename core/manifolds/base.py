r"""The :class:`Manifold` interface shared by every state space of the suite.

A manifold here is a *chart-free* description of a Riemannian manifold :math:`\mathcal M` together with a
fixed numerical representation of its points (last axis of size ``point_dim``) and of its tangent vectors
(last axis of size ``tangent_dim``). The two sizes differ when the tangent space is stored in a frame, e.g.
SO(3) stores points as unit quaternions (4 numbers) and tangents as body-frame angular velocities (3 numbers).

Riemannian flow matching (Chen & Lipman, "Flow Matching on General Geometries", ICLR 2024) only needs the
exponential and logarithm maps: the geodesic conditional path is
:math:`x_t = \exp_{x_0}(t \log_{x_0} x_1)` and its velocity is
:math:`\dot x_t = \log_{x_t}(x_1) / (1 - t)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from flowsci.manifolds._utils import nan_where_nonfinite

__all__ = ["Manifold", "ShapeLike", "as_shape"]

ShapeLike = int | Sequence[int] | torch.Size


def as_shape(shape: ShapeLike) -> tuple[int, ...]:
    """Normalise an ``int`` or a sequence of ints to a shape tuple."""
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


class Manifold(ABC):
    """Abstract Riemannian manifold with batched, broadcasting operations.

    Shapes: points ``x, y`` are ``[..., point_dim]``, tangent vectors ``u, v`` are ``[..., tangent_dim]``,
    times ``t`` broadcast against ``x[..., :1]``. Reductions (``dist``, ``inner``) drop the last axis.

    Non-finite and degenerate input (the same for every manifold of the suite, tested in
    ``tests/core/manifolds/test_nonfinite.py``): a point or tangent vector with a NaN or infinite coordinate
    gives NaN in every coordinate of the results computed from it (``exp``, ``log``, ``projx``, ``dist``,
    ``geodesic``, ``transport``...): never a finite value and never a finite point off the manifold, so the
    checks for non-finite losses and samples (:class:`~flowsci.errors.NonFiniteError`) stop the run. No operation
    raises on it itself, which would force a device synchronisation on every call. ``projx`` of a vector that
    cannot be normalised (zero, e.g. a zero quaternion) returns :meth:`origin`, a valid point.

    Attributes:
        point_dim: Size of the last axis of a point (``None`` for a dimension-agnostic Euclidean space).
        tangent_dim: Size of the last axis of a tangent vector.
    """

    point_dim: int | None
    tangent_dim: int | None

    @abstractmethod
    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        r"""Exponential map :math:`\exp_x(v)`: the geodesic from ``x`` with initial velocity ``v`` at time 1.

        Args:
            x: Base points ``[..., point_dim]``.
            v: Tangent vectors at ``x``, ``[..., tangent_dim]``.

        Returns:
            Points ``[..., point_dim]``.
        """

    @abstractmethod
    def log(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Logarithm map :math:`\log_x(y)`: the tangent vector at ``x`` of the shortest geodesic to ``y``.

        Args:
            x: Base points ``[..., point_dim]``.
            y: Target points ``[..., point_dim]``.

        Returns:
            Tangent vectors at ``x``, ``[..., tangent_dim]``, with :math:`\exp_x(\log_x y) = y`.
        """

    @abstractmethod
    def proju(self, x: Tensor, v: Tensor) -> Tensor:
        """Orthogonal projection of ``v`` onto the tangent space at ``x`` (``[..., tangent_dim]``)."""

    @abstractmethod
    def projx(self, x: Tensor) -> Tensor:
        """Closest point (or canonical representative) on the manifold, ``[..., point_dim]``."""

    @abstractmethod
    def random_base(
        self,
        shape: ShapeLike,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw from the manifold's default prior.

        Args:
            shape: Batch shape without the last axis.
            generator: Optional random generator (must live on ``device``).
            device: Device of the result.
            dtype: Floating dtype of the result (default: ``torch.get_default_dtype()``).

        Returns:
            Points ``[*shape, point_dim]``.
        """

    @abstractmethod
    def origin(
        self, shape: ShapeLike, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """A fixed reference point (zero, north pole, identity rotation) broadcast to ``[*shape, point_dim]``.

        Used to fill padded entries of variable-size sets with valid points.
        """

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        r"""Riemannian metric :math:`\langle u, v\rangle_x` in the tangent representation, ``[...]``.

        The default is the Euclidean dot product of the stored tangent coordinates (orthonormal frames).
        """
        del x
        return (u * v).sum(-1)

    def norm(self, x: Tensor, v: Tensor) -> Tensor:
        r"""Riemannian norm :math:`\|v\|_x = \sqrt{\langle v, v\rangle_x}`, ``[...]``."""
        sq = self.inner(x, v, v)
        positive = sq > 0
        # Substitute 1 under the root where sq <= 0 so backward stays finite at v = 0 (the norm's kink); ``sq * 0``
        # is 0 there, and NaN (not 0) when ``v`` holds NaN.
        norm = torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), sq * 0)
        return nan_where_nonfinite(norm, v, reduced=True)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        r"""Geodesic distance :math:`d(x, y) = \|\log_x y\|_x`, ``[...]``."""
        return self.norm(x, self.log(x, y))

    def geodesic(self, x: Tensor, y: Tensor, t: Tensor | float) -> Tensor:
        r"""Point at fraction ``t`` of the shortest geodesic, :math:`\gamma(t) = \exp_x(t \log_x y)`.

        Args:
            x: Start points ``[..., point_dim]`` (:math:`\gamma(0)`).
            y: End points ``[..., point_dim]`` (:math:`\gamma(1)`).
            t: Times broadcastable to ``x[..., :1]``.

        Returns:
            Points ``[..., point_dim]``.
        """
        v = self.log(x, y)
        return self.exp(x, torch.as_tensor(t).to(v) * v)

    def transport(self, x: Tensor, y: Tensor, v: Tensor) -> Tensor:
        r"""Move a tangent vector ``v`` at ``x`` to the tangent space at ``y`` (vector transport).

        Solvers use it to combine Runge–Kutta stages evaluated at different points. The default projects,
        :math:`\mathrm{proju}_y(v)`, a first-order vector transport for embedded manifolds (Absil, Mahony &
        Sepulchre 2008, ch. 8); it is exact for flat spaces. Subclasses override it with closed forms.

        Args:
            x: Points where ``v`` lives, ``[..., point_dim]``.
            y: Destination points, ``[..., point_dim]``.
            v: Tangent vectors at ``x``, ``[..., tangent_dim]``.

        Returns:
            Tangent vectors at ``y``, ``[..., tangent_dim]``.
        """
        del x
        return self.proju(y, v)

    def geodesic_with_velocity(self, x: Tensor, y: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        r"""Geodesic point :math:`\gamma(t)` and velocity :math:`\dot\gamma(t)` (tangent representation).

        The generic implementation uses :math:`\dot\gamma(t) = \log_{\gamma(t)}(y)/(1-t)` for :math:`t < 1/2`
        and :math:`-\log_{\gamma(t)}(x)/t` otherwise, so it is finite at both end points; subclasses override
        it with closed forms.

        Args:
            x: Start points ``[..., point_dim]``.
            y: End points ``[..., point_dim]``.
            t: Times broadcastable to ``x[..., :1]``.

        Returns:
            ``(x_t, v_t)`` of shapes ``[..., point_dim]`` and ``[..., tangent_dim]``.
        """
        t = torch.as_tensor(t).to(x)
        x_t = self.geodesic(x, y, t)
        early = t < 0.5
        forward = self.log(x_t, y) / (1 - t).clamp_min(0.5)
        backward = -self.log(x_t, x) / t.clamp_min(0.5)
        return x_t, torch.where(early, forward, backward)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(point_dim={self.point_dim}, tangent_dim={self.tangent_dim})"
