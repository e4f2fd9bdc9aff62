"""The bad-input suite (:mod:`flowsci.testing.bad_inputs`) over every domain file reader.

Each reader gets empty, whitespace, truncated, binary-garbage, NUL, oversized-garbage, NaN / Inf / -Inf /
overflowing / malformed-number variants of a valid file, plus hypothesis-generated truncations and byte edits;
each must end in :class:`flowsci.errors.InputError` naming the file, or (for a variant that may still be valid)
in a finite result. ``pytest tests/test_bad_inputs.py -s`` prints the counts.
"""

from __future__ import annotations

import gzip
import re

import pytest

from flowsci.testing.bad_inputs import NUMBER, Report, check_reader, check_values, fuzz_reader

TOTAL = Report("all readers")


@pytest.fixture(scope="module", autouse=True)
def _print_totals():
    yield
    fixed = [o for o in TOTAL.outcomes if "fuzz" not in o.case]
    must = [o for o in fixed if o.status != "accepted"]
    print(
        f"\nbad-input suite: {TOTAL.cases} cases ({len(fixed)} fixed, {TOTAL.cases - len(fixed)} fuzz); "
        f"{sum(o.status == 'input-error' for o in must)}/{len(must)} fixed must-fail cases in the documented "
        f"InputError; {TOTAL.input_errors} InputError, {TOTAL.accepted} accepted finite, "
        f"{len(TOTAL.failures)} failures"
    )


def _run(report: Report) -> None:
    TOTAL.merge(Report(report.reader, list(report.outcomes)))
    print(report.summary())
    report.assert_ok()


def _numbers_where(text: str, keep) -> list[int]:
    """Indices of the :data:`NUMBER` matches for which ``keep(match, line)`` holds."""
    out = []
    for i, m in enumerate(NUMBER.finditer(text)):
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.end())
        if keep(m, text[start : end if end >= 0 else len(text)], m.start() - start):
            out.append(i)
    return out


