r"""Geodesic conditional paths for Riemannian flow matching (Chen & Lipman, ICLR 2024)."""

from __future__ import annotations

from torch import Tensor

from flowsci.manifolds import Manifold
from flowsci.paths.base import PathSample, ProbPath, expand_t
from flowsci.paths.schedulers import CondOTScheduler, Scheduler

__all__ = ["GeodesicPath"]


class GeodesicPath(ProbPath):
    r"""Geodesic path between a prior point and a data point on a manifold.

    With a convex schedule :math:`\kappa_t = \alpha_t` (:math:`\kappa_0 = 0`, :math:`\kappa_1 = 1`):

    .. math::
        x_t = \gamma_{x_0 \to x_1}(\kappa_t) = \exp_{x_0}\!\big(\kappa_t \log_{x_0} x_1\big),\qquad
        \dot x_t = \dot\kappa_t\, \dot\gamma(\kappa_t) = \dot\kappa_t\, \frac{\log_{x_t}(x_1)}{1 - \kappa_t},

    the conditional vector field of Riemannian flow matching with the geodesic premetric (Chen & Lipman
    2024). ``dx_t`` is given in the manifold's tangent representation (e.g. body angular velocity for
    :class:`~flowsci.manifolds.SO3`, ``[B, *S, tangent_dim]``) and is computed from each manifold's
    closed-form geodesic velocity, so it is finite at :math:`t = 1`. With the default schedule
    (:math:`\kappa_t = t`) the path is the constant-speed geodesic: straight lines in :math:`\mathbb R^d`,
    wrapped lines on the torus, great circles on spheres and SLERP on SO(3) (ReQFlow).

    Args:
        manifold: The state space of one sample (a :class:`~flowsci.manifolds.Product` for composite states).
        scheduler: Schedule whose ``alpha_t`` is used as :math:`\kappa_t` (a convex one such as
            :class:`~flowsci.paths.CondOTScheduler` or :class:`~flowsci.paths.PolynomialScheduler`; its
            ``sigma_t`` is ignored). Default: :math:`\kappa_t = t`.
    """

    def __init__(self, manifold: Manifold, scheduler: Scheduler | None = None) -> None:
        self.manifold = manifold
        self.scheduler = scheduler if scheduler is not None else CondOTScheduler()

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor) -> PathSample:
        """Sample :math:`x_t` and its conditional velocity.

        Args:
            x0: Prior points ``[B, *S, point_dim]`` on the manifold.
            x1: Data points ``[B, *S, point_dim]`` on the manifold.
            t: Times ``[B]`` in [0, 1].

        Returns:
            :class:`~flowsci.paths.PathSample` with ``x_t`` ``[B, *S, point_dim]`` and ``dx_t``
            ``[B, *S, tangent_dim]``.
        """
        if x0.shape != x1.shape:
            raise ValueError(f"x0 and x1 must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
        if t.dim() != 1 or t.shape[0] != x0.shape[0]:
            raise ValueError(f"t must have shape [B] = [{x0.shape[0]}], got {tuple(t.shape)}")
        s = self.scheduler(expand_t(t, x0))
        x_t, velocity = self.manifold.geodesic_with_velocity(x0, x1, s.alpha_t)
        return PathSample(x0=x0, x1=x1, t=t, x_t=x_t, dx_t=s.d_alpha_t * velocity)

    def __repr__(self) -> str:
        return f"GeodesicPath(manifold={self.manifold!r}, scheduler={type(self.scheduler).__name__}())"
