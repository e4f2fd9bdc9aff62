"""The smoke suite on toy2d, end to end through the CLI (as CI runs it)."""

from __future__ import annotations

import json
import time

from flowsci.benchmarks.cli import main
from flowsci.benchmarks.runner import load_result
from flowsci.benchmarks.toy2d import spec


def test_toy2d_smoke_suite_end_to_end(tmp_path, capsys) -> None:
    t0 = time.perf_counter()
    rc = main(["--suite", "smoke", "--domains", "toy2d", "--out", str(tmp_path), "--threads", "1", "--no-progress"])
    elapsed = time.perf_counter() - t0
    assert rc == 0, capsys.readouterr()
    assert elapsed < 60
    doc = load_result(tmp_path / "smoke" / "toy2d.json")  # validates against the schema
    cells = {c["id"]: c for c in doc["cells"]}
    assert sorted(cells) == sorted(c.id for c in spec("smoke").cells())
    assert doc["status"] == "ok" and doc["environment"]["torch_threads"] == 1
    for c in cells.values():
        assert c["status"] == "ok"
        # the solver's reported NFE is the number of network calls, and equals the requested NFE
        assert c["nfe"] == c["nfe_counted"] == c["nfe_target"]
        assert c["train_steps"] == 60 and c["num_samples"] == 500
        assert set(c["metrics"]) == {"sliced_w2", "mmd2", "w2"}
        # sliced W2 never exceeds the exact W2 (up to the subsample the exact W2 uses: both use 500 points here)
        assert c["metrics"]["sliced_w2"] <= c["metrics"]["w2"] + 1e-6
    # minibatch OT straightens the paths: better few-step samples than the independent baseline
    assert cells["fm-ot/euler/nfe2"]["metrics"]["sliced_w2"] < cells["fm-indep/euler/nfe2"]["metrics"]["sliced_w2"]
    assert cells["fm-indep/euler/nfe2"]["baseline"] is True
    # a second draw of the data scores better than any 60-step model: the floor is below every cell
    assert all(doc["noise_floor"]["sliced_w2"] < c["metrics"]["sliced_w2"] for c in cells.values())
    out = tmp_path / "smoke"
    assert (out / "toy2d.md").read_text().startswith("## toy2d — suite `smoke`")
    assert (out / "plots" / "toy2d_vs_nfe.png").stat().st_size > 1000
    assert "toy2d" in (out / "README.md").read_text()

    # a second run resumes: every cell is kept, nothing is recomputed
    before = json.loads((out / "toy2d.json").read_text())["cells"]
    assert main(["--suite", "smoke", "--domains", "toy2d", "--out", str(tmp_path), "--no-progress"]) == 0
    assert json.loads((out / "toy2d.json").read_text())["cells"] == before
