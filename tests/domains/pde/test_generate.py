import json

import numpy as np
import pytest

from flowsci.domains.pde.data import open_dataset
from flowsci.domains.pde.generate import generate_dataset, main
from flowsci.domains.pde.solvers import burgers
from flowsci.errors import InputError


def test_chunked_generation_resumes_and_matches_one_shot(tmp_path):
    out = tmp_path / "b.zarr"
    generate_dataset("burgers", 5, out, grid=16, steps=4, seed=2, chunk=2, progress=False)
    rec = json.loads((tmp_path / "b.zarr.progress.json").read_text())
    assert rec["done"] == [0, 2, 4]
    # simulate an interruption before the last chunk was recorded, and resume
    rec["done"] = [0, 2]
    (tmp_path / "b.zarr.progress.json").write_text(json.dumps(rec))
    ds = open_dataset(out)
    assert ds.u.shape == (5, 5, 16)
    generate_dataset("burgers", 5, out, grid=16, steps=4, seed=2, chunk=2, progress=False)
    ref = burgers.generate(5, grid=16, steps=4, seed=2)
    back = open_dataset(out, check_values=True)
    np.testing.assert_array_equal(back.u.values, ref.u.values)
    np.testing.assert_array_equal(back["sample"].values, np.arange(5))
    with pytest.raises(InputError, match="other settings"):
        generate_dataset("burgers", 5, out, grid=32, steps=4, seed=2, chunk=2, progress=False)


@pytest.mark.parametrize("suffix", [".nc", ".h5"])
def test_cli_writes_netcdf_and_well(tmp_path, suffix):
    out = tmp_path / f"a{suffix}"
    code = main(["advection", "--n", "3", "--grid", "16", "--steps", "4", "--out", str(out), "--scheduler", "sync",
                 "--no-progress"])  # fmt: skip
    assert code == 0 and out.exists() and not list(tmp_path.glob("*.partial.zarr*"))
    assert open_dataset(out).u.shape == (3, 5, 16)


def test_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="suffix"):
        generate_dataset("burgers", 2, tmp_path / "x.csv", progress=False)
    with pytest.raises(InputError, match="--n"):
        generate_dataset("burgers", 0, tmp_path / "x.zarr", progress=False)
    (tmp_path / "y.zarr").mkdir()
    with pytest.raises(InputError, match="not written by this generator"):
        generate_dataset("burgers", 2, tmp_path / "y.zarr", progress=False)
    assert main(["burgers", "--n", "0", "--out", str(tmp_path / "z.zarr"), "--scheduler", "sync"]) == 2
