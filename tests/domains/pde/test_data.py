import h5py
import numpy as np
import pytest
import torch

from flowsci.domains.pde.data import (
    PDEDataModule,
    TrajectoryStore,
    open_dataset,
    read_pdebench,
    read_well,
    validate_dataset,
    write_dataset,
)
from flowsci.errors import InputError


@pytest.mark.parametrize("suffix", [".nc", ".zarr", ".h5"])
def test_round_trip_every_format(tmp_path, small_burgers, suffix):
    path = write_dataset(small_burgers, tmp_path / f"d{suffix}")
    back = open_dataset(path, check_values=True)
    np.testing.assert_array_equal(back.u.values, small_burgers.u.values)
    np.testing.assert_array_equal(back.f.values, small_burgers.f.values)
    np.testing.assert_allclose(back.time.values, small_burgers.time.values, atol=1e-6)
    np.testing.assert_allclose(back.x.values, small_burgers.x.values, atol=1e-6)
    if suffix != ".h5":
        assert back.attrs["Conventions"] == "CF-1.10" and back.u.attrs["units"] == "1"
        assert back.time.attrs["axis"] == "T" and back.x.attrs["axis"] == "X"


def test_well_layout(tmp_path, small_burgers):
    path = write_dataset(small_burgers, tmp_path / "w.hdf5")
    with h5py.File(path) as h:
        assert h.attrs["n_spatial_dims"] == 1 and h.attrs["n_trajectories"] == 6
        assert h["t0_fields/u"].shape == (6, 9, 32) and h["t0_fields/u"].dtype == np.float32
        assert h["dimensions/time"].shape == (9,) and "x" in h["dimensions"]
        assert h["scalars/nu"][()] == pytest.approx(0.01)
        bc = h["boundary_conditions/x_wall"]
        assert bc.attrs["bc_type"] == "WALL" and bc["mask"][()].sum() == 2
    ds = read_well(path)
    assert ds.attrs["problem"] == "burgers"


def test_ns2d_well_round_trip(tmp_path):
    from flowsci.domains.pde.solvers import ns2d

    ds = ns2d.generate(2, grid=8, steps=2, seed=0)
    back = open_dataset(write_dataset(ds, tmp_path / "ns.h5"))
    np.testing.assert_array_equal(back.u.values, ds.u.values)
    assert back.u.dims == ("sample", "time", "y", "x")


def _pdebench(path, n=3, nt=5, nx=16, t_extra=True):
    with h5py.File(path, "w") as h:
        h["tensor"] = np.random.default_rng(0).standard_normal((n, nt, nx)).astype(np.float32)
        h["x-coordinate"] = (np.arange(nx) + 0.5) / nx
        h["t-coordinate"] = np.linspace(0, 2, nt + (1 if t_extra else 0))
    return path


def test_pdebench_reader(tmp_path):
    ds = read_pdebench(_pdebench(tmp_path / "adv.hdf5"))
    assert ds.u.shape == (3, 5, 16) and float(np.abs(ds.f).max()) == 0
    assert open_dataset(tmp_path / "adv.hdf5").u.shape == (3, 5, 16)
    assert read_pdebench(_pdebench(tmp_path / "b.h5", t_extra=False), limit=2).u.shape == (2, 5, 16)


def test_bad_files(tmp_path, small_burgers):
    with pytest.raises(InputError, match="no such file"):
        open_dataset(tmp_path / "missing.nc")
    (tmp_path / "empty.nc").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_dataset(tmp_path / "empty.nc")
    (tmp_path / "garbage.nc").write_bytes(b"not a netcdf file at all" * 10)
    with pytest.raises(InputError, match="garbage.nc"):
        open_dataset(tmp_path / "garbage.nc")
    (tmp_path / "garbage.h5").write_bytes(b"\x89HDF\r\n" + b"x" * 50)
    with pytest.raises(InputError, match="HDF5"):
        open_dataset(tmp_path / "garbage.h5")
    good = write_dataset(small_burgers, tmp_path / "good.nc")
    (tmp_path / "trunc.nc").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="trunc.nc"):
        open_dataset(tmp_path / "trunc.nc", check_values=True)
    with pytest.raises(InputError, match="suffix"):
        open_dataset(good.rename(tmp_path / "good.txt"))
    with h5py.File(tmp_path / "other.h5", "w") as h:
        h["data"] = np.zeros(3)
    with pytest.raises(InputError, match="neither The Well"):
        open_dataset(tmp_path / "other.h5")
    with h5py.File(tmp_path / "pdb.h5", "w") as h:
        h["tensor"] = np.zeros((2, 3, 4))
    with pytest.raises(InputError, match="x-coordinate"):
        read_pdebench(tmp_path / "pdb.h5")


