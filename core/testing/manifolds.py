r"""Reusable assertions for manifold-valued states and geodesic paths (used by core and domain tests).

Each helper raises :class:`AssertionError` with the size and location of the worst violation, and returns the
worst error so tests can also report it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flowsci.manifolds import Manifold
from flowsci.paths.base import ProbPath

__all__ = [
    "assert_equivariant",
    "assert_on_manifold",
    "assert_path_endpoints",
    "assert_path_velocity",
    "assert_tangent",
]


def _check_last_dim(name: str, x: Tensor, expected: int | None) -> None:
    if expected is not None and x.shape[-1] != expected:
        raise AssertionError(f"{name} has last axis {x.shape[-1]}, expected {expected} (shape {tuple(x.shape)})")
    if not torch.isfinite(x).all():
        raise AssertionError(f"{name} has {int((~torch.isfinite(x)).sum())} non-finite entries")


def _check_max(name: str, err: Tensor, atol: float) -> float:
    worst = float(err.max()) if err.numel() else 0.0
    if worst > atol:
        idx = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        raise AssertionError(f"{name}: max error {worst:.3e} > atol {atol:.1e} at index {idx}")
    return worst


def assert_on_manifold(manifold: Manifold, x: Tensor, atol: float = 1e-5) -> float:
    r"""Assert that ``x`` ``[..., point_dim]`` are finite points: :math:`\max |x - \mathrm{projx}(x)|`.

    Args:
        manifold: The manifold.
        x: Points.
        atol: Tolerance (``1e-5`` suits float32; use ``1e-10`` for float64).

    Returns:
        The largest deviation.
    """
    _check_last_dim("point", x, manifold.point_dim)
    return _check_max(f"point off {manifold!r}", (x - manifold.projx(x)).abs(), atol)


def assert_tangent(manifold: Manifold, x: Tensor, v: Tensor, atol: float = 1e-5) -> float:
    r"""Assert that ``v`` ``[..., tangent_dim]`` is tangent at ``x``: :math:`\max|v - \mathrm{proju}_x(v)|`.

    Returns:
        The largest deviation.
    """
    _check_last_dim("tangent", v, manifold.tangent_dim)
    return _check_max(f"vector not tangent to {manifold!r}", (v - manifold.proju(x, v)).abs(), atol)


def assert_path_endpoints(path: ProbPath, x0: Tensor, x1: Tensor, atol: float = 1e-5) -> float:
    r"""Assert that a path runs from ``x0`` to ``x1`` (in geodesic distance) and stays on its manifold.

    Also checks that ``x_t`` is on the manifold and ``dx_t`` tangent at ``x_t`` for
    :math:`t \in \{0, 1/2, 1\}`.

    Args:
        path: Any :class:`~flowsci.paths.ProbPath`.
        x0: Source points ``[B, *S, point_dim]``.
        x1: Target points ``[B, *S, point_dim]``.
        atol: Tolerance on distances and projections.

    Returns:
        The largest end-point distance.
    """
    m = path.manifold
    worst = 0.0
    for value, target in ((0.0, x0), (0.5, None), (1.0, x1)):
        t = torch.full((x0.shape[0],), value, dtype=x0.dtype, device=x0.device)
        s = path.sample(x0, x1, t)
        assert_on_manifold(m, s.x_t, atol)
        assert_tangent(m, s.x_t, s.dx_t, atol)
        if target is not None:
            worst = max(worst, _check_max(f"x_t at t={value} vs end point", m.dist(s.x_t, target), atol))
    return worst


def assert_path_velocity(
    path: ProbPath, x0: Tensor, x1: Tensor, t: Tensor, h: float = 1e-4, atol: float = 1e-5, rtol: float = 1e-4
) -> float:
    r"""Assert that ``dx_t`` equals the central finite difference of ``x_t`` in the tangent representation.

    .. math:: \dot x_t \approx \frac{\log_{x_t}(x_{t+h}) - \log_{x_t}(x_{t-h})}{2h}

    Use float64 inputs (the difference is :math:`O(h^2)` accurate).

    Args:
        path: Any :class:`~flowsci.paths.ProbPath`.
        x0: Source points ``[B, *S, point_dim]``.
        x1: Target points ``[B, *S, point_dim]``.
        t: Times ``[B]`` in :math:`[h, 1 - h]`.
        h: Step.
        atol: Absolute tolerance.
        rtol: Tolerance relative to the velocity's magnitude.

    Returns:
        The largest error.
    """
    m = path.manifold
    s = path.sample(x0, x1, t)
    plus = path.sample(x0, x1, t + h).x_t
    minus = path.sample(x0, x1, t - h).x_t
    fd = (m.log(s.x_t, plus) - m.log(s.x_t, minus)) / (2 * h)
    err = (fd - s.dx_t).abs() - rtol * s.dx_t.abs()
    return _check_max("dx_t vs finite difference", err, atol)


def assert_equivariant(
    fn: Callable[..., Tensor],
    inputs: Sequence[Tensor],
    input_transforms: Sequence[Callable[[Tensor], Tensor]],
    output_transform: Callable[[Tensor], Tensor],
    manifold: Manifold | None = None,
    atol: float = 1e-5,
) -> float:
    r"""Assert :math:`f(g \cdot a_1, \dots, g \cdot a_k) = g \cdot f(a_1, \dots, a_k)`.

    Args:
        fn: Function of the inputs returning a tensor.
        inputs: The inputs :math:`a_i`.
        input_transforms: The action of :math:`g` on each input (same length as ``inputs``).
        output_transform: The action of :math:`g` on the output.
        manifold: If given, outputs are points of this manifold and are compared with ``manifold.dist``
            (e.g. so that :math:`q` and :math:`-q` count as the same rotation); otherwise element-wise.
        atol: Tolerance.

    Returns:
        The largest discrepancy.
    """
    if len(inputs) != len(input_transforms):
        raise ValueError(f"got {len(inputs)} inputs but {len(input_transforms)} input transforms")
    expected = output_transform(fn(*inputs))
    actual = fn(*[g(a) for g, a in zip(input_transforms, inputs, strict=True)])
    if actual.shape != expected.shape:
        raise AssertionError(f"output shapes differ: {tuple(actual.shape)} vs {tuple(expected.shape)}")
    err = manifold.dist(actual, expected) if manifold is not None else (actual - expected).abs()
    return _check_max("equivariance", err, atol)
