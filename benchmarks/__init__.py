"""flowsci benchmarks: one runner, one leaderboard for every domain (``flowsci bench``).

A domain registers a :class:`BenchmarkSpec` (see :mod:`flowsci.benchmarks.spec`) in
``flowsci.domains.<field>.benchmark`` and a line in :data:`flowsci.benchmarks.registry.DOMAINS`;
:func:`flowsci.benchmarks.runner.run_benchmarks` does the rest. General sample-quality metrics live in
:mod:`flowsci.metrics`.
"""

from flowsci.benchmarks.spec import BenchmarkSpec, Cell, Method, Metric, ReferenceRow, SampleRequest

__all__ = [
    "BenchmarkSpec",
    "Cell",
    "Method",
    "Metric",
    "ReferenceRow",
    "SampleRequest",
]
