"""BenchmarkSpec: the cell grid, suite sizing, validation and fingerprints; the registry."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.benchmarks.registry import DOMAINS, available_domains, load_spec
from flowsci.benchspec import BenchmarkSpec, Method, Metric, mean_se


def test_cells_are_nfe_matched(fakes) -> None:
    spec = fakes.make_spec(solvers=("euler", "midpoint", "rk4", "dopri5"), nfe_grid=(1, 2, 4, 8))
    ids = [c.id for c in spec.cells() if c.method == "shift"]
    assert ids == [
        "shift/euler/nfe1",
        "shift/euler/nfe2",
        "shift/euler/nfe4",
        "shift/euler/nfe8",
        "shift/midpoint/nfe2",
        "shift/midpoint/nfe4",
        "shift/midpoint/nfe8",
        "shift/rk4/nfe4",
        "shift/rk4/nfe8",
        "shift/dopri5/adaptive",
    ]
    for c in spec.cells():
        if c.nfe is not None:
            assert c.steps * {"euler": 1, "midpoint": 2, "rk4": 4}[c.solver] == c.nfe
        else:
            assert c.steps is None


def test_method_overrides_grid(fakes) -> None:
    base = fakes.make_spec()
    one_step = Method("one-step", build=lambda dm: None, solvers=("euler",), nfe_grid=(1,))
    spec = fakes.make_spec(methods=[*base.methods, one_step])
    assert [c.id for c in spec.cells() if c.method == "one-step"] == ["one-step/euler/nfe1"]


def test_ddpm_rows_carry_their_sampler_name_and_stay_nfe_matched(fakes) -> None:
    base = fakes.make_spec(nfe_grid=(5, 10))
    ddpm = Method("ddpm", build=lambda dm: None, solvers=("ddim",))
    cells = [c for c in fakes.make_spec(methods=[*base.methods, ddpm], nfe_grid=(5, 10)).cells() if c.method == "ddpm"]
    assert [(c.id, c.steps) for c in cells] == [("ddpm/ddim/nfe5", 5), ("ddpm/ddim/nfe10", 10)]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"solvers": ("leapfrog",)}, "unknown solver"),
        ({"methods": []}, "at least one method"),
        ({"metrics": []}, "at least one metric"),
        ({"num_samples": 0}, "num_samples"),
        ({"nfe_grid": (0, 1)}, "NFE values"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_spec_validation(fakes, overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        fakes.make_spec(**overrides)


def test_duplicate_method_names_rejected(fakes) -> None:
    m = fakes.make_spec().methods[0]
    with pytest.raises(ValueError, match="duplicate"):
        fakes.make_spec(methods=[m, m])


def test_fingerprints_track_what_determines_a_result(fakes) -> None:
    a = fakes.make_spec()
    cell = a.cells()[0]
    assert a.cell_fingerprint(cell) == fakes.make_spec().cell_fingerprint(cell)
    assert a.cell_fingerprint(cell) != fakes.make_spec(num_samples=401).cell_fingerprint(cell)
    assert a.cell_fingerprint(cell) != fakes.make_spec(train_steps=11).cell_fingerprint(cell)
    assert a.cell_fingerprint(cell) != fakes.make_spec(seed=1).cell_fingerprint(cell)
    # a metric's declared columns are part of it: a table that gains or loses a column is recomputed
    two = [Metric("pair", lambda x, y: {"a": 0.0, "b": 1.0}, higher_is_better={"a": False, "b": True})]
    one = [Metric("pair", lambda x, y: {"a": 0.0}, higher_is_better={"a": False})]
    assert fakes.make_spec(metrics=two).cell_fingerprint(cell) != fakes.make_spec(metrics=one).cell_fingerprint(cell)
    assert fakes.make_spec(metrics=two).train_fingerprint(a.method("shift")) == a.train_fingerprint(a.method("shift"))
    # the training fingerprint ignores the sampling grid
    m = a.method("shift")
    assert a.train_fingerprint(m) == fakes.make_spec(nfe_grid=(8,), num_samples=3).train_fingerprint(m)


def test_describe_is_json_ready(fakes) -> None:
    import json

    d = fakes.make_spec().describe()
    json.dumps(d)
    assert [m["name"] for m in d["methods"]] == ["shift", "untrained"]
    assert d["methods"][1]["baseline"] is True and d["methods"][1]["train_steps"] == 0


def test_registry_loads_toy2d_lazily() -> None:
    assert DOMAINS["toy2d"] == "flowsci.benchmarks.toy2d:spec"
    assert "toy2d" in available_domains()
    spec = load_spec("toy2d", "smoke")
    assert isinstance(spec, BenchmarkSpec) and spec.name == "toy2d"
    assert any(m.baseline for m in spec.methods)
    assert load_spec("toy2d", "quick").train_steps > spec.train_steps
    with pytest.raises(KeyError, match="unknown benchmark domain"):
        load_spec("nope", "smoke")
    with pytest.raises(ValueError, match="must be 'module:function'"):
        load_spec("x", "smoke", registry={"x": "flowsci.benchmarks.compare"})
    with pytest.raises(ValueError, match="no function 'nope'"):
        load_spec("x", "smoke", registry={"x": "flowsci.benchmarks.toy2d:nope"})


def test_registry_module_function_entries() -> None:
    reg = {"toy_fn": "flowsci.benchmarks.toy2d:spec"}
    assert available_domains(reg) == ["toy_fn"]
    assert load_spec("toy_fn", "smoke", registry=reg).name == "toy2d"
    assert DOMAINS["crystals_gen_c24"].endswith(":carbon24_spec")


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("cpu", {"accelerator": "cpu", "devices": 1}),
        ("cuda", {"accelerator": "gpu", "devices": [0]}),
        ("cuda:1", {"accelerator": "gpu", "devices": [1]}),
    ],
)
def test_trainer_device_sends_custom_fits_to_the_runners_device(device, expected) -> None:
    from flowsci.benchspec import trainer_device

    assert trainer_device(device) == expected
    assert trainer_device(torch.device(device)) == expected


def test_mean_se_on_known_numbers():
    mean, se = mean_se([0.6, 0.5, 0.7])  # sd = 0.1 (ddof 1)
    assert mean == pytest.approx(0.6)
    assert se == pytest.approx(0.1 / math.sqrt(3))
    assert mean_se([2.0, 2.0, 2.0, 2.0]) == (2.0, 0.0)
    m1, se1 = mean_se([0.4])
    assert m1 == 0.4 and math.isnan(se1)
    with pytest.raises(ValueError, match="non-empty"):
        mean_se([])
