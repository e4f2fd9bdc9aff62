"""The runner on an exactly solvable fake domain: results, schema, resume, failures, compare, CLI."""

from __future__ import annotations

import copy
import importlib.util
import json
import textwrap

import pytest
import torch

from flowsci.benchmarks.cli import main
from flowsci.benchmarks.compare import compare_results, format_changes
from flowsci.benchmarks.runner import load_result, run_benchmarks, run_spec
from flowsci.benchmarks.schema import SchemaError, validate_result

# the built-in validator always runs; jsonschema too when installed (the [test] extra)
VALIDATORS = [False] + ([True] if importlib.util.find_spec("jsonschema") is not None else [])


def _cells(doc):
    return {c["id"]: c for c in doc["cells"]}


def test_results_are_correct_and_validate(fakes, tmp_path) -> None:
    doc = run_spec(fakes.make_spec(noise_floor=True), "smoke", tmp_path, progress=False, plots=True)
    path = tmp_path / "smoke" / "fake.json"
    assert json.loads(path.read_text()) == doc
    for use in VALIDATORS:
        validate_result(doc, use_jsonschema=use)
    assert doc["status"] == "ok" and doc["suite"] == "smoke" and doc["domain"] == "fake"
    cells = _cells(doc)
    assert sorted(cells) == sorted(c.id for c in fakes.make_spec().cells())
    for c in cells.values():
        assert c["status"] == "ok" and c["error"] is None
        # NFE reported by the solver equals the counted network calls and the target
        assert c["nfe"] == c["nfe_counted"] == c["nfe_target"]
        assert c["sample_time_s"] > 0 and c["sample_time_per_sample_s"] == pytest.approx(c["sample_time_s"] / 400)
        assert c["peak_memory_mb"] > 0
    # the closed-form flow samples N(m, I) at every NFE; the untrained baseline samples N(0, I)
    mean_gap = float(fakes.MEAN.norm())
    for cid, c in cells.items():
        if cid.startswith("shift/"):
            assert c["metrics"]["mean_error"] < 0.2
            assert c["train_steps"] == 10
        else:
            assert c["metrics"]["mean_error"] == pytest.approx(mean_gap, abs=0.2)
            assert c["baseline"] is True and c["train_steps"] == 0
    assert doc["columns"]["mean_error"]["higher_is_better"] is False
    # noise floor: two independent N(m, I) draws of 400 points have close means
    assert set(doc["noise_floor"]) == {"mean_error", "sliced_w2"} and doc["noise_floor"]["mean_error"] < 0.2
    assert doc["reference"] == [
        {
            "kind": "reported",
            "method": "oracle",
            "metrics": {"mean_error": 0.0},
            "source": "closed form",
            "scale": "any n",
            "nfe": None,
            "solver": None,
            "note": "",
        }
    ]
    md = (tmp_path / "smoke" / "fake.md").read_text()
    assert "| 1 | shift |" in md and "untrained *(baseline)*" in md and "Reported elsewhere" in md
    untrained = next(line for line in md.splitlines() if "| untrained *(baseline)* |" in line)
    assert untrained.split(" | ")[-2] == "–"  # no training: no train time (not "0 µs")
    assert "Noise floor" in md
    for name in ("fake_vs_nfe.png", "fake_vs_time.png"):
        assert (tmp_path / "smoke" / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_skips_finished_cells_and_force_reruns(fakes, tmp_path) -> None:
    counters = fakes.Counters()
    first = run_spec(fakes.make_spec(counters), "smoke", tmp_path, progress=False, plots=False)
    n_cells = len(first["cells"]) // 2
    assert counters.samples == {"shift": n_cells, "untrained": n_cells}

    again = fakes.Counters()
    second = run_spec(fakes.make_spec(again), "smoke", tmp_path, progress=False, plots=False)
    assert again.samples == {} and again.builds == {}  # nothing rebuilt, nothing resampled
    assert second["cells"] == first["cells"]

    # a grid change reruns only the new cells, and reuses the cached trained weights
    wider = fakes.Counters()
    third = run_spec(fakes.make_spec(wider, nfe_grid=(1, 2, 4, 8)), "smoke", tmp_path, progress=False, plots=False)
    assert wider.samples == {"shift": 2, "untrained": 2}  # euler/nfe8 and midpoint/nfe8 per method
    assert {c["id"]: c for c in third["cells"]}["shift/euler/nfe1"] == _cells(first)["shift/euler/nfe1"]
    assert _cells(third)["shift/euler/nfe8"]["train_cached"] is True

    forced = fakes.Counters()
    run_spec(fakes.make_spec(forced), "smoke", tmp_path, progress=False, plots=False, force=True)
    assert forced.samples == {"shift": n_cells, "untrained": n_cells}

    # results measured on another device (or thread count) are not mixed with this machine's
    path = tmp_path / "smoke" / "fake.json"
    doc = json.loads(path.read_text())
    doc["environment"]["device"] = "cuda:Another GPU"
    path.write_text(json.dumps(doc))
    moved = fakes.Counters()
    run_spec(fakes.make_spec(moved), "smoke", tmp_path, progress=False, plots=False)
    assert moved.samples == {"shift": n_cells, "untrained": n_cells}

    # a changed spec (different num_samples) invalidates the old cells
    changed = fakes.Counters()
    run_spec(fakes.make_spec(changed, num_samples=300), "smoke", tmp_path, progress=False, plots=False)
    assert changed.samples == {"shift": n_cells, "untrained": n_cells}


def test_failing_cell_is_recorded_and_others_survive(fakes, tmp_path) -> None:
    good = run_spec(fakes.make_spec(), "smoke", tmp_path / "a", progress=False, plots=False)
    doc = run_spec(fakes.make_spec(fail=lambda req: req.nfe == 2), "smoke", tmp_path / "b", progress=False, plots=False)
    validate_result(doc)
    assert doc["status"] == "partial"
    bad = {cid for cid, c in _cells(doc).items() if c["status"] == "error"}
    assert bad == {"shift/euler/nfe2", "shift/midpoint/nfe2"}
    for cid in bad:
        c = _cells(doc)[cid]
        assert c["error"] == "sampling: RuntimeError: injected failure at nfe=2"
        assert "injected failure" in c["traceback"] and c["metrics"] == {}
    for cid, c in _cells(doc).items():
        if cid not in bad:  # identical results to the failure-free run (timings aside)
            assert c["metrics"] == _cells(good)[cid]["metrics"]
    assert "### Failed cells" in (tmp_path / "b" / "smoke" / "fake.md").read_text()

    # resume reruns exactly the failed cells
    counters = fakes.Counters()
    fixed = run_spec(fakes.make_spec(counters), "smoke", tmp_path / "b", progress=False, plots=False)
    assert counters.samples == {"shift": 2}
    assert fixed["status"] == "ok"


def test_failing_training_fails_only_that_method(fakes, tmp_path) -> None:
    doc = run_spec(fakes.make_spec(fail_training=True), "smoke", tmp_path, progress=False, plots=False)
    for cid, c in _cells(doc).items():
        if cid.startswith("shift/"):
            assert c["status"] == "error" and c["error"] == "training: ValueError: injected training failure"
        else:
            assert c["status"] == "ok"


def test_default_lightning_training_learns_the_shift(fakes, tmp_path) -> None:
    spec = fakes.make_spec(train_steps=150)
    shift = spec.methods[0]
    import dataclasses

    spec = dataclasses.replace(
        spec, methods=[dataclasses.replace(shift, fit=None), spec.methods[1]], nfe_grid=(1,), solvers=("euler",)
    )
    doc = run_spec(spec, "smoke", tmp_path, progress=False, plots=False)
    c = _cells(doc)["shift/euler/nfe1"]
    assert c["status"] == "ok", c["error"]
    assert c["train_steps"] == 150 and c["train_steps_per_s"] > 0
    assert c["metrics"]["mean_error"] < 0.3  # Adam on |b - (x1 - x0)|^2 converges to b = m


def test_schema_rejects_broken_documents(fakes, tmp_path) -> None:
    doc = run_spec(fakes.make_spec(nfe_grid=(1,)), "smoke", tmp_path, progress=False, plots=False)
    for use in VALIDATORS:
        broken = copy.deepcopy(doc)
        del broken["cells"][0]["metrics"]
        with pytest.raises(SchemaError, match="metrics"):
            validate_result(broken, source="x.json", use_jsonschema=use)
        broken = copy.deepcopy(doc)
        broken["cells"][0]["status"] = "fine"
        with pytest.raises(SchemaError, match="x.json"):
            validate_result(broken, source="x.json", use_jsonschema=use)
        broken = copy.deepcopy(doc)
        broken["reference"].append({"kind": "measured", "method": "m", "metrics": {}, "source": "s", "scale": "s"})
        with pytest.raises(SchemaError):
            validate_result(broken, use_jsonschema=use)
    broken = copy.deepcopy(doc)
    broken["cells"][0]["metrics"]["mean_error"] = float("nan")
    with pytest.raises(SchemaError, match="non-finite"):
        validate_result(broken)
    bad_file = tmp_path / "bad.json"
    bad_file.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_result(bad_file)


def test_schema_is_a_valid_json_schema() -> None:
    from flowsci.benchmarks.schema import RESULT_SCHEMA

    json.dumps(RESULT_SCHEMA)
    if importlib.util.find_spec("jsonschema") is not None:
        import jsonschema

        jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)


