"""Bayesian flow networks: continuous (Gaussian), discrete (categorical) and periodic (von Mises) flows.

Implements Graves et al. (2023), "Bayesian Flow Networks" (arXiv:2308.07037) for continuous and categorical
data and the periodic flow of CrysBFN, Wu et al. (ICLR 2025), "A Periodic Bayesian Flow for Material
Generation" (arXiv:2502.02016), plus one sampler that drives any combination of them with one network.
"""

from flowsci.bayesian_flow.base import BayesianFlow
from flowsci.bayesian_flow.continuous import GaussianBayesianFlow, GaussianBelief
from flowsci.bayesian_flow.discrete import CategoricalBelief, DiscreteBayesianFlow
from flowsci.bayesian_flow.periodic import (
    PeriodicBayesianFlow,
    VonMisesBelief,
    bessel_ratio,
    linear_entropy_schedule,
    sample_von_mises,
    von_mises_entropy,
    von_mises_log_prob,
)
from flowsci.bayesian_flow.sampler import BayesianFlowNetwork, BayesianFlowSample, sample_bayesian_flows

__all__ = [
    "BayesianFlow",
    "BayesianFlowNetwork",
    "BayesianFlowSample",
    "CategoricalBelief",
    "DiscreteBayesianFlow",
    "GaussianBayesianFlow",
    "GaussianBelief",
    "PeriodicBayesianFlow",
    "VonMisesBelief",
    "bessel_ratio",
    "linear_entropy_schedule",
    "sample_bayesian_flows",
    "sample_von_mises",
    "von_mises_entropy",
    "von_mises_log_prob",
]
