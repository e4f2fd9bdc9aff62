"""Samplers: fixed-step and adaptive ODE solvers (manifold-aware) and Euler–Maruyama SDE sampling."""

from flowsci.solvers.ode import (
    ADAPTIVE_METHODS,
    FIXED_STEP_METHODS,
    Solution,
    Velocity,
    make_time_grid,
    solve_ode,
)
from flowsci.solvers.sde import (
    DIFFUSION_KINDS,
    Diffusion,
    DiffusionSchedule,
    as_diffusion_schedule,
    euler_maruyama_step,
    score_to_velocity,
    solve_sde,
    velocity_to_score,
)

__all__ = [
    "ADAPTIVE_METHODS",
    "DIFFUSION_KINDS",
    "FIXED_STEP_METHODS",
    "Diffusion",
    "DiffusionSchedule",
    "Solution",
    "Velocity",
    "as_diffusion_schedule",
    "euler_maruyama_step",
    "make_time_grid",
    "score_to_velocity",
    "solve_ode",
    "solve_sde",
    "velocity_to_score",
]
