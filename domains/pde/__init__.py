"""PDE: WDNO-style wavelet flow matching over whole (state, control) trajectories -- simulation, control by
guidance, torch solvers and xarray data.

Example:
    >>> from flowsci.domains.pde import WaveletFlow, burgers
    >>> ds = burgers.generate(8, grid=128, steps=32)  # xarray.Dataset, u (sample, time, x), f (sample, time_f, x)
    >>> model = WaveletFlow.from_checkpoint("runs/.../last.ckpt")  # doctest: +SKIP
    >>> sim = model.simulate(ds.u[:, 0], ds.f, steps=10)  # doctest: +SKIP
    >>> ctl = model.control(ds.u[:, 0], ds.u[:, -1], steps=20, guidance=1.0)  # doctest: +SKIP

The dependencies (PyWavelets, xarray, h5netcdf, zarr, h5py, dask) are the ``pde`` extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowsci.contract import Domain
from flowsci.errors import require_extra

# the extra's packages, checked first: a missing one is one error naming `pip install 'flowsci[pde]'`
require_extra("pde", "xarray", "pywt", "h5py")

from flowsci.domains.pde import metrics
from flowsci.domains.pde.data import PDEDataModule, open_dataset, read_pdebench, read_well, write_dataset
from flowsci.domains.pde.ddpm import WaveletDDPM
from flowsci.domains.pde.flow import FNOSurrogate, MultiResolutionFlow, PDESolution, RefineFlow, WaveletFlow
from flowsci.domains.pde.metrics import evaluate, plot_fields
from flowsci.domains.pde.model import FNO2d, UNet
from flowsci.domains.pde.solvers import advection, burgers, ns2d

__all__ = [
    "DOMAIN",
    "FNO2d",
    "FNOSurrogate",
    "MultiResolutionFlow",
    "PDEDataModule",
    "PDESolution",
    "RefineFlow",
    "UNet",
    "WaveletDDPM",
    "WaveletFlow",
    "advection",
    "burgers",
    "evaluate",
    "metrics",
    "ns2d",
    "open_dataset",
    "plot_fields",
    "read_pdebench",
    "read_well",
    "reference",
    "write_dataset",
]

SAMPLE_DATA = Path(__file__).parent / "sample_data"
REFERENCE_FILE = SAMPLE_DATA / "burgers_test_g128_s32.nc"


def reference(num: int = 16) -> Any:
    """The shipped held-out Burgers test set (first ``num`` of 16 trajectories, 128 x 32; see PROVENANCE.md)."""
    ds = open_dataset(REFERENCE_FILE, chunks=None, check_values=True)
    return ds.isel(sample=slice(0, int(num))).load()


def _plot(samples: Any, reference_data: Any, path: Any, **kwargs: Any) -> Any:
    return plot_fields(samples, path, reference=reference_data, **kwargs)


DOMAIN = Domain(
    name="pde",
    module=WaveletFlow,
    datamodule=PDEDataModule,
    evaluate=evaluate,
    plot=_plot,
    reference=reference,
    tiny_config="pde/wdno_burgers.yaml",
    extra="pde",
    sample_args=("--num", "2", "--steps", "2"),
    smoke_benchmark="pde",
    modules=(FNOSurrogate,),
    fit_args=("--data.num_train", "64", "--data.num_val", "8"),
)