def test_compare_lists_regressions_first(fakes, tmp_path, capsys) -> None:
    a = run_spec(fakes.make_spec(), "smoke", tmp_path, progress=False, plots=False)
    b = copy.deepcopy(a)
    cb = _cells(b)
    cb["shift/euler/nfe1"]["metrics"]["mean_error"] *= 2.0  # worse (lower is better)
    cb["shift/euler/nfe2"]["metrics"]["sliced_w2"] *= 0.5  # better
    cb["shift/midpoint/nfe2"].update(status="error", error="boom")
    b["cells"] = [c for c in b["cells"] if c["id"] != "untrained/euler/nfe4"]
    for c in b["cells"]:  # identical timings: no noise in this comparison
        c["sample_time_per_sample_s"] = _cells(a)[c["id"]]["sample_time_per_sample_s"]
        c["peak_memory_mb"] = _cells(a)[c["id"]]["peak_memory_mb"]
    for c in a["cells"]:  # training throughput is per method, so it must be reported once per method
        c["train_steps_per_s"] = 100.0 if c["method"] == "shift" else None
    for c in b["cells"]:
        c["train_steps_per_s"] = 50.0 if c["method"] == "shift" else None
    changes = compare_results(a, b)
    kinds = [ch.kind for ch in changes]
    assert kinds == sorted(kinds, key=["regression", "improvement", "removed", "added", "unchanged"].index)
    regressions = {(ch.cell, ch.column) for ch in changes if ch.kind == "regression"}
    assert regressions == {
        ("shift/euler/nfe1", "mean_error"),
        ("shift/midpoint/nfe2", "status"),
        ("shift (training)", "train_steps_per_s"),
    }
    improvements = {(ch.cell, ch.column) for ch in changes if ch.kind == "improvement"}
    assert improvements == {("shift/euler/nfe2", "sliced_w2")}
    assert [(ch.cell, ch.kind) for ch in changes if ch.column == "cell"] == [("untrained/euler/nfe4", "removed")]
    rel = next(ch.rel for ch in changes if ch.cell == "shift/euler/nfe1" and ch.column == "mean_error")
    assert rel == pytest.approx(1.0)
    text = format_changes(changes)
    assert text.index("REGRESSIONS") < text.index("Improvements") < text.index("Removed")

    pa, pb = tmp_path / "A.json", tmp_path / "B.json"
    pa.write_text(json.dumps(a))
    pb.write_text(json.dumps(b))
    assert main(["compare", str(pa), str(pb)]) == 0
    out = capsys.readouterr().out
    assert out.index("REGRESSIONS (3)") < out.index("Improvements (1)")
    assert main(["compare", str(pa), str(pb), "--fail-on-regression"]) == 1
    assert main(["compare", str(pa), str(pa), "--fail-on-regression"]) == 0
    capsys.readouterr()
    pb.write_text("[]")
    assert main(["compare", str(pa), str(pb)]) == 2
    assert "B.json" in capsys.readouterr().err


