"""MkDocs hook: stage the ``flowsci`` package tree for mkdocstrings (griffe).

The distribution maps four folders onto one import package (``core/`` is ``flowsci``, ``domains/`` is
``flowsci.domains``, ``benchmarks/`` is ``flowsci.benchmarks``, ``configs/`` is ``flowsci.configs``). Griffe reads
source files by path and cannot follow that mapping, so this hook builds ``build/api_src/flowsci/`` out of symbolic
links (``build/`` is git-ignored) and ``mkdocs.yml`` points mkdocstrings at it (``paths: [build/api_src]``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.flowsci")

ROOT = Path(__file__).resolve().parents[2]
STAGE = ROOT / "build" / "api_src"
SUBPACKAGES = {"domains": "domains", "benchmarks": "benchmarks", "configs": "configs"}


def stage_package() -> Path:
    """(Re)build ``build/api_src/flowsci`` as links to ``core/*`` plus the mapped sub-packages."""
    pkg = STAGE / "flowsci"
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    for entry in sorted((ROOT / "core").iterdir()):
        if entry.name in SUBPACKAGES or entry.name == "__pycache__":
            continue
        os.symlink(entry, pkg / entry.name)
    for name, folder in SUBPACKAGES.items():
        os.symlink(ROOT / folder, pkg / name)
    return pkg


# Staged when MkDocs loads this hook, before any plugin's on_config: mkdocstrings resolves its ``paths`` there and
# silently drops one that does not exist yet (a fresh clone's first build then failed to find flowsci.benchmarks).
stage_package()


def on_config(config):  # noqa: ANN001, ANN201
    """MkDocs event: stage the package before any page is rendered."""
    stage_package()
    if config.get("nav"):
        config["nav"] = _prune_nav(config["nav"], Path(config["docs_dir"]))
    return config


# ----------------------------------------------------------------------------- pages written by other sessions
# Domain pages (docs/domains/<name>.md) are written by whoever builds the domain. Until a page exists, its nav entry
# is dropped and links to it are shown as plain text, so the strict build passes before and after it appears.
_MD_LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+\.md)(#[^)]*)?\)")


def _prune_nav(items: list, docs_dir: Path) -> list:
    kept = []
    for item in items:
        if isinstance(item, str):
            path, title = item, None
        elif isinstance(item, dict) and len(item) == 1:
            title, path = next(iter(item.items()))
        else:
            kept.append(item)
            continue
        if isinstance(path, list):
            kept.append({title: _prune_nav(path, docs_dir)} if title is not None else _prune_nav(path, docs_dir))
        elif isinstance(path, str) and path.startswith("domains/") and not (docs_dir / path).is_file():
            log.info("nav: %s does not exist yet; left out", path)
        else:
            kept.append(item)
    return kept


def _missing_domain_links(markdown: str, page_src: str, docs_dir: Path) -> str:
    domains = (docs_dir / "domains").resolve()

    def repl(m: re.Match) -> str:
        target = ((docs_dir / page_src).parent / m.group(2)).resolve()
        if target.parent != domains or target.is_file():
            return m.group(0)
        return f"{m.group(1)} *(page not written yet)*"

    return _MD_LINK.sub(repl, markdown)


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201
    """MkDocs event: links to domain pages that do not exist yet become plain text."""
    return _missing_domain_links(markdown, page.file.src_uri, Path(config["docs_dir"]))
