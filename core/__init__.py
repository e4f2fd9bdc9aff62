"""flowsci: one flow-matching core for scientific generative modelling, specialised per domain.

The core is domain-agnostic: probability paths (:mod:`flowsci.paths`), manifolds (:mod:`flowsci.manifolds`),
Bayesian flows (:mod:`flowsci.bayesian_flow`), couplings, time samplers, solvers, the :class:`FlowMatching`
LightningModule and the ``flowsci`` CLI. Heavy submodules are imported on first use.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("flowsci")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "FlowMatching": "flowsci.module",
    "EMA": "flowsci.callbacks",
    "MLP": "flowsci.nets",
    "Toy2DDataModule": "flowsci.data",
    "solve_ode": "flowsci.solvers",
    "solve_sde": "flowsci.solvers",
    "ConditionDropout": "flowsci.guidance",
    "ClassifierFreeGuidance": "flowsci.guidance",
    "ObjectiveGuidance": "flowsci.guidance",
    "SampleWriter": "flowsci.callbacks",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'flowsci' has no attribute {name!r}")