def test_run_benchmarks_records_broken_domains_and_goes_on(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "pkgs"
    pkg.mkdir()
    (pkg / "bench_fake_domain.py").write_text(
        textwrap.dedent("""
        import torch
        from flowsci.benchspec import BenchmarkSpec, Method, Metric

        class Prior(torch.nn.Module):
            def sample(self, num, steps=None, solver=None, seed=None):
                return torch.randn(num, 2, generator=torch.Generator().manual_seed(seed))

        def spec(suite):
            return BenchmarkSpec(
                name="ok_domain", datamodule=lambda: None, reference_data=lambda dm, n, s: torch.zeros(n, 2),
                methods=[Method("prior", build=lambda dm: Prior(), baseline=True, train_steps=0)],
                metrics=[Metric("rms", lambda x, y: float(x.pow(2).mean().sqrt()))],
                num_samples=50 if suite == "smoke" else 500, nfe_grid=(1,), nfe_counter=None,
            )
    """)
    )
    monkeypatch.syspath_prepend(str(pkg))
    registry = {"ok_domain": "bench_fake_domain:spec", "missing": "bench_no_such_module_xyz:spec"}
    docs = run_benchmarks(
        "smoke", ["missing", "ok_domain"], tmp_path / "res", registry=registry, progress=False, plots=False, threads=1
    )
    assert docs["missing"]["status"] == "error"
    assert "ModuleNotFoundError" in docs["missing"]["error"]
    assert docs["ok_domain"]["status"] == "ok"
    cell = docs["ok_domain"]["cells"][0]
    assert cell["num_samples"] == 50 and cell["nfe"] is None and cell["metrics"]["rms"] == pytest.approx(1, abs=0.2)
    for name in ("missing", "ok_domain"):
        load_result(tmp_path / "res" / "smoke" / f"{name}.json")  # both validate
    index = (tmp_path / "res" / "smoke" / "README.md").read_text()
    assert "| [missing](missing.md) | error |" in index and "| [ok_domain](ok_domain.md) | ok | 1/1 |" in index


def test_cli_usage_errors(capsys) -> None:
    assert main(["--suite", "smoke", "--domains", "nope"]) == 2
    assert "unknown domain" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume", "--force"])
    assert main(["--list"]) == 0
    assert "toy2d" in capsys.readouterr().out


def test_adaptive_solver_cell_reports_counted_nfe(fakes, tmp_path) -> None:
    doc = run_spec(
        fakes.make_spec(solvers=("euler", "dopri5"), nfe_grid=(2,)), "smoke", tmp_path, progress=False, plots=True
    )
    cell = _cells(doc)["shift/dopri5/adaptive"]
    assert cell["status"] == "ok" and cell["nfe_target"] is None and cell["steps"] is None
    assert cell["nfe"] == cell["nfe_counted"] == 5  # the fake adaptive solve makes 5 evaluations
    assert "| 5 (adaptive) |" in (tmp_path / "smoke" / "fake.md").read_text()
    assert (tmp_path / "smoke" / "plots" / "fake_vs_nfe.png").exists()


@pytest.mark.parametrize("cache", [False, True])
def test_weights_of_reuses_trained_weights_without_training_again(fakes, tmp_path, cache) -> None:
    import dataclasses

    from flowsci.benchspec import Method

    fits: list[str] = []

    def counting_fit(model, dm, steps, device):
        fits.append(device)
        fakes.closed_form_fit(model, dm, steps, device)

    base = fakes.make_spec(nfe_grid=(1,), solvers=("euler",))
    shift = dataclasses.replace(base.methods[0], fit=counting_fit)
    again = Method("shift-again", build=shift.build, sample=shift.sample, weights_of="shift")
    spec = dataclasses.replace(base, methods=[shift, again, base.methods[1]])
    doc = run_spec(spec, "smoke", tmp_path, progress=False, plots=False, cache=cache)
    cells = _cells(doc)
    assert fits == [torch.device("cpu")]  # trained once, for "shift", on the runner's device
    assert cells["shift-again/euler/nfe1"]["metrics"] == cells["shift/euler/nfe1"]["metrics"]
    assert cells["shift-again/euler/nfe1"]["train_steps"] == 10
    assert {m["name"]: m.get("weights_of") for m in doc["spec"]["methods"]}["shift-again"] == "shift"
    with pytest.raises(ValueError, match="earlier method"):
        dataclasses.replace(base, methods=[again, shift]).validate()


def test_sample_plots_are_written_per_cell_and_shown_for_the_best_cells(fakes, tmp_path) -> None:
    import numpy as np

    from flowsci.benchmarks.report import best_cells, sample_plot_path
    from flowsci.plots import Panel, save_panels

    seen = []

    def plot(samples, reference, path, title):
        seen.append(title)
        if title.startswith("untrained/midpoint"):
            raise RuntimeError("injected plot failure")  # must not cost the measured cell
        x = np.asarray(samples)
        return save_panels([Panel(title, {"samples": x[:, 0], "reference": np.asarray(reference)[:, 0]})], path)

    doc = run_spec(fakes.make_spec(sample_plot=plot), "smoke", tmp_path, progress=False, plots=True)
    out = tmp_path / "smoke"
    assert sorted(seen) == sorted(c["id"] for c in doc["cells"]) and all(c["status"] == "ok" for c in doc["cells"])
    shift = sample_plot_path(out, "fake", "shift/euler/nfe1")
    assert shift == out / "plots" / "samples" / "fake" / "shift_euler_nfe1.png" and shift.is_file()
    failed = [t for t in seen if t.startswith("untrained/midpoint")]
    assert failed and not any(sample_plot_path(out, "fake", t).exists() for t in failed)
    md = (out / "fake.md").read_text()
    assert "### Samples against the reference (best cell per method)" in md
    for c in best_cells(doc):
        link = sample_plot_path(out, "fake", c["id"]).relative_to(out).as_posix()
        assert (f"]({link})" in md) == sample_plot_path(out, "fake", c["id"]).is_file()
    # no figures without plots
    run_spec(fakes.make_spec(sample_plot=plot), "smoke", tmp_path / "np", progress=False, plots=False)
    assert not (tmp_path / "np" / "smoke" / "plots").exists()


def test_init_from_starts_from_the_source_weights_and_is_part_of_the_fingerprint(fakes, tmp_path) -> None:
    import dataclasses

    import torch

    from flowsci.benchspec import Method

    starts: list[torch.Tensor] = []

    def finetune(model, dm, steps, device):  # records where it starts, then moves the weights
        starts.append(model.net.b.detach().clone())
        with torch.no_grad():
            model.net.b.add_(1.0)

    base = fakes.make_spec(nfe_grid=(1,), solvers=("euler",))
    shift = dataclasses.replace(base.methods[0], fit=fakes.closed_form_fit)
    tuned = Method("shift-ft", build=shift.build, sample=shift.sample, fit=finetune, init_from="shift", train_steps=1)
    spec = dataclasses.replace(base, methods=[shift, tuned])
    doc = run_spec(spec, "smoke", tmp_path, progress=False, plots=False)
    dm = fakes.GaussianDataModule()
    dm.setup("fit")
    torch.testing.assert_close(starts[0], dm.train_set.tensors[0].mean(0))  # the source's trained optimum
    cells = _cells(doc)
    assert cells["shift-ft/euler/nfe1"]["status"] == "ok"
    assert cells["shift-ft/euler/nfe1"]["metrics"] != cells["shift/euler/nfe1"]["metrics"]
    assert {m["name"]: m.get("init_from") for m in doc["spec"]["methods"]}["shift-ft"] == "shift"
    longer = dataclasses.replace(spec, methods=[dataclasses.replace(shift, train_steps=20), tuned])
    assert longer.train_fingerprint(tuned) != spec.train_fingerprint(tuned)  # the source's training counts
    with pytest.raises(ValueError, match="earlier method"):
        dataclasses.replace(base, methods=[tuned, shift])


def test_a_method_may_draw_its_own_number_of_samples(fakes, tmp_path) -> None:
    import dataclasses

    base = fakes.make_spec(nfe_grid=(1,), solvers=("euler",))
    drawn: list[int] = []
    inner = base.methods[0].sample or base.sample

    def counting(model, request):
        drawn.append(request.num)
        return inner(model, request)

    shift = dataclasses.replace(base.methods[0], fit=fakes.closed_form_fit, sample=counting)
    more = dataclasses.replace(shift, name="shift-more", num_samples=900, weights_of="shift", fit=None)
    spec = dataclasses.replace(base, methods=[shift, more], warmup_samples=0)
    doc = run_spec(spec, "smoke", tmp_path, progress=False, plots=False)
    cells = _cells(doc)
    assert drawn == [400, 900]  # the spec's count, then the override (the reference keeps 400)
    assert cells["shift/euler/nfe1"]["num_samples"] == 400 and cells["shift-more/euler/nfe1"]["num_samples"] == 900
    c = cells["shift-more/euler/nfe1"]
    assert c["sample_time_per_sample_s"] == pytest.approx(c["sample_time_s"] / 900)
    assert {m["name"]: m.get("num_samples") for m in doc["spec"]["methods"]} == {"shift": None, "shift-more": 900}
    assert "400 samples per cell (`shift-more` 900)" in (tmp_path / "smoke" / "fake.md").read_text()
    validate_result(doc)
    # the override is part of the cell fingerprint: changing it reruns the cell
    other = dataclasses.replace(spec, methods=[shift, dataclasses.replace(more, num_samples=800)])
    cell = next(c for c in spec.cells() if c.method == "shift-more")
    assert other.cell_fingerprint(cell) != spec.cell_fingerprint(cell)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        dataclasses.replace(spec, methods=[shift, dataclasses.replace(more, num_samples=0)])


def test_a_method_that_resets_torch_threads_does_not_change_the_run(fakes, tmp_path, caplog) -> None:
    import dataclasses
    import logging

    before = torch.get_num_threads()
    other = before + 1

    def greedy_fit(model, dm, steps, device):  # as a library that sizes its own thread pool
        torch.set_num_threads(other)
        fakes.closed_form_fit(model, dm, steps, device)

    base = fakes.make_spec(nfe_grid=(1, 2), solvers=("euler",))
    spec = dataclasses.replace(base, methods=[dataclasses.replace(base.methods[0], fit=greedy_fit), base.methods[1]])
    try:
        with caplog.at_level(logging.WARNING, logger="flowsci.benchmarks.runner"):
            doc = run_spec(spec, "smoke", tmp_path, progress=False, plots=False, cache=False)
        assert torch.get_num_threads() == before
        assert doc["environment"]["torch_threads"] == before
        assert any("training shift changed torch's thread count" in r.getMessage() for r in caplog.records)
    finally:
        torch.set_num_threads(before)
