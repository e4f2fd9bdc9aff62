"""Public assertion helpers for flowsci and its domains' tests (paths, solvers, manifolds, Bayesian flows)."""

from flowsci.testing.flows import assert_solver_order, assert_velocity_matches_finite_difference, measure_solver_order

__all__ = ["assert_solver_order", "assert_velocity_matches_finite_difference", "measure_solver_order"]
