"""The benchmark spec: suites, methods, references, and a trimmed smoke run on the synthetic scenes."""

import dataclasses

import pytest

from flowsci.domains.trajectories.benchmark import REFERENCES, fold_metrics, spec


@pytest.mark.parametrize("suite", ["smoke", "quick", "full"])
def test_spec_suites(suite):
    s = spec(suite)
    names = [m.name for m in s.methods]
    assert {"goalflow", "flow-no-goal", "cvm", "cvm-s"} <= set(names)
    assert s.num_samples == 20 and s.primary_metric == "ade_avg"
    assert (s.references == ()) == (suite == "smoke")
    for r in REFERENCES:
        assert r.to_json()["kind"] == "reported"


def test_unknown_suite():
    with pytest.raises(ValueError):
        spec("huge")


def test_trimmed_smoke_run(tmp_path):
    from flowsci.benchmarks.runner import run_spec

    s = spec("smoke")
    keep = [m for m in s.methods if m.name in ("goalflow", "cvm-s")]
    s = dataclasses.replace(s, methods=keep, nfe_grid=(1,), train_steps=5)
    doc = run_spec(s, "smoke", out=tmp_path, progress=False, plots=False, cache=False)
    assert {c["status"] for c in doc["cells"]} == {"ok"}
    for c in doc["cells"]:
        m = c["metrics"]
        assert m["ade_synth_a"] == m["ade_avg"] and m["fde_avg"] > 0 and 0 <= m["collision_rate"] <= 1
    cvms = next(c for c in doc["cells"] if c["method"] == "cvm-s")
    assert cvms["metrics"]["ade_avg"] < 1.0  # the synthetic walkers are nearly straight at first


def test_reflow_row_starts_from_goalflow_and_changes_the_weights(tmp_path):
    """The 1-NFE reflow row trains a 2-rectified student from the goalflow weights (smoke data, a few steps)."""
    from flowsci.benchmarks.runner import run_spec

    s = spec("smoke")
    keep = [m for m in s.methods if m.name in ("goalflow", "goalflow-reflow")]
    assert keep[1].init_from == "goalflow" and tuple(keep[1].nfe_grid) == (1,)
    s = dataclasses.replace(s, methods=keep, nfe_grid=(1,), train_steps=5)
    doc = run_spec(s, "smoke", out=tmp_path, progress=False, plots=False, cache=True)
    cells = {c["method"]: c for c in doc["cells"]}
    assert {c["status"] for c in cells.values()} == {"ok"}, [c["error"] for c in cells.values()]
    assert cells["goalflow-reflow"]["nfe"] == 1 and cells["goalflow-reflow"]["metrics"]["fde_avg"] > 0
    assert cells["goalflow-reflow"]["metrics"]["ade_avg"] != cells["goalflow"]["metrics"]["ade_avg"]


def test_fold_metrics_average():
    import numpy as np
    import torch

    from flowsci.domains.trajectories import ConstantVelocity, reference

    w = reference(10)
    sol = ConstantVelocity(0.0).predict_windows(w, 3)
    exact = dataclasses.replace(sol, x=torch.as_tensor(np.repeat(w.fut[:, None], 3, 1)))
    out = fold_metrics({"solutions": {"a": exact, "b": sol}, "ms_per_agent": 1.0, "ms_single_agent": 2.0}, None)
    assert out["ade_a"] == 0 and out["ade_avg"] == out["ade_b"] / 2


def test_closed_loop_rows_run_through_the_runner(tmp_path, monkeypatch):
    """The highway-env rows (GoalFlow planner, no-goal planner, IDM) are cells of the same spec."""
    pytest.importorskip("highway_env")
    from flowsci.benchmarks.runner import run_spec
    from flowsci.domains.trajectories.benchmark import _SIZES, FoldData, HighwayBench
    from flowsci.domains.trajectories.driving import HighwayConfig

    tiny = {"net": {"d_model": 16, "num_layers": 1, "num_heads": 2, "scorer_d_model": 16}, "num_goals": 8}
    monkeypatch.setitem(_SIZES["quick"], "highway", {**_SIZES["quick"]["highway"], **tiny})
    s = spec("quick")
    keep = [dataclasses.replace(m, train_steps=m.train_steps and 3) for m in s.methods if m.name.startswith("planner")]
    assert [m.name for m in keep] == ["planner-goalflow", "planner-no-goal", "planner-idm"]
    keep = [dataclasses.replace(m, nfe_grid=(1,)) for m in keep]
    data = FoldData(
        "sample", ("synth_a",), 32, None, 8, HighwayBench(1, 1, 32, HighwayConfig(duration=8.0, vehicles=8))
    )
    data.highway.datamodule.cache_dir = str(tmp_path / "hw")
    s = dataclasses.replace(s, methods=keep, datamodule=lambda: data, references=())
    doc = run_spec(s, "quick", out=tmp_path, progress=False, plots=False, cache=False)
    cells = {c["method"]: c for c in doc["cells"]}
    assert {c["status"] for c in cells.values()} == {"ok"}, [c["error"] for c in cells.values()]
    idm = cells["planner-idm"]["metrics"]
    assert idm["pdms"] == idm["ep"] == idm["nc"] == 1.0  # EP is normalised by the IDM ego itself
    for c in cells.values():
        m = c["metrics"]
        assert 0 <= m["pdms"] <= 1 and 0 <= m["dac"] <= 1 and m["progress_m"] > 0 and "ade_avg" not in m
    assert doc["columns"]["pdms"]["higher_is_better"] and not doc["columns"]["ms_per_plan"]["higher_is_better"]