def test_validation_errors(small_burgers):
    with pytest.raises(InputError, match="missing variable 'f'"):
        validate_dataset(small_burgers.drop_vars("f"), "x.nc")
    bad = small_burgers.copy(deep=True)
    bad["u"].values[1, 2, 3] = np.nan
    with pytest.raises(InputError, match="non-finite values of 'u'"):
        validate_dataset(bad, "x.nc")
    with pytest.raises(InputError, match="one interval fewer"):
        validate_dataset(small_burgers.isel(time_f=slice(0, 5)), "x.nc")
    with pytest.raises(InputError, match="dims"):
        validate_dataset(small_burgers.transpose("sample", "x", "time", ...), "x.nc")
    with pytest.raises(InputError, match="not a power of two"):
        validate_dataset(small_burgers.isel(x=slice(0, 30)), "x.nc", power_of_two=True)


def test_lazy_store_matches_memory_and_rejects_nan(tmp_path, small_burgers):
    for suffix in (".nc", ".h5"):
        path = write_dataset(small_burgers, tmp_path / f"d{suffix}")
        lazy = TrajectoryStore(path, in_memory=False, indices=[1, 4])
        mem = TrajectoryStore(path, in_memory=True, indices=[1, 4])
        assert not lazy.in_memory and len(lazy) == 2
        for i in range(2):
            torch.testing.assert_close(lazy[i]["u"], mem[i]["u"])
        torch.testing.assert_close(lazy[1]["f"], torch.as_tensor(small_burgers.f.values[4]))
        import pickle

        clone = pickle.loads(pickle.dumps(lazy))  # no open handle travels
        torch.testing.assert_close(clone[0]["u"], lazy[0]["u"])
    bad = small_burgers.copy(deep=True)
    bad["u"].values[2, 1, 0] = np.inf
    path = write_dataset(bad, tmp_path / "bad.nc")
    store = TrajectoryStore(path, in_memory=False)
    with pytest.raises(InputError, match="trajectory 2"):
        store[2]
    with pytest.raises(InputError, match="non-finite"):
        TrajectoryStore(path, in_memory=True)
    with pytest.raises(InputError, match="power of two"):
        TrajectoryStore(write_dataset(small_burgers.isel(x=slice(0, 30)), tmp_path / "odd.nc"))


def test_datamodule_generates_caches_and_batches(tmp_path):
    dm = PDEDataModule(num_train=6, num_val=2, grid=16, steps=4, batch_size=4, cache_dir=str(tmp_path))
    dm.prepare_data()
    files = sorted(p.name for p in tmp_path.glob("*.nc"))
    assert len(files) == 2
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["u"].shape == (4, 5, 16) and batch["f"].shape == (4, 4, 16) and batch["u"].dtype == torch.float32
    assert len(dm.val_set) == 2
    stats = dm.statistics_sample(3)
    assert stats["u"].shape == (3, 5, 16)
    dm2 = PDEDataModule(num_train=6, num_val=2, grid=16, steps=4, batch_size=4, cache_dir=str(tmp_path))
    dm2.setup("fit")  # reuses the cache
    assert sorted(p.name for p in tmp_path.glob("*.nc")) == files


def test_datamodule_splits_a_file(tmp_path, small_burgers):
    path = write_dataset(small_burgers, tmp_path / "d.zarr")
    dm = PDEDataModule(train=str(path), val_fraction=0.34, batch_size=2, max_train=3)
    dm.setup("fit")
    assert len(dm.train_set) == 3 and len(dm.val_set) == 2
    assert not set(dm.train_set.indices) & set(dm.val_set.indices)
    with pytest.raises(InputError, match="batch_size"):
        PDEDataModule(batch_size=0)
