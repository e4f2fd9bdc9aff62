"""Probability paths: affine Gaussian paths, schedulers, stochastic interpolants and geodesic paths."""

from flowsci.paths.affine import AffinePath, CondOTPath
from flowsci.paths.base import PathSample, ProbPath, expand_t
from flowsci.paths.geodesic import GeodesicPath
from flowsci.paths.interpolant import StochasticInterpolant
from flowsci.paths.schedulers import (
    CondOTScheduler,
    CosineScheduler,
    PolynomialScheduler,
    Scheduler,
    SchedulerOutput,
    ShiftedScheduler,
    VPScheduler,
)

__all__ = [
    "AffinePath",
    "CondOTPath",
    "CondOTScheduler",
    "CosineScheduler",
    "GeodesicPath",
    "PathSample",
    "PolynomialScheduler",
    "ProbPath",
    "Scheduler",
    "SchedulerOutput",
    "ShiftedScheduler",
    "StochasticInterpolant",
    "VPScheduler",
    "expand_t",
]
