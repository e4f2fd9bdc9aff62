r"""PDE trajectory data: CF-annotated xarray datasets, netCDF / Zarr / The Well HDF5 / PDEBench HDF5, and the
LightningDataModule that reads them lazily.

The in-memory object is an :class:`xarray.Dataset` with

* ``u (sample, time, x)`` (1D) or ``u (sample, time, y, x)`` (2D): the state at the ``Nt + 1`` recording times
  :math:`t_k = kT/N_t` (``u[:, 0]`` is the initial state);
* ``f (sample, time_f, x)`` (or ``..., y, x``): the control, constant on :math:`[t_k, t_{k+1})` (``time_f`` holds
  the interval starts, with CF ``bounds``);
* coordinates ``time``, ``time_f``, ``x`` (``y``) with ``units``, ``long_name``, ``axis``; global attributes
  ``Conventions = "CF-1.10"``, ``title``, ``source``, ``history``, ``references``, ``problem``, ``horizon``...

On disk (:func:`write_dataset` / :func:`open_dataset`): netCDF4 (``.nc``, h5netcdf engine), Zarr (``.zarr``), The
Well's HDF5 layout (``.h5``/``.hdf5``: ``t0_fields/u``, ``t0_fields/f``, ``dimensions/{time,x}``, ``scalars``,
``boundary_conditions``) and, read only, PDEBench 1D HDF5 files (``tensor``, ``x-coordinate``, ``t-coordinate``).
Every reader raises one :class:`~flowsci.errors.InputError` naming the file and the problem.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from flowsci.errors import InputError, check_finite, require
from flowsci.io import atomic_write

__all__ = [
    "PDEDataModule",
    "TrajectoryStore",
    "make_dataset",
    "open_dataset",
    "read_pdebench",
    "read_well",
    "validate_dataset",
    "write_dataset",
    "write_well",
]

MAX_SIZE = 1 << 16
"""Largest accepted grid / time axis / sample count of a single axis read from a file (absurd sizes are rejected)."""
MAX_SAMPLES = 1 << 24
_LONG_NAMES = {
    "burgers": ("velocity", "forcing (control)"),
    "advection": ("advected scalar", "forcing (zero)"),
    "ns2d": ("vorticity", "forcing (base + control actuators)"),
}


def _xr() -> Any:
    return require("xarray", "pde")


# ------------------------------------------------------------------------------------------------- building
def make_dataset(
    problem: str,
    u: np.ndarray,
    f: np.ndarray,
    x: np.ndarray,
    horizon: float,
    attrs: Mapping[str, Any] | None = None,
    sample_start: int = 0,
    y: np.ndarray | None = None,
    extra: Mapping[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] | None = None,
) -> Any:
    """Build the CF-annotated dataset of ``n`` trajectories.

    Args:
        problem: Problem name (``"burgers"``, ``"advection"``, ``"ns2d"``).
        u: State ``[n, Nt+1, Nx]`` or ``[n, Nt+1, Ny, Nx]``.
        f: Control ``[n, Nt, Nx]`` / ``[n, Nt, Ny, Nx]``.
        x: Grid ``[Nx]`` (nondimensional).
        horizon: Final time :math:`T`.
        attrs: Extra global attributes (plain values).
        sample_start: Index of the first trajectory (the ``sample`` coordinate).
        y: Second grid axis for 2D problems.
        extra: More variables, ``name -> (dims, values, attrs)``.

    Returns:
        An :class:`xarray.Dataset` (float32 fields).

    """
    xr = _xr()
    u = np.asarray(u, dtype=np.float32)
    f = np.asarray(f, dtype=np.float32)
    n, nt1 = u.shape[:2]
    space = ("x",) if y is None else ("y", "x")
    long_u, long_f = _LONG_NAMES.get(problem, ("state", "control"))
    time = np.linspace(0.0, horizon, nt1)
    coords: dict[str, Any] = {
        "sample": ("sample", np.arange(sample_start, sample_start + n, dtype=np.int64), {"long_name": "trajectory"}),
        "time": ("time", time, {"units": "1", "long_name": "nondimensional time", "axis": "T"}),
        "time_f": (
            "time_f",
            time[:-1],
            {"units": "1", "long_name": "start of control interval", "bounds": "time_f_bounds"},
        ),
        "x": ("x", np.asarray(x, dtype=np.float64), {"units": "1", "long_name": "nondimensional x", "axis": "X"}),
    }
    if y is not None:
        coords["y"] = (
            "y",
            np.asarray(y, dtype=np.float64),
            {"units": "1", "long_name": "nondimensional y", "axis": "Y"},
        )
    data_vars: dict[str, Any] = {
        "u": (("sample", "time", *space), u, {"units": "1", "long_name": long_u}),
        "f": (
            ("sample", "time_f", *space),
            f,
            {"units": "1", "long_name": long_f, "cell_methods": "time_f: point (piecewise constant on interval)"},
        ),
        "time_f_bounds": (("time_f", "nv"), np.stack([time[:-1], time[1:]], axis=1), {"units": "1"}),
    }
    for name, (dims, values, a) in (extra or {}).items():
        data_vars[name] = (dims, np.asarray(values), dict(a))
    import torch as _torch

    global_attrs = {
        "Conventions": "CF-1.10",
        "title": f"{problem} trajectories",
        "institution": "flowsci",
        "source": f"flowsci.domains.pde.solvers ({problem}; torch {_torch.__version__})",
        "history": f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}: generated by flowsci",
        "references": "Hu et al., Wavelet Diffusion Neural Operator, ICLR 2025; Wei et al., DiffPhyCon, NeurIPS 2024",
        "problem": problem,
        "horizon": float(horizon),
    }
    for k, v in (attrs or {}).items():
        global_attrs[k] = v if isinstance(v, (int, float, str)) else json.dumps(v)
    return xr.Dataset(data_vars, coords=coords, attrs=global_attrs)


# ------------------------------------------------------------------------------------------------- validation
def validate_dataset(
    ds: Any,
    source: str | os.PathLike,
    check_values: bool = True,
    power_of_two: bool = False,
) -> Any:
    """Check a trajectory dataset; return it unchanged or raise one :class:`InputError` naming ``source``.

    Checks: variables ``u`` and ``f`` present with dims ``(sample, time, [y,] x)`` / ``(sample, time_f, [y,] x)``,
    ``len(time_f) == len(time) - 1``, matching samples and grid, sizes in range, finite values (when
    ``check_values``), and power-of-two grids (when ``power_of_two``, as the wavelet models need).
    """
    src = str(source)
    for var in ("u", "f"):
        if var not in ds.variables:
            raise InputError(src, f"missing variable {var!r} (found {sorted(map(str, ds.data_vars))})")
    u, f = ds["u"], ds["f"]
    if u.dims[:2] != ("sample", "time") or u.dims[-1] != "x" or u.ndim not in (3, 4):
        raise InputError(src, f"variable 'u' must have dims (sample, time, [y,] x), got {u.dims}")
    if f.dims != ("sample", "time_f", *u.dims[2:]):
        raise InputError(src, f"variable 'f' must have dims {('sample', 'time_f', *u.dims[2:])}, got {f.dims}")
    n, nt1 = u.shape[:2]
    if n < 1 or nt1 < 2:
        raise InputError(src, f"needs at least one trajectory with two time levels, got u of shape {u.shape}")
    if f.shape[1] != nt1 - 1:
        raise InputError(src, f"'f' must have one interval fewer than 'u' has times ({nt1 - 1}), got {f.shape[1]}")
    if f.shape[0] != n or f.shape[2:] != u.shape[2:]:
        raise InputError(src, f"'u' {u.shape} and 'f' {f.shape} disagree on samples or grid")
    if n > MAX_SAMPLES or any(s > MAX_SIZE for s in u.shape[1:]):
        raise InputError(src, f"absurd size {u.shape} (limits: {MAX_SAMPLES} samples, {MAX_SIZE} per axis)")
    if power_of_two:
        for name, s in (("time intervals", nt1 - 1), *((d, u.sizes[d]) for d in u.dims[2:])):
            if s & (s - 1):
                raise InputError(src, f"{name} = {s} is not a power of two, which the wavelet transform needs")
    if check_values:
        for var in ("u", "f"):
            check_finite(np.asarray(ds[var].values), src, f"values of {var!r}")
    return ds


# ------------------------------------------------------------------------------------------------- writing
def write_dataset(ds: Any, path: str | os.PathLike, chunk: int = 64) -> Path:
    """Write ``ds`` as netCDF4 (``.nc``), Zarr (``.zarr``) or The Well HDF5 (``.h5``/``.hdf5``), by suffix.

    netCDF and Zarr are written atomically (temporary name, then rename) with zlib compression / chunks of
    ``chunk`` trajectories along ``sample``.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".h5", ".hdf5"):
        return write_well(ds, p)
    if suffix == ".nc":
        enc = {
            v: {"zlib": True, "complevel": 4, "chunksizes": (min(chunk, ds.sizes["sample"]), *ds[v].shape[1:])}
            for v in ("u", "f")
        }
        return atomic_write(p, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf", encoding=enc))
    if suffix == ".zarr":
        import shutil

        tmp = p.with_name(f".{p.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        ds.chunk({"sample": chunk}).to_zarr(tmp, mode="w", consolidated=False)
        shutil.rmtree(p, ignore_errors=True)
        os.replace(tmp, p)
        return p
    raise InputError(p, f"unknown suffix {suffix!r}; use .nc (netCDF4), .zarr or .h5/.hdf5 (The Well layout)")


def write_well(ds: Any, path: str | os.PathLike) -> Path:
    """Write ``ds`` in The Well's HDF5 layout (float32, one file), atomically.

    Root attributes ``dataset_name``, ``grid_type``, ``n_spatial_dims``, ``n_trajectories``,
    ``simulation_parameters``; groups ``dimensions`` (``time``, ``time_f``, ``x`` [``y``]), ``t0_fields``
    (``u``, ``f``), ``scalars`` (e.g. ``nu``), ``boundary_conditions``.
    """
    h5py = require("h5py", "pde")
    validate_dataset(ds, path, check_values=False)
    space = [d for d in ds["u"].dims[2:]]
    periodic = "periodic" in str(ds.attrs.get("boundary", "")).lower()

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as h:
            h.attrs["dataset_name"] = str(ds.attrs.get("problem", "pde"))
            h.attrs["grid_type"] = "cartesian"
            h.attrs["n_spatial_dims"] = len(space)
            h.attrs["n_trajectories"] = int(ds.sizes["sample"])
            params = [k for k in ("nu",) if k in ds.attrs]
            h.attrs["simulation_parameters"] = params
            for k, v in ds.attrs.items():
                h.attrs[f"global:{k}"] = v if isinstance(v, (int, float, str)) else json.dumps(v)
            for k in params:
                h.attrs[k] = float(ds.attrs[k])
            dims = h.create_group("dimensions")
            dims.attrs["spatial_dims"] = space
            for name in ("time", "time_f", *space):
                d = dims.create_dataset(name, data=np.asarray(ds[name].values, dtype=np.float32))
                d.attrs["sample_varying"] = False
                d.attrs["time_varying"] = name == "time"
            t0 = h.create_group("t0_fields")
            t0.attrs["field_names"] = ["u", "f"]
            for name in ("u", "f"):
                d = t0.create_dataset(name, data=np.asarray(ds[name].values, dtype=np.float32), chunks=True)
                d.attrs["dim_varying"] = [True] * len(space)
                d.attrs["sample_varying"] = True
                d.attrs["time_varying"] = True
                d.attrs["time_axis"] = "time" if name == "u" else "time_f"
                d.attrs["long_name"] = str(ds[name].attrs.get("long_name", name))
                d.attrs["units"] = str(ds[name].attrs.get("units", "1"))
            h.create_group("t1_fields").attrs["field_names"] = []
            h.create_group("t2_fields").attrs["field_names"] = []
            sc = h.create_group("scalars")
            sc.attrs["field_names"] = params
            for k in params:
                d = sc.create_dataset(k, data=np.float32(ds.attrs[k]))
                d.attrs["time_varying"] = False
                d.attrs["sample_varying"] = False
            bc = h.create_group("boundary_conditions")
            for axis in space:
                g = bc.create_group(f"{axis}_{'periodic' if periodic else 'wall'}")
                g.attrs["bc_type"] = "PERIODIC" if periodic else "WALL"
                g.attrs["associated_dims"] = [axis]
                g.attrs["associated_fields"] = [] if periodic else ["u"]
                g.attrs["sample_varying"] = False
                g.attrs["time_varying"] = False
                mask = np.zeros(ds.sizes[axis], dtype=bool)
                if not periodic:  # WDNO/DiffPhyCon grid: interior points, walls just outside
                    mask[[0, -1]] = True
                g.create_dataset("mask", data=mask)

    return atomic_write(path, write)


# ------------------------------------------------------------------------------------------------- reading
def _hdf5_kind(h: Any) -> str:
    if "t0_fields" in h and "dimensions" in h:
        return "well"
    if "tensor" in h:
        return "pdebench"
    raise InputError(
        h.filename,
        f"HDF5 file is neither The Well layout (t0_fields, dimensions) nor PDEBench 1D (tensor); top-level keys "
        f"{sorted(h.keys())}",
    )


def _open_h5(path: Path) -> Any:
    h5py = require("h5py", "pde")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(path, f"not a readable HDF5 file (truncated or another format): {err}") from err


def read_well(path: str | os.PathLike, check_values: bool = True) -> Any:
    """Read a Well-layout HDF5 file written by :func:`write_well` into an :class:`xarray.Dataset` (eagerly)."""
    p = Path(path)
    h = _open_h5(p)
    with h:
        if _hdf5_kind(h) != "well":
            raise InputError(p, "is a PDEBench file, not The Well layout; use read_pdebench")
        t0 = h["t0_fields"]
        for name in ("u", "f"):
            if name not in t0:
                raise InputError(p, f"missing field t0_fields/{name}")
        dims = h["dimensions"]
        space = [s.decode() if isinstance(s, bytes) else str(s) for s in dims.attrs.get("spatial_dims", ["x"])]
        for name in ("time", *space):
            if name not in dims:
                raise InputError(p, f"missing dimensions/{name}")
        u, f = t0["u"][()], t0["f"][()]
        if u.ndim != 2 + len(space) or f.ndim != u.ndim:
            raise InputError(p, f"t0_fields/u {u.shape} and f {f.shape} do not match {len(space)} spatial dims")
        time = dims["time"][()]
        if time.shape != (u.shape[1],):
            raise InputError(p, f"dimensions/time has {time.shape} entries, t0_fields/u has {u.shape[1]} times")
        grids = {s: dims[s][()] for s in space}
        attrs = {}
        for k, v in h.attrs.items():
            if k.startswith("global:"):
                attrs[k[len("global:") :]] = v.item() if hasattr(v, "item") else v
    horizon = float(time[-1]) if time.size else 1.0
    ds = make_dataset(
        str(attrs.get("problem", "pde")),
        u,
        f,
        grids["x"],
        horizon,
        attrs={k: v for k, v in attrs.items() if k not in ("Conventions", "title", "source", "problem", "horizon")},
        y=grids.get("y"),
    )
    return validate_dataset(ds, p, check_values=check_values)


def read_pdebench(path: str | os.PathLike, check_values: bool = True, limit: int | None = None) -> Any:
    """Read a PDEBench 1D HDF5 file (``tensor [N, Nt, Nx]``, ``x-coordinate [Nx]``, ``t-coordinate [Nt(+1)]``).

    There is no control in PDEBench; ``f`` is zero. ``limit`` keeps the first trajectories only.
    """
    p = Path(path)
    h = _open_h5(p)
    with h:
        if _hdf5_kind(h) != "pdebench":
            raise InputError(p, "is The Well layout, not a PDEBench file; use read_well")
        for key in ("x-coordinate", "t-coordinate"):
            if key not in h:
                raise InputError(p, f"missing dataset {key!r} of the PDEBench 1D layout")
        tensor = h["tensor"]
        if tensor.ndim != 3:
            raise InputError(p, f"'tensor' must be [N, Nt, Nx], got shape {tensor.shape}")
        n = tensor.shape[0] if limit is None else min(limit, tensor.shape[0])
        u = tensor[:n]
        x = h["x-coordinate"][()]
        t = h["t-coordinate"][()]
    if x.shape != (u.shape[2],):
        raise InputError(p, f"'x-coordinate' has {x.shape} entries, 'tensor' has {u.shape[2]} points")
    if t.shape[0] not in (u.shape[1], u.shape[1] + 1):
        raise InputError(p, f"'t-coordinate' has {t.shape[0]} entries, 'tensor' has {u.shape[1]} times")
    t = t[: u.shape[1]]
    ds = make_dataset("pdebench", u, np.zeros((n, u.shape[1] - 1, u.shape[2])), x, float(t[-1] - t[0]))
    ds = ds.assign_coords(time=("time", t.astype(np.float64), ds["time"].attrs))
    return validate_dataset(ds, p, check_values=check_values)


def open_dataset(path: str | os.PathLike, chunks: int | None = 64, check_values: bool = False) -> Any:
    """Open a trajectory file as an :class:`xarray.Dataset`, lazily (dask chunks of ``chunks`` trajectories)
    for netCDF and Zarr, eagerly for HDF5 (The Well or PDEBench, by content). Validated (values too when
    ``check_values``).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    xr = _xr()
    suffix = p.suffix.lower()
    ch = {"sample": chunks} if chunks else None
    try:
        if suffix == ".zarr":
            ds = xr.open_zarr(p, chunks=ch, consolidated=False)
        elif suffix == ".nc":
            if p.stat().st_size == 0:
                raise InputError(p, "is empty (0 bytes)")
            ds = xr.open_dataset(p, engine="h5netcdf", chunks=ch)
        elif suffix in (".h5", ".hdf5"):
            h = _open_h5(p)
            with h:
                kind = _hdf5_kind(h)
            return read_well(p, check_values) if kind == "well" else read_pdebench(p, check_values)
        else:
            raise InputError(p, f"unknown suffix {suffix!r}; use .nc, .zarr, .h5/.hdf5")
    except InputError:
        raise
    except Exception as err:  # xarray/h5netcdf/zarr raise many types for corrupt files
        raise InputError(p, f"not a readable {suffix} trajectory file: {type(err).__name__}: {err}") from err
    return validate_dataset(ds, p, check_values=check_values)


# ------------------------------------------------------------------------------------------------- lazy store
class TrajectoryStore(Dataset):
    """Map-style torch dataset of trajectories read lazily from a file (or held in memory).

    Each item is ``{"u": [Nt+1, *grid], "f": [Nt, *grid]}`` (float32). netCDF/Zarr are read through xarray with
    dask chunks (only the requested trajectory is loaded), Well HDF5 through h5py slices; the open handle is
    per process and never pickled (DDP, dataloader workers and EMA copies reopen it). Every item read is
    checked for NaN/Inf, with an error naming the file and the trajectory.

    Args:
        path: The file.
        in_memory: Load everything at once (default: when the file is under 512 MB).
        indices: Subset of trajectory indices (default all).
        power_of_two: Require power-of-two grids (the wavelet models).

    """

    def __init__(
        self,
        path: str | os.PathLike,
        in_memory: bool | None = None,
        indices: Sequence[int] | None = None,
        power_of_two: bool = True,
    ) -> None:
        self.path = Path(path)
        ds = open_dataset(self.path)
        validate_dataset(ds, self.path, check_values=False, power_of_two=power_of_two)
        self.kind = "well" if self.path.suffix.lower() in (".h5", ".hdf5") else "xarray"
        self.num_total = int(ds.sizes["sample"])
        self.shape_u = tuple(int(s) for s in ds["u"].shape[1:])
        self.horizon = float(ds["time"].values[-1] - ds["time"].values[0])
        self.attrs = dict(ds.attrs)
        self.indices = list(range(self.num_total)) if indices is None else [int(i) for i in indices]
        if any(i < 0 or i >= self.num_total for i in self.indices):
            raise InputError(self.path, f"trajectory indices out of range [0, {self.num_total})")
        size = _path_size(self.path)
        self.in_memory = in_memory if in_memory is not None else size < 512 * 2**20
        self._mem: dict[str, np.ndarray] | None = None
        if self.in_memory:
            sel = np.asarray(self.indices)
            self._mem = {k: np.asarray(ds[k].values[sel], dtype=np.float32) for k in ("u", "f")}
            for k, v in self._mem.items():
                check_finite(v, self.path, f"values of {k!r}")
        self._handle: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # no open file handles across processes or deep copies
        return state

    def __len__(self) -> int:
        return len(self.indices)

    def _open(self) -> Any:
        if self._handle is None:
            if self.kind == "well":
                self._handle = _open_h5(self.path)["t0_fields"]
            else:
                self._handle = open_dataset(self.path, chunks=None)  # xarray lazy indexing: reads one slice
        return self._handle

    def read(self, i: int) -> dict[str, np.ndarray]:
        """Arrays of trajectory ``i`` of this store (an index into ``indices``)."""
        if self._mem is not None:
            return {"u": self._mem["u"][i], "f": self._mem["f"][i]}
        j = self.indices[i]
        h = self._open()
        if self.kind == "well":
            out = {k: np.asarray(h[k][j], dtype=np.float32) for k in ("u", "f")}
        else:
            out = {k: np.asarray(h[k].isel(sample=j).values, dtype=np.float32) for k in ("u", "f")}
        for k, v in out.items():
            check_finite(v, self.path, f"values of {k!r} in trajectory {j}")
        return out

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.read(i).items()}

    def arrays(self, limit: int | None = None) -> dict[str, np.ndarray]:
        """The first ``limit`` trajectories (all when ``None``) as arrays ``{"u": [n, ...], "f": [n, ...]}``."""
        n = len(self) if limit is None else min(limit, len(self))
        items = [self.read(i) for i in range(n)]
        return {k: np.stack([it[k] for it in items]) for k in ("u", "f")}


def _path_size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


# ------------------------------------------------------------------------------------------------- data module
def default_cache_dir() -> Path:
    """``$FLOWSCI_CACHE/pde`` or ``~/.cache/flowsci/pde``."""
    root = os.environ.get("FLOWSCI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "flowsci")
    return Path(root) / "pde"


def cached_generate(
    problem: str, n: int, grid: int, steps: int, seed: int, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Generate ``n`` trajectories with the solver once and cache them as netCDF; return the file's path.

    The file name hashes every generation parameter, so a changed recipe never reuses a stale file.
    """
    from flowsci.domains.pde.solvers import PROBLEMS

    if problem not in PROBLEMS:
        raise InputError("problem", f"unknown problem {problem!r}; choose one of {sorted(PROBLEMS)}")
    prob = PROBLEMS[problem]
    key = json.dumps({"p": repr(prob), "n": n, "grid": grid, "steps": steps, "seed": seed, "v": 2}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    folder = Path(cache_dir) if cache_dir else default_cache_dir()
    path = folder / f"{problem}_n{n}_g{grid}_s{steps}_seed{seed}_{digest}.nc"
    if not path.exists():
        with torch.random.fork_rng():
            write_dataset(prob.generate(n, grid, steps, seed=seed), path)
    return path


class PDEDataModule(pl.LightningDataModule):
    """Trajectories from files (netCDF / Zarr / Well HDF5 / PDEBench HDF5) or generated by the solver and cached.

    Batches are dicts ``{"u": [B, Nt+1, *grid], "f": [B, Nt, *grid]}`` (float32) -- data only; noise and times
    are drawn in the training step.

    Args:
        train: Training file; ``None`` generates ``num_train`` trajectories with the solver (seed ``seed``) and
            caches them in ``cache_dir``.
        val: Validation file; ``None`` generates ``num_val`` (seed ``seed + 1``), or splits ``val_fraction`` off
            ``train`` when ``train`` is a file.
        test: Test file (default: the validation set).
        problem: ``burgers``, ``advection`` or ``ns2d`` (for generation).
        num_train: Generated training trajectories.
        num_val: Generated validation trajectories.
        grid: Grid points (power of two).
        steps: Recording intervals :math:`N_t` (power of two).
        seed: Generation seed.
        batch_size: Batch size.
        val_fraction: Held-out fraction when ``val`` is not given and ``train`` is a file.
        max_train: Keep only the first trajectories of the training set.
        in_memory: Load files at once (default: files under 512 MB); ``False`` reads lazily per trajectory.
        cache_dir: Cache folder of generated data (default ``~/.cache/flowsci/pde``).
        num_workers: DataLoader workers.

    """

    def __init__(
        self,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        problem: str = "burgers",
        num_train: int = 1000,
        num_val: int = 64,
        grid: int = 128,
        steps: int = 32,
        seed: int = 0,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        max_train: int | None = None,
        in_memory: bool | None = None,
        cache_dir: str | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError("batch_size", f"must be >= 1, got {batch_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise InputError("val_fraction", f"must be in [0, 1), got {val_fraction}")
        self.train, self.val, self.test = train, val, test
        self.problem, self.num_train, self.num_val = problem, num_train, num_val
        self.grid, self.steps, self.seed = grid, steps, seed
        self.batch_size, self.val_fraction, self.max_train = batch_size, val_fraction, max_train
        self.in_memory, self.cache_dir, self.num_workers = in_memory, cache_dir, num_workers
        self.train_set: TrajectoryStore | None = None
        self.val_set: TrajectoryStore | None = None
        self.test_set: TrajectoryStore | None = None

    def _paths(self) -> tuple[Path, Path | None]:
        train = (
            Path(self.train)
            if self.train
            else cached_generate(self.problem, self.num_train, self.grid, self.steps, self.seed, self.cache_dir)
        )
        if self.val:
            val: Path | None = Path(self.val)
        elif not self.train:
            val = cached_generate(self.problem, self.num_val, self.grid, self.steps, self.seed + 1, self.cache_dir)
        else:
            val = None
        return train, val

    def prepare_data(self) -> None:
        """Generate and cache the data (rank 0 only under DDP)."""
        self._paths()

    def setup(self, stage: str | None = None) -> None:
        """Open the stores (lazily; splits are deterministic)."""
        if self.train_set is not None:
            return
        train, val = self._paths()
        if val is None:
            full = TrajectoryStore(train, in_memory=False)
            n = full.num_total
            n_val = max(1, int(round(self.val_fraction * n))) if self.val_fraction > 0 else 0
            perm = np.random.default_rng(self.seed).permutation(n)
            tr_idx, va_idx = sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())
            if self.max_train:
                tr_idx = tr_idx[: self.max_train]
            self.train_set = TrajectoryStore(train, self.in_memory, tr_idx)
            self.val_set = TrajectoryStore(train, self.in_memory, va_idx) if va_idx else None
        else:
            store = TrajectoryStore(train, in_memory=False)
            idx = list(range(store.num_total))[: self.max_train] if self.max_train else None
            self.train_set = TrajectoryStore(train, self.in_memory, idx)
            self.val_set = TrajectoryStore(val, self.in_memory)
        self.test_set = TrajectoryStore(self.test, self.in_memory) if self.test else self.val_set
        if self.val_set is not None and self.val_set.shape_u != self.train_set.shape_u:
            raise InputError(
                str(self.val or self.train),
                f"validation trajectories {self.val_set.shape_u} do not match training ones {self.train_set.shape_u}",
            )

    def statistics_sample(self, limit: int = 512) -> dict[str, torch.Tensor]:
        """The first ``limit`` training trajectories as tensors (for per-band normalisation statistics)."""
        self.setup("fit")
        arr = self.train_set.arrays(limit)
        return {k: torch.from_numpy(v) for k, v in arr.items()}

    def _loader(self, ds: Dataset | None, shuffle: bool) -> DataLoader:
        if ds is None:
            return DataLoader([])
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(ds) >= self.batch_size,
            num_workers=self.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches."""
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader(self.test_set, False)

    def predict_dataloader(self) -> DataLoader:
        """One generated trajectory per test trajectory (its u0 and f as conditions)."""
        return self._loader(self.test_set, False)


def grid_size(n: int) -> int:
    """``n`` rounded up to a power of two (helper for messages)."""
    return 1 << max(0, math.ceil(math.log2(max(1, n))))
