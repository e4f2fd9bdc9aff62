"""Public assertion helpers for flowsci and its domains' tests (paths, solvers, manifolds, Bayesian flows)."""

from flowsci.testing.flows import assert_solver_order, assert_velocity_matches_finite_difference, measure_solver_order
from flowsci.testing.manifolds import (
    assert_equivariant,
    assert_on_manifold,
    assert_path_endpoints,
    assert_path_velocity,
    assert_tangent,
)

__all__ = [
    "assert_equivariant",
    "assert_on_manifold",
    "assert_path_endpoints",
    "assert_path_velocity",
    "assert_solver_order",
    "assert_tangent",
    "assert_velocity_matches_finite_difference",
    "measure_solver_order",
]