def _spread(indices: list[int]) -> list[int]:
    return sorted({indices[0], indices[len(indices) // 2], indices[-1]})


# ------------------------------------------------------------------------------------------------ proteins
@pytest.fixture(scope="module")
def protein_files(tmp_path_factory):
    gemmi = pytest.importorskip("gemmi", reason="proteins extra (gemmi) not installed")
    from flowsci.domains.proteins.data import bundled_backbones

    d = tmp_path_factory.mktemp("proteins")
    pdb = bundled_backbones()[5].to_pdb(d)
    st = gemmi.read_structure(str(pdb))
    st.setup_entities()
    cif = d / "chain.cif"
    st.make_mmcif_document().write_file(str(cif))
    gz = d / "chain.pdb.gz"
    gz.write_bytes(gzip.compress(pdb.read_bytes()))
    return {"pdb": pdb, "cif": cif, "gz": gz}


def test_protein_pdb_reader(protein_files, tmp_path):
    from flowsci.domains.proteins.data import read_backbones

    text = protein_files["pdb"].read_text()
    coords = _numbers_where(text, lambda m, line, col: line.startswith("ATOM") and 30 <= col < 54)
    for path in (protein_files["pdb"], protein_files["gz"]):
        _run(check_reader(read_backbones, path, tmp_path / path.name, numbers=_spread(coords)))
    _run(fuzz_reader(read_backbones, protein_files["pdb"], tmp_path / "fuzz", max_examples=20))


def test_protein_mmcif_reader(protein_files, tmp_path):
    from flowsci.domains.proteins.data import read_backbones

    text = protein_files["cif"].read_text()
    header = [ln.strip() for ln in text.splitlines() if ln.startswith("_atom_site.")]
    cols = [header.index(f"_atom_site.Cartn_{a}") for a in "xyz"]

    def is_coordinate(m, line, col):
        if not line.startswith(("ATOM", "HETATM")):
            return False
        fields = [f.start() for f in re.finditer(r"\S+", line)]
        return fields.index(col) in cols if col in fields else False

    coords = _numbers_where(text, is_coordinate)
    _run(check_reader(read_backbones, protein_files["cif"], tmp_path, numbers=_spread(coords)))
    _run(fuzz_reader(read_backbones, protein_files["cif"], tmp_path / "fuzz", max_examples=20))


def test_protein_npz_cache_reader(protein_files, tmp_path):
    from flowsci.domains.proteins.data import bundled_backbones, load_npz, save_npz

    npz = save_npz(bundled_backbones()[:3], tmp_path / "c.npz")
    _run(check_reader(load_npz, npz, tmp_path / "v", number_pattern=None))


# ------------------------------------------------------------------------------------------------ crystals
@pytest.fixture(scope="module")
def crystal_files(tmp_path_factory):
    pytest.importorskip("pymatgen", reason="crystals extra (pymatgen) not installed")
    pytest.importorskip("torch_geometric", reason="crystals extra (torch-geometric) not installed")
    import pandas as pd

    from flowsci.domains.crystals.data import sample_data_path

    d = tmp_path_factory.mktemp("crystals")
    df = pd.read_csv(sample_data_path("perov_5_val"), nrows=3)
    cif = d / "one.cif"
    cif.write_text(df["cif"].iloc[0])
    csv = d / "three.csv"
    df.to_csv(csv, index=False)
    return {"cif": cif, "csv": csv}


def _cell_and_site_numbers(text: str) -> list[int]:
    def used(m, line, col):
        s = line.strip()
        return s.startswith(("_cell_length", "_cell_angle")) or bool(re.match(r"^[A-Z][a-z]?\s+[A-Z][a-z]?\d+\s", s))

    return _spread(_numbers_where(text, used))


def test_crystal_cif_reader(crystal_files, tmp_path):
    from flowsci.domains.crystals.data import read_structures

    text = crystal_files["cif"].read_text()
    _run(check_reader(read_structures, crystal_files["cif"], tmp_path, numbers=_cell_and_site_numbers(text)))
    _run(fuzz_reader(read_structures, crystal_files["cif"], tmp_path / "fuzz", max_examples=20))


def test_crystal_csv_reader(crystal_files, tmp_path):
    from flowsci.domains.crystals.data import read_csv

    text = crystal_files["csv"].read_text()
    _run(check_reader(read_csv, crystal_files["csv"], tmp_path, numbers=_cell_and_site_numbers(text)))


def test_crystal_composition_reader(crystal_files):
    from flowsci.domains.crystals.data import parse_composition

    bad = ["Xx2O3", "NaCl-", "", " ", "Fe2.5O3", "Na1e9Cl", "H-1", "NaCl)", "Og2", "nan", "Na\x00Cl", "ÄÖ", "12"]
    _run(check_values(lambda v: parse_composition(v, source="composition"), bad, source="composition"))


# ------------------------------------------------------------------------------------------- trajectories
def test_trajectory_text_reader(tmp_path):
    from importlib import resources

    from flowsci.domains.trajectories.data import read_trajectories

    valid = resources.files("flowsci.domains.trajectories") / "sample_data" / "synth_a.txt"
    with resources.as_file(valid) as path:
        _run(check_reader(read_trajectories, path, tmp_path / "fixed"))
        _run(fuzz_reader(read_trajectories, path, tmp_path / "fuzz", max_examples=10))


# ------------------------------------------------------------------------------------------------- shapes
def test_mesh_reader(tmp_path):
    pytest.importorskip("trimesh", reason="shapes extra (trimesh) not installed")
    from flowsci.domains.shapes.data import read_mesh, shipped_meshes

    path = shipped_meshes()[0]
    # only vertex coordinates: face indices must stay integers for the variant to test the number check
    numbers = _spread(_numbers_where(path.read_text(), lambda m, line, col: line.startswith("v ")))
    _run(check_reader(read_mesh, path, tmp_path / "fixed", numbers=numbers))


# ---------------------------------------------------------------------------------------------------- pde
def test_netcdf_reader(tmp_path):
    pytest.importorskip("xarray", reason="pde extra (xarray) not installed")
    from importlib import resources

    from flowsci.domains.pde.data import open_dataset

    def read(path: str):
        return open_dataset(path, check_values=True).load()

    valid = resources.files("flowsci.domains.pde") / "sample_data" / "burgers_test_g128_s32.nc"
    with resources.as_file(valid) as path:
        _run(check_reader(read, path, tmp_path / "fixed", number_pattern=None, name="open_dataset"))
