"""Registered benchmarks: name -> ``"module:function"``, read from the ``flowsci.benchmarks`` entry points.

A package registers a benchmark in its ``pyproject.toml`` (``[project.entry-points."flowsci.benchmarks"]``,
``name = "package.module:spec"``, a function ``spec(suite: str) -> BenchmarkSpec``; see :mod:`flowsci.registry`).
Modules are imported only when their benchmark runs, so ``flowsci bench --domains toy2d`` never imports pymatgen
or scanpy. ``DOMAINS`` is the current mapping (re-read from the entry points on every access).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from typing import Any

from flowsci.benchspec import SUITES, BenchmarkSpec
from flowsci.registry import benchmark_entries

__all__ = ["available_domains", "load_spec"]


def __getattr__(name: str) -> Any:
    if name == "DOMAINS":
        return benchmark_entries()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def available_domains(registry: Mapping[str, str] | None = None) -> list[str]:
    """Registered benchmarks whose module can be located (without importing it)."""
    out = []
    for name, target in (registry or benchmark_entries()).items():
        try:
            found = importlib.util.find_spec(target.split(":")[0]) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if found:
            out.append(name)
    return out


def load_spec(domain: str, suite: str, registry: Mapping[str, str] | None = None) -> BenchmarkSpec:
    """Import the benchmark's module and return ``function(suite)``.

    Raises:
        KeyError: If ``domain`` is not registered.
        ValueError: If ``suite`` is unknown, the entry is not ``"module:function"``, or the function does not
            return a :class:`BenchmarkSpec`.
        ImportError: If the module (or its domain's optional dependencies) cannot be imported.

    """
    reg = registry or benchmark_entries()
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
    if domain not in reg:
        raise KeyError(f"unknown benchmark domain {domain!r}; registered: {sorted(reg)}")
    module_name, _, function = reg[domain].partition(":")
    if not function:
        raise ValueError(f"benchmark {domain!r}: entry {reg[domain]!r} must be 'module:function'")
    module = importlib.import_module(module_name)
    if not callable(getattr(module, function, None)):
        raise ValueError(f"{module_name} has no function {function!r} (registry entry of {domain!r})")
    spec = getattr(module, function)(suite)
    if not isinstance(spec, BenchmarkSpec):
        raise ValueError(f"{reg[domain]}({suite!r}) returned {type(spec).__name__}, not a BenchmarkSpec")
    return spec
