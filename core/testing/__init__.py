"""Public assertion helpers for flowsci and its domains' tests (paths, solvers, manifolds, Bayesian flows)."""

from flowsci.testing.bayesian import (
    assert_loss_zero_at_data,
    assert_oracle_sampling_recovers_data,
    oracle_prediction,
)
from flowsci.testing.flows import assert_solver_order, assert_velocity_matches_finite_difference, measure_solver_order
from flowsci.testing.gmm import GaussianMixtureFlow, eight_gaussians_flow
from flowsci.testing.manifolds import (
    assert_equivariant,
    assert_on_manifold,
    assert_path_endpoints,
    assert_path_velocity,
    assert_tangent,
)

__all__ = [
    "GaussianMixtureFlow",
    "eight_gaussians_flow",
    "assert_loss_zero_at_data",
    "assert_oracle_sampling_recovers_data",
    "oracle_prediction",
    "assert_equivariant",
    "assert_on_manifold",
    "assert_path_endpoints",
    "assert_path_velocity",
    "assert_solver_order",
    "assert_tangent",
    "assert_velocity_matches_finite_difference",
    "measure_solver_order",
]
