"""Domain and benchmark registration through entry points (no hard-coded list to edit).

A package registers a domain and its benchmarks in its ``pyproject.toml``::

    [project.entry-points."flowsci.domains"]
    proteins = "flowsci.domains.proteins:DOMAIN"          # a flowsci.contract.Domain

    [project.entry-points."flowsci.benchmarks"]
    proteins = "flowsci.domains.proteins.benchmark:spec"  # spec(suite) -> flowsci.benchspec.BenchmarkSpec

Names are listed without importing anything; a domain is imported only when it is loaded.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from flowsci.errors import InputError, MissingExtraError

__all__ = [
    "BENCHMARK_GROUP",
    "DOMAIN_GROUP",
    "benchmark_entries",
    "domain_names",
    "load_domain",
    "trusted_packages",
]

DOMAIN_GROUP = "flowsci.domains"
BENCHMARK_GROUP = "flowsci.benchmarks"


def _entries(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def domain_names() -> list[str]:
    """Names of the registered domains (sorted), without importing them."""
    return sorted(_entries(DOMAIN_GROUP))


def benchmark_entries() -> dict[str, str]:
    """Registered benchmark name -> ``"module:function"`` (a ``function(suite) -> BenchmarkSpec``)."""
    return {name: ep.value for name, ep in sorted(_entries(BENCHMARK_GROUP).items())}


def load_domain(name: str) -> Any:
    """Import and return the :class:`~flowsci.contract.Domain` registered as ``name``.

    Raises:
        InputError: No domain of that name is registered.
        MissingExtraError: The domain's optional dependencies are not installed.

    """
    from flowsci.contract import Domain

    entries = _entries(DOMAIN_GROUP)
    if name not in entries:
        raise InputError("domain", f"unknown domain {name!r}; registered: {sorted(entries)}")
    try:
        domain = entries[name].load()
    except MissingExtraError:
        raise
    except ModuleNotFoundError as err:
        raise MissingExtraError(
            f"domain {name!r} needs {err.name!r}, which is not installed: pip install 'flowsci[{name}]'"
        ) from err
    if not isinstance(domain, Domain):
        raise InputError(
            entries[name].value, f"entry point of domain {name!r} is a {type(domain).__name__}, not a Domain"
        )
    return domain


def trusted_packages() -> tuple[str, ...]:
    """Top-level packages whose classes checkpoints may name: flowsci, torch, Lightning and registered plugins."""
    tops = {"flowsci", "torch", "pytorch_lightning", "lightning"}
    for group in (DOMAIN_GROUP, BENCHMARK_GROUP):
        for ep in _entries(group).values():
            tops.add(ep.value.split(":")[0].split(".")[0])
    return tuple(sorted(tops))
