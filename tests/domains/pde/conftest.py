"""Shared fixtures for the PDE tests (skip cleanly when the pde extra is not installed)."""

import pytest
import torch

pytest.importorskip("pywt", reason="pde extra (PyWavelets) not installed")
pytest.importorskip("xarray", reason="pde extra (xarray) not installed")
pytest.importorskip("h5py", reason="pde extra (h5py) not installed")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def small_burgers():
    """Six Burgers trajectories on 32 points x 8 steps (seed 0)."""
    from flowsci.domains.pde.solvers import burgers

    return burgers.generate(6, grid=32, steps=8, seed=0)
