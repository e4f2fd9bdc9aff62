"""The domain contract (flowsci.contract), checked for every registered domain.

A domain registered under the ``flowsci.domains`` entry point gets these tests for free: its tiny config fits a
few steps through ``flowsci fit`` (and under DDP on two CPU processes), ``flowsci sample`` writes native files and
a figure, the checkpoint reloads through the one safe loader and samples identically for a fixed seed,
``evaluate`` returns its table, and its smoke benchmark runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from flowsci.cli import main
from flowsci.contract import Domain, GenerativeModel, GenerativeModule
from flowsci.registry import domain_names, load_domain

torch.set_num_threads(1)
DOMAINS = domain_names()
FIT = ["--trainer.max_steps=3", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _domain(name: str) -> Domain:
    try:
        return load_domain(name)
    except ImportError as err:  # CI installs every extra; a partial local install skips with the reason
        pytest.skip(f"domain {name!r} not importable here: {err}")


@pytest.fixture(scope="module", params=DOMAINS)
def fitted(request, tmp_path_factory) -> tuple[Domain, Path]:
    """Each domain's tiny config fitted for 3 steps through ``flowsci fit``; returns (domain, last.ckpt)."""
    domain = _domain(request.param)
    root = tmp_path_factory.mktemp(f"fit-{domain.name}")
    main(["fit", "--config", domain.tiny_config, f"--trainer.default_root_dir={root}", *FIT, *domain.fit_args])
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, f"{domain.name}: flowsci fit left no last.ckpt under {root}"
    return domain, ckpts[-1]


def test_domain_declares_the_contract(fitted) -> None:
    domain, _ = fitted
    for cls in (domain.module, *domain.modules):
        assert issubclass(cls, GenerativeModule), cls
    assert domain.package.startswith(("flowsci.domains.",)) or domain.config_package != "flowsci.configs"
    assert callable(domain.evaluate) and callable(domain.plot) and callable(domain.reference)


def test_sample_cli_writes_native_files_and_a_figure(fitted, tmp_path) -> None:
    domain, ckpt = fitted
    out = tmp_path / "samples"
    main(["sample", "--ckpt", str(ckpt), "--out", str(out), "--seed", "3", *domain.sample_args])
    files = sorted(p for p in out.rglob("*") if p.is_file())
    assert any(p.suffix == ".png" for p in files), files
    assert any(p.suffix != ".png" for p in files), files
    assert all(p.stat().st_size > 0 for p in files)
    with pytest.raises(SystemExit) as exc:  # a used --out is refused; the earlier files stay
        main(["sample", "--ckpt", str(ckpt), "--out", str(out), *domain.sample_args])
    assert exc.value.code == 2 and sorted(p for p in out.rglob("*") if p.is_file()) == files


def _sample_kwargs(domain: Domain) -> dict[str, Any]:
    """``sample()`` keywords equivalent to the domain's ``flowsci sample`` arguments."""
    from flowsci.cli.sample import parse_set

    args = list(domain.sample_args)
    kwargs: dict[str, Any] = {}
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    kwargs.update(parse_set(sets))
    for flag, key in (("--num", "num"), ("--steps", "steps")):
        if flag in args:
            kwargs[key] = int(args[args.index(flag) + 1])
    return kwargs


def test_checkpoint_reloads_and_samples_identically(fitted) -> None:
    domain, ckpt = fitted
    model = domain.module.from_checkpoint(ckpt)
    assert isinstance(model, GenerativeModel) and not model.training
    kwargs = _sample_kwargs(domain)
    num = kwargs.pop("num", None)
    first = model.sample(num, seed=11, **kwargs) if num is not None else model.sample(seed=11, **kwargs)
    again = domain.module.from_checkpoint(ckpt)
    second = again.sample(num, seed=11, **kwargs) if num is not None else again.sample(seed=11, **kwargs)
    torch.testing.assert_close(first.x, second.x)
    assert first.seed == 11 and first.nfe >= 1


def test_evaluate_returns_a_table(fitted) -> None:
    domain, ckpt = fitted
    model = domain.module.from_checkpoint(ckpt)
    kwargs = _sample_kwargs(domain)
    num = kwargs.pop("num", None)
    samples = model.sample(num, seed=0, **kwargs) if num is not None else model.sample(seed=0, **kwargs)
    import pandas as pd

    table = domain.evaluate(samples, domain.reference(len(samples.x) if num is None else num))
    frame = table if isinstance(table, pd.DataFrame) else table.to_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) >= 1 and len(frame.columns) >= 1


def test_tiny_config_trains_under_ddp_on_two_cpu_processes(fitted, tmp_path) -> None:
    domain, _ = fitted
    cmd = [
        sys.executable,
        "-m",
        "flowsci.cli",
        "fit",
        "--config",
        domain.tiny_config,
        f"--trainer.strategy={domain.ddp_strategy}",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={tmp_path}",
        *FIT,
        *domain.fit_args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = torch.load(sorted(tmp_path.rglob("last.ckpt"))[-1], weights_only=True, map_location="cpu")
    assert ckpt["global_step"] == 3


@pytest.mark.parametrize("name", DOMAINS)
def test_smoke_benchmark_runs_through_the_cli(name, tmp_path) -> None:
    import json

    from flowsci.benchmarks.schema import validate_result

    domain = _domain(name)
    assert domain.smoke_benchmark is not None, f"domain {name!r} declares no smoke benchmark"
    bench = domain.smoke_benchmark
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--suite", "smoke", "--domains", bench, "--out", str(tmp_path), "--threads", "1"])
    assert exc.value.code == 0
    doc = json.loads((tmp_path / "smoke" / f"{bench}.json").read_text())
    validate_result(doc)
    errors = [c.get("error") for c in doc["cells"] if c["status"] != "ok"]
    assert doc["status"] == "ok" and doc["cells"] and not errors, errors
    assert (tmp_path / "smoke" / f"{bench}.md").is_file()
