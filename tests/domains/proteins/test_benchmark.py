"""The proteins BenchmarkSpec: construction, grid, sampler plumbing and the rotation-path stability check."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("tmtools", reason="proteins extra (tmtools) not installed")

from flowsci.benchmarks.spec import BenchmarkSpec, SampleRequest  # noqa: E402
from flowsci.domains.proteins import benchmark as B  # noqa: E402
from flowsci.domains.proteins.data import Backbone  # noqa: E402
from flowsci.domains.proteins.metrics import evaluate  # noqa: E402

torch.set_num_threads(1)


def test_spec_for_every_suite():
    for suite in ("smoke", "quick", "full"):
        s = B.spec(suite)
        assert isinstance(s, BenchmarkSpec) and s.name == "proteins"
        names = [m.name for m in s.methods]
        assert names == ["qflow", "qflow-linear", "reqflow", "qflow-igso3", "frameflow-path"]
        assert [m.name for m in s.methods if m.baseline] == ["frameflow-path"]
    quick = B.spec("quick")
    assert [c.nfe for c in quick.cells() if c.method == "reqflow"] == [10, 20, 50, 100]


def test_sample_lengths_cycle():
    assert B.sample_lengths(7) == [60, 80, 100, 60, 80, 100, 60]


def test_sampler_and_metrics_plumbing_on_untrained_model():
    s = B.spec("smoke")
    dm = s.datamodule()
    ref = s.reference_data(dm, s.num_samples, 0)
    assert len(ref["val"]) == 18 and len(ref["train_subset"]) == 40
    model = s.methods[0].build(dm)
    sol = s.sample(model, SampleRequest(dm, ref, 3, "euler", 2, 2, 0))
    samples = s.postprocess(sol)
    assert [len(b) for b in samples] == [60, 80, 100] and sol.nfe == 2
    geo = s.metrics[0].fn(samples, ref)
    assert set(geo) == set(B._GEOMETRY_KEYS) and geo["finite"] == 1.0
    nan = s.metrics[1].fn([Backbone(torch.full((5, 4, 3), float("nan")).numpy())], ref)
    assert all(v != v for v in nan.values())  # all NaN, no crash
    assert evaluate([]).summary["num_samples"] == 0.0


def test_path_stability_quaternion_beats_matrix_near_pi():
    r = B.path_stability(n=4000)
    assert r["quaternion_nonfinite_frac"] == 0.0
    assert r["quaternion_max_err_rad"] < 1e-5
    assert r["matrix_max_err_rad"] > 1e-2 > 100 * r["quaternion_max_err_rad"]
