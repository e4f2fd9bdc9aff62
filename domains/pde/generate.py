"""Generate PDE trajectory datasets with the torch solvers: chunked, resumable, on a Dask cluster or locally.

``python -m flowsci.domains.pde.generate burgers --n 2000 --out data.zarr`` writes a CF-annotated Zarr store
chunk by chunk (``--chunk`` trajectories each); every chunk is written into its region of the store by the
worker that made it, and the finished chunks are recorded in ``<out>.progress.json``, so an interrupted run
resumes where it stopped (rerun the same command). Trajectory ``i`` always comes from
``numpy.random.default_rng([seed, i])``, so the data do not depend on the chunking or the number of workers.

``--scheduler`` chooses where the chunks run: ``local`` (default; a ``distributed.LocalCluster`` of
``--workers`` single-threaded processes), ``sync`` (this process, no Dask), or the address of a running Dask
scheduler (``tcp://host:8786``; its workers must see ``--out``). A ``.nc`` or ``.h5`` output is generated into
``<out>.partial.zarr`` (resumable too) and converted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowsci.errors import InputError, require

__all__ = ["generate_chunk", "generate_dataset", "main"]

_DONE = ".progress.json"


def _problem(name: str) -> Any:
    from flowsci.domains.pde.solvers import PROBLEMS

    if name not in PROBLEMS:
        raise InputError("problem", f"unknown problem {name!r}; choose one of {sorted(PROBLEMS)}")
    return PROBLEMS[name]


def generate_chunk(problem: str, store: str, start: int, stop: int, grid: int, steps: int, seed: int) -> int:
    """Generate trajectories ``start:stop`` and write them into their region of the Zarr ``store``.

    Runs on a Dask worker (or in-process); returns ``start``.
    """
    import torch

    torch.set_num_threads(1)
    ds = _problem(problem).generate(stop - start, grid, steps, seed=seed, start=start)
    drop = [v for v in ds.variables if "sample" not in ds[v].dims]
    ds.drop_vars(drop).to_zarr(store, region={"sample": slice(start, stop)}, mode="r+", consolidated=False)
    return start


def _template(problem: str, n: int, grid: int, steps: int, seed: int, chunk: int) -> Any:
    import dask.array as da

    one = _problem(problem).generate(1, grid, steps, seed=seed, start=0)
    out = one.isel(sample=slice(0, 0)).copy()
    data = {}
    for name, var in one.data_vars.items():
        if "sample" in var.dims:
            shape = (n, *var.shape[1:])
            data[name] = (var.dims, da.zeros(shape, dtype=var.dtype, chunks=(chunk, *var.shape[1:])), var.attrs)
        else:
            data[name] = var
    coords = {k: v for k, v in one.coords.items() if k != "sample"}
    import numpy as np
    import xarray as xr

    coords["sample"] = ("sample", np.arange(n, dtype=np.int64), one["sample"].attrs)
    tmpl = xr.Dataset(data, coords=coords, attrs=dict(one.attrs))
    tmpl.attrs.update({"n_trajectories": n, "start": 0, "chunk": chunk})
    del out
    return tmpl


def _record(store: Path) -> Path:
    """The progress record next to the store (inside it, Zarr would warn about an unknown object)."""
    return store.with_name(store.name + _DONE)


def _read_done(store: Path) -> set[int]:
    f = _record(store)
    if not f.exists():
        return set()
    try:
        return {int(s) for s in json.loads(f.read_text())["done"]}
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f, f"corrupt progress record ({err}); delete the store to start again") from err


def _write_done(store: Path, done: set[int], meta: dict[str, Any]) -> None:
    from flowsci.io import atomic_write_text

    atomic_write_text(_record(store), json.dumps({**meta, "done": sorted(done)}))


def generate_dataset(
    problem: str,
    n: int,
    out: str | os.PathLike,
    grid: int = 128,
    steps: int = 32,
    seed: int = 0,
    chunk: int = 100,
    scheduler: str | Any = "sync",
    workers: int = 2,
    progress: bool = True,
) -> Path:
    """Generate ``n`` trajectories of ``problem`` into ``out`` (``.zarr``, ``.nc`` or ``.h5``), resumably.

    Args:
        problem: ``burgers``, ``advection`` or ``ns2d``.
        n: Number of trajectories.
        out: Output path; its suffix picks the format.
        grid: Grid points.
        steps: Recording intervals.
        seed: Seed.
        chunk: Trajectories per task (and Zarr chunk).
        scheduler: ``"sync"``, ``"local"`` (a ``LocalCluster``), a scheduler address, or a ``distributed.Client``.
        workers: Processes of the local cluster.
        progress: Progress bar.

    Returns:
        The written path.

    """
    from tqdm.auto import tqdm

    _problem(problem)
    for name, v in (("n", n), ("chunk", chunk), ("workers", workers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"--{name}", f"must be a whole number >= 1, got {v!r}")
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".zarr", ".nc", ".h5", ".hdf5"):
        raise InputError(out, f"unknown suffix {suffix!r}; use .zarr, .nc or .h5")
    store = out if suffix == ".zarr" else out.with_name(out.name + ".partial.zarr")
    meta = {"problem": problem, "n": n, "grid": grid, "steps": steps, "seed": seed, "chunk": chunk}
    if store.exists():
        rec = _record(store)
        if not rec.exists():
            raise InputError(store, "exists but was not written by this generator (no progress record); remove it")
        old = json.loads(rec.read_text())
        if any(old.get(k) != v for k, v in meta.items()):
            raise InputError(store, f"holds a run with other settings { ({k: old.get(k) for k in meta}) }; remove it")
    else:
        _template(problem, n, grid, steps, seed, chunk).to_zarr(store, compute=False, mode="w", consolidated=False)
        _write_done(store, set(), meta)
    done = _read_done(store)
    starts = [s for s in range(0, n, chunk) if s not in done]
    bar = tqdm(total=len(range(0, n, chunk)), initial=len(done), desc=f"{problem} chunks", disable=not progress)
    args = [(problem, str(store), s, min(s + chunk, n), grid, steps, seed) for s in starts]
    if scheduler == "sync":
        for a in args:
            done.add(generate_chunk(*a))
            _write_done(store, done, meta)
            bar.update(1)
    else:
        distributed = require("distributed", "pde")
        own = None
        if isinstance(scheduler, distributed.Client):
            client = scheduler
        elif scheduler == "local":
            own = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)
            client = distributed.Client(own)
        else:
            client = distributed.Client(scheduler)
        try:
            futures = [client.submit(generate_chunk, *a, pure=False) for a in args]
            for fut in distributed.as_completed(futures):
                done.add(fut.result())
                _write_done(store, done, meta)
                bar.update(1)
        finally:
            if own is not None:
                client.close()
                own.close()
    bar.close()
    if store == out:
        return out
    from flowsci.domains.pde.data import open_dataset, write_dataset

    ds = open_dataset(store, chunks=chunk).load()
    write_dataset(ds, out)
    shutil.rmtree(store)
    _record(store).unlink(missing_ok=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m flowsci.domains.pde.generate PROBLEM --n N --out PATH [...]``."""
    p = argparse.ArgumentParser(prog="python -m flowsci.domains.pde.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("problem", choices=["burgers", "advection", "ns2d"])
    p.add_argument("--n", type=int, required=True, help="number of trajectories")
    p.add_argument("--out", required=True, help="output: .zarr (resumable), .nc or .h5 (The Well layout)")
    p.add_argument("--grid", type=int, default=None, help="grid points (default 128; ns2d 32)")
    p.add_argument("--steps", type=int, default=32, help="recording intervals")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=100, help="trajectories per task")
    p.add_argument("--scheduler", default="local", help="local | sync | ADDRESS of a Dask scheduler")
    p.add_argument("--workers", type=int, default=2, help="processes of the local cluster")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    grid = a.grid if a.grid is not None else (32 if a.problem == "ns2d" else 128)
    try:
        path = generate_dataset(
            a.problem, a.n, a.out, grid, a.steps, a.seed, a.chunk, a.scheduler, a.workers, not a.no_progress
        )
    except InputError as err:
        print(f"generate: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
