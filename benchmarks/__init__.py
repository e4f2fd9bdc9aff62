"""flowsci benchmarks: one runner, one leaderboard for every domain (``flowsci bench``).

A domain declares its benchmark with the core's :class:`flowsci.benchspec.BenchmarkSpec` (in
``flowsci.domains.<field>.benchmark``) and registers it through its :class:`flowsci.contract.Domain` entry point;
:func:`flowsci.benchmarks.runner.run_benchmarks` does the rest. The runner, reports and comparisons live here,
above the domains.
"""
