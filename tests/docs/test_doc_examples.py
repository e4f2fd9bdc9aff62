"""The documentation's marked code examples run (at small sizes), so they cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from doc_examples import ROOT, examples, pages  # noqa: E402

PAGES = pages()

# a page whose examples need a domain's optional dependencies is skipped, with the reason, when they are missing
NEEDS = {"proteins.md": ("gemmi", "tmtools", "pydssp"), "crystals.md": ("pymatgen", "torch_geometric", "smact")}


def test_examples_are_found():
    assert any(p.name == "paths.md" for p in PAGES), "no marked examples found under docs/"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    missing = [m for m in NEEDS.get(page.name, ()) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{page.name} needs {missing} (install the domain's extra)")
    import matplotlib
    import torch

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace: dict = {"__name__": "__doc_example__"}
    try:
        for ex in examples(page):
            code = compile(ex.code, f"{page.relative_to(ROOT)}:{ex.line}", "exec")
            exec(code, namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
