"""The benchmark runner: train, sample and score every (domain, method, solver, NFE) cell.

The runner is domain-agnostic: everything it knows comes from a :class:`~flowsci.benchspec.BenchmarkSpec`.
For each domain it

1. builds the data module and the held-out reference (once),
2. trains each method once (default: a Lightning ``Trainer`` for ``train_steps`` optimiser steps; the trained
   weights are cached under ``<out>/<suite>/.cache/`` so an interrupted run does not retrain),
3. samples every (solver, NFE) cell from the same prior seed, timing the sampler and measuring peak memory,
   counting network calls, and scoring the samples with every metric,
4. writes ``<out>/<suite>/<domain>.json`` (validated against :data:`~flowsci.benchmarks.schema.RESULT_SCHEMA`)
   after every cell, then the Markdown leaderboard and PNG plots.

Resume (the default) keeps finished cells whose fingerprint matches the current spec (and whose file was measured
on the same device with the same torch thread count) and reruns the rest;
``force=True`` reruns everything. A failing cell (or a failing training, or a domain whose module cannot be
imported) is recorded with its error and traceback, and the run goes on.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import resource
import sys
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from flowsci.benchmarks.report import sample_plot_path
from flowsci.benchmarks.schema import SCHEMA_VERSION, SchemaError, validate_result
from flowsci.benchspec import BenchmarkSpec, Cell, Method, SampleRequest, fit_method, read_trained, save_trained
from flowsci.io import atomic_write_text

__all__ = [
    "PeakMemory",
    "environment",
    "load_result",
    "run_benchmarks",
    "run_spec",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

_BASE_PACKAGES = ("flowsci", "torch", "pytorch-lightning", "numpy", "scipy", "torchdiffeq", "POT")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` as JSON to ``path`` atomically (temporary file in the same folder + ``os.replace``)."""
    atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False) + "\n")


