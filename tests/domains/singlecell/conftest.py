"""Shared fixtures of the single-cell tests (skipped cleanly when the singlecell extra is not installed)."""

import pytest
import torch

pytest.importorskip("anndata", reason="singlecell extra (anndata) not installed")
pytest.importorskip("scanpy", reason="singlecell extra (scanpy) not installed")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synth():
    from flowsci.domains.singlecell.data import synthetic_counts

    return synthetic_counts(n_cells=300, n_genes=60, n_types=3, n_markers=5, seed=0)


@pytest.fixture(scope="session")
def synth_path(synth, tmp_path_factory):
    path = tmp_path_factory.mktemp("sc") / "synth.h5ad"
    synth.write_h5ad(path)
    return path


@pytest.fixture(scope="session")
def synth_dm(synth_path):
    from flowsci.domains.singlecell.data import SingleCellDataModule

    dm = SingleCellDataModule(str(synth_path), label_key="cell_type", batch_size=32, n_pcs=10)
    dm.setup()
    return dm
