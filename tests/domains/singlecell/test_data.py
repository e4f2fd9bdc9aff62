"""Reading, validation, preprocessing, splits, synthetic data and the data module."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from flowsci.domains.singlecell.data import (
    SingleCellDataModule,
    log_normalize,
    lognorm_to_counts,
    read_counts,
    sample_data_path,
    stratified_split,
    synthetic_counts,
)
from flowsci.errors import InputError


def _write(adata, tmp_path, name="x.h5ad"):
    path = tmp_path / name
    adata.write_h5ad(path)
    return path


def test_shipped_pbmc_is_raw_counts_with_ten_types():
    adata = read_counts(sample_data_path("pbmc68k"), label_key="bulk_labels")
    assert adata.shape == (558, 765)
    assert adata.obs["bulk_labels"].nunique() == 10
    assert np.all(adata.X.data == np.round(adata.X.data))


def test_shipped_celltypist_full_genome_with_hvgs_on_training_cells():
    dm = SingleCellDataModule("celltypist", n_top_genes=500, n_pcs=5)
    dm.setup()
    assert len(dm.all_genes) == 32_786 and dm.num_genes == 500 and dm.cell_types == ["cell"]
    assert len(dm.train_idx) + len(dm.val_idx) + len(dm.test_idx) == 447
    train = dm.split_anndata("train")
    counts = train.layers["counts"]
    lib = train.obs["library_size"].to_numpy(np.float64)
    # library sizes are over all 32,786 genes, so larger than the counts on the 500 HVGs
    assert np.all(lib > np.asarray(counts.sum(1)).ravel())
    np.testing.assert_allclose(train.X, log_normalize(counts, lib), rtol=1e-6)
    assert next(iter(dm.train_dataloader()))["x1"].shape == (64, 500)


def test_count_decoders_invert_log_normalize_on_real_counts(synth):
    # synthetic NB counts -> log1p(normalize_total) -> counts again, with the same library sizes: the identity
    counts = synth.X.toarray().astype(np.float64)
    lib = counts.sum(1)
    x = log_normalize(counts, lib).astype(np.float64)
    for decoder in ("lattice", "round"):
        back = lognorm_to_counts(x, lib, decoder=decoder, rng=np.random.default_rng(0))
        np.testing.assert_array_equal(back, counts)
    assert (back == 0).mean() == (counts == 0).mean()  # so the NB zero fraction is kept exactly


def test_lattice_decoder_is_unbiased_in_log_space():
    # L = 500: one count is log1p(20) = 3.04, so 0.3 lies between the 0- and 1-count levels
    lib = np.full(20_000, 500.0)
    x1 = np.log1p(1e4 / 500)
    for value in (0.3, 1.5, x1 + 0.4, 5.0):
        x = np.full((len(lib), 1), value)
        c = lognorm_to_counts(x, lib, rng=np.random.default_rng(1))
        assert c.min() >= 0 and np.array_equal(c, np.round(c))
        xs = log_normalize(c, lib).astype(np.float64)
        assert abs(xs.mean() - value) < 4 * xs.std() / np.sqrt(len(lib)) + 1e-6
        assert len(np.unique(c)) <= 2  # only the two neighbouring levels
    # below one count the chance of a zero is 1 - x / x_1 (the Bernoulli of the two levels)
    c = lognorm_to_counts(np.full((len(lib), 1), 0.3), lib, rng=np.random.default_rng(2))
    assert abs((c == 0).mean() - (1 - 0.3 / x1)) < 0.01
    # nearest-count rounding sends every value below half a count to zero
    assert (lognorm_to_counts(np.full((5, 1), 0.3), lib[:5], decoder="round") == 0).all()


def test_count_decoder_rejects_bad_input():
    x = np.zeros((2, 3))
    with pytest.raises(InputError, match="decoder"):
        lognorm_to_counts(x, np.ones(2), decoder="poisson")
    with pytest.raises(InputError, match="one library size per cell"):
        lognorm_to_counts(x, np.ones(3))
    with pytest.raises(InputError, match="> 0"):
        lognorm_to_counts(x, np.array([1.0, 0.0]))


def test_log_normalize_closed_form():
    counts = np.array([[1.0, 3.0, 0.0], [2.0, 2.0, 4.0]])
    x = log_normalize(sp.csr_matrix(counts), target_sum=10.0)
    np.testing.assert_allclose(x, np.log1p(counts / counts.sum(1, keepdims=True) * 10), rtol=1e-6)
    # an explicit library (counts over all genes of the file) is used as given
    np.testing.assert_allclose(log_normalize(counts, np.array([8.0, 16.0]), 8.0)[0], np.log1p(counts[0]), rtol=1e-6)


def test_stratified_split_is_disjoint_complete_and_stratified():
    labels = np.array(["a"] * 50 + ["b"] * 20 + ["c"] * 2)
    train, val, test = stratified_split(labels, (0.1, 0.2), seed=1)
    allidx = np.concatenate([train, val, test])
    assert sorted(allidx.tolist()) == list(range(72))
    assert (labels[test] == "a").sum() == 10 and (labels[test] == "b").sum() == 4
    assert (labels[train] == "c").sum() >= 1  # a tiny type keeps a training cell
    again = stratified_split(labels, (0.1, 0.2), seed=1)
    assert all(np.array_equal(p, q) for p, q in zip((train, val, test), again, strict=True))


def test_synthetic_counts_plant_markers(synth):
    x = log_normalize(synth.X)
    markers = synth.uns["markers"]
    assert set(markers) == {"type0", "type1", "type2"}
    for t, genes in markers.items():
        cols = [synth.var_names.get_loc(g) for g in genes]
        inside = x[(synth.obs["cell_type"] == t).to_numpy()][:, cols].mean()
        outside = x[(synth.obs["cell_type"] != t).to_numpy()][:, cols].mean()
        assert inside > outside + 1.0


@pytest.mark.parametrize(
    "case",
    ["missing", "empty", "garbage", "truncated", "nan", "inf", "negative", "noninteger", "dupgenes", "obskey", "layer"],
)
def test_read_counts_rejects_bad_input(case, tmp_path, synth_path):
    import anndata as ad

    small = synthetic_counts(n_cells=20, n_genes=40, n_types=2, n_markers=5, seed=1)
    kwargs = {}
    if case == "missing":
        path = tmp_path / "nope.h5ad"
    elif case == "empty":
        path = tmp_path / "empty.h5ad"
        path.write_bytes(b"")
    elif case == "garbage":
        path = tmp_path / "garbage.h5ad"
        path.write_bytes(b"this is not hdf5" * 10)
    elif case == "truncated":
        path = tmp_path / "trunc.h5ad"
        path.write_bytes(synth_path.read_bytes()[:2000])
    elif case in ("nan", "inf", "negative", "noninteger"):
        x = small.X.toarray()
        x[3, 4] = {"nan": np.nan, "inf": np.inf, "negative": -1.0, "noninteger": 0.5}[case]
        path = _write(ad.AnnData(X=x, obs=small.obs, var=small.var), tmp_path)
    elif case == "dupgenes":
        bad = small.copy()
        bad.var_names = ["g"] * 2 + [f"h{i}" for i in range(38)]
        path = _write(bad, tmp_path)
    elif case == "obskey":
        path, kwargs = _write(small, tmp_path), {"label_key": "nope"}
    else:
        path, kwargs = _write(small, tmp_path), {"layer": "counts"}
    with pytest.raises(InputError) as err:
        read_counts(path, **kwargs)
    assert str(path) in str(err.value)


def test_log_normalised_input_is_not_counts(tmp_path):
    import anndata as ad

    adata = read_counts(sample_data_path("pbmc68k"))
    lognorm = ad.AnnData(X=adata.layers["log1p_norm_scanpy"], obs=adata.obs, var=adata.var)
    with pytest.raises(InputError, match="not raw counts"):
        read_counts(_write(lognorm, tmp_path))
    assert read_counts(_write(lognorm, tmp_path, "y.h5ad"), require_counts=False).n_obs == 558


def test_datamodule_batches_and_statistics(synth_dm):
    dm = synth_dm
    batch = next(iter(dm.train_dataloader()))
    assert batch["x1"].shape == (32, 60) and batch["x1"].dtype == torch.float32
    assert batch["y"].dtype == torch.long and int(batch["y"].max()) < 3
    # the dataset's rows are log1p(normalize_total) of the stored counts
    x, _ = dm.train_matrix()
    item = dm._dataset(dm.train_idx)[0]
    np.testing.assert_allclose(item["x1"].numpy(), x[0], rtol=1e-5, atol=1e-6)
    meta = dm.metadata()
    assert meta["cell_types"] == ["type0", "type1", "type2"] and len(meta["genes"]) == 60
    assert meta["pcs"].shape == (10, 60) and abs(sum(meta["type_freq"]) - 1) < 1e-9
    # the per-type log-library fit is the training cells' mean/std of log(total counts)
    y = dm.labels[dm.train_idx]
    lib = np.log(dm.library[dm.train_idx][y == 0])
    assert meta["lib_mu"][0] == pytest.approx(lib.mean()) and meta["lib_sigma"][0] == pytest.approx(lib.std())
    test = dm.split_anndata("test")
    assert test.n_obs == len(dm.test_idx) and "counts" in test.layers and not test.obs["generated"].any()


def test_hvgs_are_chosen_on_training_cells_only(synth_path):
    dm = SingleCellDataModule(str(synth_path), label_key="cell_type", n_top_genes=20, n_pcs=5)
    dm.setup()
    assert dm.num_genes == 20
    # corrupting the held-out cells does not change the selection
    dm2 = SingleCellDataModule(str(synth_path), label_key="cell_type", n_top_genes=20, n_pcs=5)
    dm2._load_orig = dm2._load

    def load_corrupted():
        adata, key = dm2._load_orig()
        x = adata.X.toarray()
        x[dm.test_idx] = x[dm.test_idx][:, ::-1]
        adata.X = sp.csr_matrix(x)
        return adata, key

    dm2._load = load_corrupted
    dm2.setup()
    assert dm2.genes == dm.genes


def test_backed_mode_gives_the_same_batches(synth_path):
    mem = SingleCellDataModule(str(synth_path), label_key="cell_type", n_pcs=5)
    disk = SingleCellDataModule(str(synth_path), label_key="cell_type", n_pcs=5, backed=True)
    mem.setup()
    disk.setup()
    assert not sp.issparse(disk.matrix) or disk.matrix is not mem.matrix
    a, b = mem._dataset(mem.val_idx)[3], disk._dataset(disk.val_idx)[3]
    torch.testing.assert_close(a["x1"], b["x1"])
    np.testing.assert_allclose(disk.gene_mean, mem.gene_mean, rtol=1e-5)


def test_datamodule_rejects_bad_arguments():
    with pytest.raises(InputError):
        SingleCellDataModule(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(InputError):
        SingleCellDataModule(batch_size=0)
    with pytest.raises(InputError):
        SingleCellDataModule(path="no_such_set").setup()