def load_result(path: str | Path) -> dict[str, Any]:
    """Read and validate a results file.

    Raises:
        ValueError: If the file is not valid JSON or does not match the schema (the message names the file).

    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON results file ({e})") from None
    try:
        validate_result(doc, source=str(path))
    except SchemaError as e:
        raise ValueError(str(e)) from None
    return doc


# --------------------------------------------------------------------------------------------------- environment
def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        m = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        if m:
            cpu = m.group(1).strip()
    return f"cpu:{cpu}"


def environment(device: torch.device, packages: Sequence[str] = ()) -> dict[str, Any]:
    """Versions, device, platform and thread count recorded with every result."""
    return {
        "versions": {p: _version(p) for p in (*_BASE_PACKAGES, *packages)},
        "device": _device_name(device),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": int(torch.get_num_threads()),
        "cpu_count": os.cpu_count(),
    }


# ------------------------------------------------------------------------------------------------------- memory
def _rss_kb(field: str) -> int | None:
    with contextlib.suppress(OSError, AttributeError):
        m = re.search(rf"{field}:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
        if m:
            return int(m.group(1))
    return None


class PeakMemory:
    """Peak memory of a block of code.

    On CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory of the block).
    On CPU (Linux): the process' peak resident set size ``VmHWM``, reset at entry through
    ``/proc/self/clear_refs`` so it is the block's own peak (it includes the interpreter and torch, about a few
    hundred MB; :attr:`delta_mb` subtracts the RSS at entry). Elsewhere: ``getrusage`` ``ru_maxrss``, the
    process' lifetime peak (an upper bound), flagged in :attr:`method`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.delta_mb: float | None = None
        self.method = ""

    def __enter__(self) -> PeakMemory:
        self._start_kb = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_b = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self._start_kb = _rss_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM (peak RSS of the process, reset per block)"
        except OSError:
            self.method = "ru_maxrss (peak RSS over the process lifetime)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_mb = peak / 2**20
            self.delta_mb = (peak - self._start_b) / 2**20
            return
        if self.method.startswith("VmHWM"):
            hwm = _rss_kb("VmHWM")
        else:
            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
            if sys.platform == "darwin":
                hwm //= 1024
        if hwm is not None:
            self.peak_mb = hwm / 1024
            if self._start_kb is not None:
                self.delta_mb = max(hwm - self._start_kb, 0) / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _count_calls(module: Any) -> Iterator[list[int]]:
    """Count forward calls of ``module`` (an ``nn.Module``); yields a one-element list holding the count."""
    count = [0]
    if not isinstance(module, torch.nn.Module):
        yield count
        return

    def hook(*_: Any) -> None:
        count[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    import pytorch_lightning  # noqa: F401  (imported first: it sets its loggers' levels on import)

    names = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*(GPU|TPU|HPU) available.*")
            yield
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


# ------------------------------------------------------------------------------------------------------ training
def _train(
    spec: BenchmarkSpec,
    method: Method,
    dm: Any,
    device: torch.device,
    cache_dir: Path | None,
    reuse: bool,
    trained: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Build and train ``method`` (or, if ``reuse``, load it from the cache); returns the model and its record.

    A method with ``weights_of`` loads the weights its source method trained in this run (``trained``: method name
    -> (state dict, record)), else the source's cache entry, else trains them with the source's settings. A
    method with ``init_from`` starts from the weights its source trained in this run (or cached), then trains.
    """
    import pytorch_lightning as pl

    source = spec.trained_by(method)
    steps = spec.train_steps_of(method)
    cache = spec.train_cache_file(cache_dir, method) if cache_dir is not None else None
    pl.seed_everything(spec.seed, workers=True, verbose=False)
    model = method.build(dm)
    if trained is not None and source is not method and source.name in trained:
        state, info = trained[source.name]
        model.load_state_dict(state)
        return model.to(device), dict(info, weights_of=source.name)
    if reuse and cache is not None and cache.exists():
        try:
            state, info = read_trained(cache)
            model.load_state_dict(state)
            info = dict(info, train_cached=True)
            if source is not method:
                info["weights_of"] = source.name
            return model.to(device), info
        except Exception as e:  # a stale or truncated cache file: retrain
            log.warning("ignoring training cache %s (%s)", cache, e)
    if method.init_from is not None:
        start = _source_state(spec, spec.method(method.init_from), cache_dir, trained)
        model.load_state_dict(start, strict=False)
    done = 0
    with PeakMemory(device) as mem:
        _sync(device)
        t0 = time.perf_counter()
        if steps > 0:
            done = fit_method(spec, method, model, dm, steps, device)
        _sync(device)
        elapsed = time.perf_counter() - t0
    info = {
        "train_time_s": elapsed if steps > 0 else 0.0,
        "train_steps": done,
        "train_steps_per_s": (done / elapsed) if steps > 0 and elapsed > 0 else None,
        "train_peak_memory_mb": mem.peak_mb if steps > 0 else None,
        "train_cached": False,
    }
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if cache is not None:
        save_trained(cache, state, info)
    if trained is not None and any(source.name in (m.weights_of, m.init_from) for m in spec.methods):
        trained[source.name] = (state, info)
    if source is not method:
        info = dict(info, weights_of=source.name)
    if method.init_from is not None:
        info = dict(info, init_from=method.init_from)
    return model.to(device), info


def _source_state(
    spec: BenchmarkSpec,
    source: Method,
    cache_dir: Path | None,
    trained: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] | None,
) -> dict[str, torch.Tensor]:
    """Trained weights of ``source`` (an ``init_from`` target): from this run, else from its cache file."""
    if trained is not None and source.name in trained:
        return trained[source.name][0]
    if cache_dir is not None:
        cache = spec.train_cache_file(cache_dir, source)
        if cache.exists():
            return read_trained(cache)[0]
    raise RuntimeError(f"method {source.name!r} has no trained weights in this run to start from")


# ------------------------------------------------------------------------------------------------------- cells
def _finite_or_none(v: Any) -> float | None:
    v = float(v)
    return v if v == v and abs(v) != float("inf") else None


def _empty_record(spec: BenchmarkSpec, cell: Cell, baseline: bool) -> dict[str, Any]:
    return {
        "id": cell.id,
        "method": cell.method,
        "baseline": baseline,
        "solver": cell.solver,
        "nfe_target": cell.nfe,
        "steps": cell.steps,
        "status": "error",
        "error": None,
        "traceback": None,
        "seed": int(spec.seed),
        "fingerprint": spec.cell_fingerprint(cell),
        "num_samples": spec.num_samples_of(spec.method(cell.method)),
        "nfe": None,
        "nfe_counted": None,
        "train_time_s": None,
        "train_steps": None,
        "train_steps_per_s": None,
        "train_cached": False,
        "train_peak_memory_mb": None,
        "sample_time_s": None,
        "sample_time_per_sample_s": None,
        "metric_time_s": None,
        "peak_memory_mb": None,
        "peak_memory_delta_mb": None,
        "memory_method": "",
        "metrics": {},
        "finished_at": _now(),
    }


def _error_text(e: BaseException, phase: str) -> tuple[str, str]:
    return f"{phase}: {type(e).__name__}: {e}", traceback.format_exc(limit=20)


def _measure(
    spec: BenchmarkSpec,
    method: Method,
    cell: Cell,
    model: Any,
    dm: Any,
    reference: Any,
    device: torch.device,
    train_info: Mapping[str, Any],
    columns: dict[str, dict[str, Any]],
    plot_dir: Path | None = None,
) -> dict[str, Any]:
    rec = _empty_record(spec, cell, method.baseline)
    rec.update(
        {k: train_info.get(k) for k in ("train_time_s", "train_steps", "train_steps_per_s", "train_peak_memory_mb")}
    )
    rec["train_cached"] = bool(train_info.get("train_cached", False))
    num = spec.num_samples_of(method)
    request = SampleRequest(dm, reference, num, cell.solver, cell.steps, cell.nfe, spec.seed)
    sampler = method.sample or spec.sample
    counted = getattr(model, spec.nfe_counter, None) if spec.nfe_counter else None
    phase = "sampling"
    try:
        if hasattr(model, "eval"):
            model.eval()
        with PeakMemory(device) as mem, _count_calls(counted) as calls, torch.no_grad():
            _sync(device)
            t0 = time.perf_counter()
            solution = sampler(model, request)
            _sync(device)
            elapsed = time.perf_counter() - t0
        rec.update(
            sample_time_s=elapsed,
            sample_time_per_sample_s=elapsed / num,
            peak_memory_mb=mem.peak_mb,
            peak_memory_delta_mb=mem.delta_mb,
            memory_method=mem.method,
            nfe_counted=calls[0] if isinstance(counted, torch.nn.Module) else None,
        )
        nfe = getattr(solution, "nfe", None)
        rec["nfe"] = int(nfe) if nfe is not None else rec["nfe_counted"]
        phase = "postprocess"
        samples = spec.postprocess(solution)
        metrics: dict[str, float | None] = {}
        t0 = time.perf_counter()
        for metric in spec.metrics:
            phase = f"metric {metric.name!r}"
            value = metric.fn(samples, reference)
            items = value.items() if isinstance(value, Mapping) else [(metric.name, value)]
            for key, v in items:
                metrics[key] = _finite_or_none(v)
                columns.setdefault(key, {"higher_is_better": metric.direction(key), "description": metric.description})
        rec["metric_time_s"] = time.perf_counter() - t0
        rec["metrics"] = metrics
        rec["status"] = "ok"
    except Exception as e:
        rec["error"], rec["traceback"] = _error_text(e, phase)
    else:
        if plot_dir is not None and spec.sample_plot is not None:
            try:
                spec.sample_plot(samples, reference, sample_plot_path(plot_dir, spec.name, cell.id), cell.id)
            except Exception as e:  # a figure must not cost the measured cell
                log.warning("%s/%s: sample plot failed: %s", spec.name, cell.id, e)
    rec["finished_at"] = _now()
    return rec


def _noise_floor(spec: BenchmarkSpec, dm: Any, reference: Any) -> dict[str, float | None]:
    """Every metric of a second held-out draw against the reference (``None`` where a metric fails)."""
    out: dict[str, float | None] = {}
    try:
        other = spec.reference_data(dm, spec.num_samples, spec.seed + 1)
    except Exception as e:
        log.warning("noise floor of %s: second reference draw failed (%s)", spec.name, e)
        return out
    for metric in spec.metrics:
        try:
            value = metric.fn(other, reference)
        except Exception as e:
            log.warning("noise floor of %s: metric %s failed (%s)", spec.name, metric.name, e)
            out[metric.name] = None
            continue
        items = value.items() if isinstance(value, Mapping) else [(metric.name, value)]
        out.update({k: _finite_or_none(v) for k, v in items})
    return out


def _warmup(spec: BenchmarkSpec, method: Method, cell: Cell, model: Any, dm: Any, reference: Any) -> None:
    """One small untimed draw before a method's first timed cell (errors surface in the timed cell)."""
    if spec.warmup_samples <= 0:
        return
    num = min(spec.warmup_samples, spec.num_samples_of(method))
    request = SampleRequest(dm, reference, num, cell.solver, cell.steps, cell.nfe, spec.seed)
    with contextlib.suppress(Exception), torch.no_grad():
        if hasattr(model, "eval"):
            model.eval()
        (method.sample or spec.sample)(model, request)


# ------------------------------------------------------------------------------------------------------ driver
def _resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _document(
    suite: str,
    domain: str,
    spec: BenchmarkSpec | None,
    device: torch.device,
    records: list[dict[str, Any]],
    columns: Mapping[str, Any],
    error: str | None = None,
) -> dict[str, Any]:
    if error is not None:
        status = "error"
    elif records and all(r["status"] == "ok" for r in records):
        status = "ok"
    elif any(r["status"] == "ok" for r in records):
        status = "partial"
    else:
        status = "error"
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "domain": domain,
        "status": status,
        "error": error,
        "spec": spec.describe() if spec is not None else None,
        "environment": environment(device, spec.packages if spec is not None else ()),
        "columns": dict(columns),
        "cells": records,
        "reference": [r.to_json() for r in spec.references] if spec is not None else [],
        "updated_at": _now(),
    }


def run_spec(
    spec: BenchmarkSpec,
    suite: str,
    out: str | Path = "results",
    *,
    force: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    plots: bool = True,
    cache: bool = True,
) -> dict[str, Any]:
    """Run one domain's benchmark and write its JSON, Markdown and plots under ``<out>/<suite>/``.

    Args:
        spec: The domain's spec, already sized for ``suite`` (the registered ``spec(suite)``).
        suite: Suite name (recorded, and the output sub-folder).
        out: Results root folder.
        force: Rerun every cell (and retrain) even if finished results exist.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        progress: Show a progress bar (tqdm, on stderr).
        plots: Write the PNG plots.
        cache: Cache trained weights under ``<out>/<suite>/.cache/<domain>/`` (reused on resume).

    Returns:
        The results document that was written.

    """
    from flowsci.benchmarks.report import write_domain_report

    dev = _resolve_device(device)
    out_dir = Path(out) / suite
    path = out_dir / f"{spec.name}.json"
    old: dict[str, Any] = {}
    prev: dict[str, Any] = {}
    columns: dict[str, dict[str, Any]] = {}
    if path.exists() and not force:
        prev = load_result(path)
        env = prev["environment"]
        if (env["device"], env["torch_threads"]) == (_device_name(dev), torch.get_num_threads()):
            old = {c["id"]: c for c in prev["cells"]}
            columns.update(prev.get("columns", {}))
        else:  # timings from another machine or thread count must not be mixed with this run's
            log.warning(
                "%s was measured on %s with %d threads: rerunning every cell", path, env["device"], env["torch_threads"]
            )
    cells = spec.cells()
    records: dict[str, dict[str, Any]] = {}
    for cell in cells:
        prev_rec = old.get(cell.id)
        if prev_rec and prev_rec["status"] == "ok" and prev_rec["fingerprint"] == spec.cell_fingerprint(cell):
            records[cell.id] = prev_rec
    pending = [c for c in cells if c.id not in records]
    cache_dir = out_dir / ".cache" / spec.name if cache else None

    reuse_floor = spec.noise_floor and bool(old) and "noise_floor" in prev
    floor: dict[str, float | None] = dict(prev["noise_floor"]) if reuse_floor else {}
    threads = torch.get_num_threads()

    def keep_threads(what: str) -> None:
        # a library (or a method's own code) may reset torch's thread count: timings and the recorded environment
        # must be the run's, so set it back and say who changed it
        if torch.get_num_threads() != threads:
            log.warning("%s changed torch's thread count to %d: set back to %d", what, torch.get_num_threads(), threads)
            torch.set_num_threads(threads)

    def flush() -> dict[str, Any]:
        ordered = [records[c.id] for c in cells if c.id in records]
        doc = _document(suite, spec.name, spec, dev, ordered, columns)
        if floor:
            doc["noise_floor"] = dict(floor)
        validate_result(doc, source=str(path))
        write_json_atomic(path, doc)
        return doc

    def fail(todo: Sequence[Cell], e: BaseException, phase: str) -> None:
        msg, tb = _error_text(e, phase)
        for c in todo:
            rec = _empty_record(spec, c, spec.method(c.method).baseline)
            rec["error"], rec["traceback"] = msg, tb
            records[c.id] = rec
        flush()

    bar = _progress(total=len(pending), desc=f"{suite}/{spec.name}", enabled=progress)
    try:
        with _quiet_lightning():
            if pending or (spec.noise_floor and not floor):
                dm = reference = None
                try:
                    dm = spec.datamodule()
                    reference = spec.reference_data(dm, spec.num_samples, spec.seed)
                except Exception as e:
                    fail(pending, e, "data")
                    bar.update(len(pending))
                    pending = []
                else:
                    if spec.noise_floor:
                        floor.clear()
                        floor.update(_noise_floor(spec, dm, reference))
                    keep_threads("data and noise floor")
                trained: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]] = {}
                for method in spec.methods:
                    todo = [c for c in pending if c.method == method.name]
                    if not todo:
                        continue
                    bar.set_postfix_str(f"training {method.name}")
                    try:
                        model, info = _train(spec, method, dm, dev, cache_dir, reuse=not force, trained=trained)
                    except Exception as e:
                        keep_threads(f"training {method.name}")
                        fail(todo, e, "training")
                        bar.update(len(todo))
                        continue
                    keep_threads(f"training {method.name}")
                    _warmup(spec, method, todo[0], model, dm, reference)
                    keep_threads(f"warm-up of {method.name}")
                    for cell in todo:
                        bar.set_postfix_str(cell.id)
                        records[cell.id] = _measure(
                            spec, method, cell, model, dm, reference, dev, info, columns, out_dir if plots else None
                        )
                        keep_threads(cell.id)
                        flush()
                        bar.update(1)
                    del model
        doc = flush()
    finally:
        bar.close()
    write_domain_report(doc, out_dir, plots=plots)
    return doc


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="cell", dynamic_ncols=True, file=sys.stderr)


