"""Registry of benchmark domains: name -> module path, imported lazily.

A registered module defines either ``SPEC`` (a :class:`~flowsci.benchspec.BenchmarkSpec`, sized per suite
through its ``suite_overrides``) or ``spec(suite: str) -> BenchmarkSpec``. Modules are imported only when their
domain is benchmarked, so ``flowsci bench --domains toy2d`` never imports pymatgen or scanpy.

To register a new domain, add one line to :data:`DOMAINS` (or call :func:`register` from a plugin). An entry
``"package.module:function"`` names a ``function(suite) -> BenchmarkSpec`` of that module instead (one module may
hold several benchmarks, e.g. the same generator on two datasets).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from flowsci.benchspec import SUITES, BenchmarkSpec

__all__ = ["DOMAINS", "available_domains", "load_spec", "register"]

DOMAINS: dict[str, str] = {
    "toy2d": "flowsci.benchmarks.toy2d",
    "proteins": "flowsci.domains.proteins.benchmark",
    "crystals": "flowsci.domains.crystals.benchmark",
    "crystals_c24": "flowsci.domains.crystals.benchmark:carbon24_spec",
    "crystals_gen": "flowsci.domains.crystals.benchmark_gen",
    "crystals_gen_c24": "flowsci.domains.crystals.benchmark_gen:carbon24_spec",
}
"""Domain name -> module defining ``SPEC`` or ``spec(suite)`` (a domain adds its line when it lands)."""


def register(name: str, module: str) -> None:
    """Register (or re-point) domain ``name`` to ``module``."""
    if not name or "/" in name or "," in name:
        raise ValueError(f"invalid domain name {name!r}")
    DOMAINS[name] = module


def available_domains(registry: Mapping[str, str] | None = None) -> list[str]:
    """Registered domains whose benchmark module can be located (without importing it)."""
    import importlib.util

    out = []
    for name, mod in (registry or DOMAINS).items():
        try:
            found = importlib.util.find_spec(mod.split(":")[0]) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if found:
            out.append(name)
    return out


def load_spec(domain: str, suite: str, registry: Mapping[str, str] | None = None) -> BenchmarkSpec:
    """Import the domain's benchmark module and return its spec sized for ``suite``.

    Raises:
        KeyError: If ``domain`` is not registered.
        ValueError: If ``suite`` is unknown, or the module defines neither ``SPEC`` nor ``spec``, or returns
            something that is not a :class:`BenchmarkSpec`.
        ImportError: If the module (or its domain's optional dependencies) cannot be imported.

    """
    reg = registry or DOMAINS
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
    if domain not in reg:
        raise KeyError(f"unknown benchmark domain {domain!r}; registered: {sorted(reg)}")
    module_name, _, function = reg[domain].partition(":")
    module = importlib.import_module(module_name)
    if function:
        if not callable(getattr(module, function, None)):
            raise ValueError(f"{module_name} has no function {function!r} (registry entry of {domain!r})")
        spec = getattr(module, function)(suite)
    elif callable(getattr(module, "spec", None)):
        spec = module.spec(suite)
    elif isinstance(getattr(module, "SPEC", None), BenchmarkSpec):
        spec = module.SPEC.for_suite(suite)
    else:
        raise ValueError(f"{reg[domain]} defines neither SPEC (a BenchmarkSpec) nor spec(suite)")
    if not isinstance(spec, BenchmarkSpec):
        raise ValueError(f"{reg[domain]}.spec({suite!r}) returned {type(spec).__name__}, not a BenchmarkSpec")
    return spec
