"""Imports run one way: core <- domains <- benchmarks <- cli, and a domain never imports another domain.

import-linter (grimp) cannot follow flowsci's package-dir mapping (``flowsci.domains`` and ``flowsci.benchmarks``
live in sibling folders of ``core/``), so the rule is checked here from the source: every ``import`` statement,
module-level or inside a function, of every file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"core": "flowsci", "domains": "flowsci.domains", "benchmarks": "flowsci.benchmarks"}
RANK = {"core": 0, "domains": 1, "benchmarks": 2, "cli": 3}


def _layer(module: str) -> tuple[str, str | None]:
    """(layer, domain) of a flowsci module name; layer is core, domains, benchmarks or cli."""
    parts = module.split(".")
    if len(parts) > 1 and parts[1] == "domains":
        return "domains", parts[2] if len(parts) > 2 else None
    if len(parts) > 1 and parts[1] in ("benchmarks", "cli"):
        return parts[1], None
    return "core", None


def _modules() -> list[tuple[str, Path]]:
    out = []
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out.append((".".join([package, *parts]), path))
    return out


def _imports(path: Path, module: str) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against the package
                base = module.split(".")
                base = base[: len(base) - node.level + (path.name == "__init__.py")]
                names.append(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.append(node.module)
    return [n for n in names if n == "flowsci" or n.startswith("flowsci.")]


MODULES = _modules()


def test_every_source_folder_is_seen() -> None:
    seen = {_layer(m)[0] for m, _ in MODULES}
    assert seen == {"core", "domains", "benchmarks", "cli"}, seen


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_run_one_way(module: str, path: Path) -> None:
    layer, domain = _layer(module)
    for target in _imports(path, module):
        t_layer, t_domain = _layer(target)
        assert RANK[t_layer] <= RANK[layer], f"{module} ({layer}) imports {target} ({t_layer}), a higher layer"
        if layer == "domains" and t_layer == "domains" and domain and t_domain:
            assert t_domain == domain, f"domain {domain!r} imports domain {t_domain!r} ({module} -> {target})"
