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


def test_fold_metrics_average():
    import numpy as np
    import torch

    from flowsci.domains.trajectories import ConstantVelocity, reference

    w = reference(10)
    sol = ConstantVelocity(0.0).predict_windows(w, 3)
    exact = dataclasses.replace(sol, x=torch.as_tensor(np.repeat(w.fut[:, None], 3, 1)))
    out = fold_metrics({"solutions": {"a": exact, "b": sol}, "ms_per_agent": 1.0, "ms_single_agent": 2.0}, None)
    assert out["ade_a"] == 0 and out["ade_avg"] == out["ade_b"] / 2
