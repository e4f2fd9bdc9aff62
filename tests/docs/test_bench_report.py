"""`flowsci bench report`: committed results files -> the documentation's leaderboard page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from flowsci.benchmarks.cli import main
from flowsci.benchmarks.report import collect_results, render_report

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "docs" / "bench_results"


def _doc() -> dict:
    return json.loads((RESULTS / "smoke" / "toy2d.json").read_text())


def test_render_report_has_index_sections_and_reported_rows():
    doc = _doc()
    doc["reference"] = [
        {
            "method": "paper-method",
            "nfe": 10,
            "solver": None,
            "metrics": {"sliced_w2": 0.1},
            "source": "Paper 2024, Table 1",
            "scale": "paper",
            "note": "",
        }
    ]
    text = render_report([doc], sources=["smoke/toy2d.json"], command="flowsci bench report x")
    assert text.startswith("# Leaderboard\n")
    assert "| `smoke` | [toy2d](#smoke-toy2d) | ok |" in text
    assert "### toy2d — suite `smoke` {#smoke-toy2d}" in text
    assert "#### Leaderboard (best cell per method" in text
    measured, reported = text.split("Reported elsewhere", 1)
    assert "paper-method" not in measured and "paper-method" in reported  # reported rows stay separate
    assert render_report([doc], sources=["smoke/toy2d.json"], command="flowsci bench report x") == text


def test_cli_writes_checks_and_detects_stale_page(tmp_path, capsys):
    res = tmp_path / "results"
    shutil.copytree(RESULTS / "smoke", res / "smoke")
    (res / "smoke" / ".cache").mkdir()
    (res / "smoke" / ".cache" / "ignored.json").write_text("{}")  # hidden folders are skipped
    assert collect_results([res]) == [res / "smoke" / "toy2d.json"]
    page = tmp_path / "leaderboard.md"
    assert main(["report", str(res), "--out", str(page), "--plots", str(tmp_path / "plots")]) == 0
    text = page.read_text()
    assert "[`toy2d.json`](results/smoke/toy2d.json)" in text
    assert (tmp_path / "plots" / "smoke" / "toy2d_vs_nfe.png").is_file()
    assert "![toy2d smoke](plots/smoke/toy2d_vs_nfe.png)" in text
    assert main(["report", str(res), "--out", str(page), "--plots", str(tmp_path / "plots"), "--check"]) == 0
    doc = json.loads((res / "smoke" / "toy2d.json").read_text())
    doc["updated_at"] = "2030-01-01T00:00:00+00:00"
    (res / "smoke" / "toy2d.json").write_text(json.dumps(doc))
    assert main(["report", str(res), "--out", str(page), "--plots", str(tmp_path / "plots"), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2


def test_committed_leaderboard_page_is_up_to_date(monkeypatch):
    """docs/leaderboard.md is exactly what `flowsci bench report` makes of docs/bench_results."""
    monkeypatch.chdir(ROOT)
    args = ["report", "docs/bench_results", "--out", "docs/leaderboard.md", "--plots", "docs/bench_results/plots"]
    assert main([*args, "--check"]) == 0, "regenerate: flowsci bench " + " ".join(args)
