"""Shared fixtures for the crystals tests (skip cleanly when the crystals extra is not installed)."""

import pytest
import torch

pytest.importorskip("pymatgen", reason="crystals extra (pymatgen) not installed")
pytest.importorskip("torch_geometric", reason="crystals extra (torch-geometric) not installed")
pytest.importorskip("smact", reason="crystals extra (smact) not installed")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def perov():
    from flowsci.domains.crystals.data import read_csv

    structures, ids = read_csv("perov_5_val", limit=24)
    return structures