def run_benchmarks(
    suite: str,
    domains: Sequence[str] | None = None,
    out: str | Path = "results",
    *,
    force: bool = False,
    device: str | torch.device = "auto",
    threads: int | None = None,
    progress: bool = True,
    plots: bool = True,
    registry: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run ``suite`` on ``domains`` (default: every registered domain whose module is present).

    A domain whose spec cannot be loaded (missing optional dependency, bad spec) is recorded as a results file
    with ``status: "error"`` and the run goes on with the next domain.

    Args:
        suite: ``"smoke"``, ``"quick"`` or ``"full"``.
        domains: Domain names (keys of :data:`flowsci.benchmarks.registry.DOMAINS`).
        out: Results root; files go to ``<out>/<suite>/``.
        force: Rerun finished cells.
        device: Device for training and sampling (``"auto"``: CUDA if available).
        threads: ``torch.set_num_threads`` for the run (``None``: leave as is).
        progress: Show progress bars.
        plots: Write PNG plots.
        registry: Domain -> module mapping (default :data:`~flowsci.benchmarks.registry.DOMAINS`).

    Returns:
        Domain -> results document.

    """
    from flowsci.benchmarks.registry import DOMAINS, available_domains, load_spec
    from flowsci.benchmarks.report import write_domain_report, write_index

    reg = registry or DOMAINS
    if threads is not None:
        torch.set_num_threads(int(threads))
    names = list(domains) if domains else available_domains(reg)
    unknown = [d for d in names if d not in reg]
    if unknown:
        raise KeyError(f"unknown benchmark domain(s) {unknown}; registered: {sorted(reg)}")
    out_dir = Path(out) / suite
    docs: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            spec = load_spec(name, suite, reg)
        except Exception as e:
            msg, _ = _error_text(e, "loading spec")
            doc = _document(suite, name, None, _resolve_device(device), [], {}, error=msg)
            write_json_atomic(out_dir / f"{name}.json", doc)
            write_domain_report(doc, out_dir, plots=False)
            docs[name] = doc
            log.error("%s/%s: %s", suite, name, msg)
            continue
        docs[name] = run_spec(spec, suite, out, force=force, device=device, progress=progress, plots=plots)
    write_index(out_dir)
    return docs
