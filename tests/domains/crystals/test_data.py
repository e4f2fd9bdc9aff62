"""Readers, canonicalisation, graph conversion, CIF round trip and error messages."""

import numpy as np
import pytest
import torch

from flowsci.domains.crystals import data as D


def test_read_bundled_csv_canonical(perov):
    assert len(perov) == 24
    for s in perov:
        f = s.frac_coords
        assert (f >= 0).all() and (f < 1).all()
        # canonical orientation: Lattice.from_parameters puts the c vector along z
        m = s.lattice.matrix
        np.testing.assert_allclose(m[2, :2], 0.0, atol=1e-8)
    assert {len(s) for s in perov} == {5}


def test_graph_round_trip_and_batching(perov):
    from torch_geometric.data import Batch

    datas = [D.structure_to_data(s, str(i)) for i, s in enumerate(perov[:4])]
    b = Batch.from_data_list(datas)
    assert b.frac_coords.shape == (20, 3) and b.lattice.shape == (4, 3, 3)
    assert b.num_atoms.tolist() == [5, 5, 5, 5] and b.batch.tolist()[:6] == [0] * 5 + [1]
    back = D.batch_to_structures(b.atom_types, b.frac_coords, b.lattice, b.num_atoms)
    for s0, s1 in zip(perov[:4], back, strict=False):
        assert s0.composition == s1.composition
        np.testing.assert_allclose(s0.lattice.matrix, s1.lattice.matrix, atol=1e-5)
        np.testing.assert_allclose(s0.frac_coords, s1.frac_coords, atol=1e-6)


def test_cif_round_trip_atomic(tmp_path, perov):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    paths = D.write_cifs(perov[:3], tmp_path / "out")
    assert len(paths) == 3 and all(p.suffix == ".cif" for p in paths)
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temp files left behind
    structures, ids = D.read_cif_dir(tmp_path / "out")
    assert ids == [p.stem for p in sorted(paths)]
    m = StructureMatcher()
    for s0, s1 in zip(perov[:3], structures, strict=False):
        assert m.fit(s0, s1)
        np.testing.assert_allclose(s0.lattice.abc, s1.lattice.abc, atol=1e-5)
    # a single CIF file and the object path agree
    one, _ = D.read_structures(paths[0])
    objs, _ = D.read_structures(perov[:1])
    assert m.fit(one[0], objs[0])


def test_niggli_primitive_reduces_supercell(perov):
    sc = perov[0].copy()
    sc.make_supercell([2, 1, 1])
    red = D.canonicalize(sc)
    assert len(red) == 5
    assert red.volume == pytest.approx(perov[0].volume, rel=1e-6)


def test_wrap_to_unit_interval():
    from pymatgen.core import Lattice, Structure

    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[-0.25, 1.0, 2.5], [0.5, 0.5, 0.5]])
    c = D.canonicalize(s, primitive=False)
    assert (c.frac_coords >= 0).all() and (c.frac_coords < 1).all()


def test_ase_input():
    ase = pytest.importorskip("ase")
    from ase.build import bulk

    structures, _ = D.read_structures([bulk("NaCl", "rocksalt", a=5.64, cubic=True)])
    assert len(structures[0]) == 2  # primitive cell of rock salt
    with pytest.raises(D.CrystalDataError, match="periodic"):
        D.from_ase(ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]]))


def test_bad_cif_error_names_file_and_row(tmp_path):
    import pandas as pd

    good = open(D.sample_data_path("perov_5_val"), "rb")
    good.close()
    df = pd.read_csv(D.sample_data_path("perov_5_val"), nrows=3)
    df.loc[1, "cif"] = "data_broken\n_cell_length_a nonsense\n"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    with pytest.raises(D.CrystalDataError, match=r"bad\.csv, row 1 \(material_id="):
        D.read_csv(bad)
    with pytest.raises(D.CrystalDataError, match="no column 'structure'"):
        D.read_csv(bad, cif_column="structure")
    (tmp_path / "cifs").mkdir()
    (tmp_path / "cifs" / "x.cif").write_text("garbage")
    with pytest.raises(D.CrystalDataError, match=r"x\.cif: pymatgen cannot parse"):
        D.read_cif_dir(tmp_path / "cifs")
    with pytest.raises(D.CrystalDataError, match="no such file"):
        D.read_structures(tmp_path / "missing.csv")


def test_datamodule_batches_and_stats(tmp_path):
    dm = D.CrystalDataModule(
        train="perov_5_val", val="perov_5_test_subset", batch_size=8, max_train=32, max_val=16, cache_dir=str(tmp_path)
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch.num_graphs == 8 and batch.frac_coords.shape[0] == int(batch.num_atoms.sum())
    lat = torch.cat([d.lattice for d in dm.train_set.data])
    assert dm.lattice_scale() == pytest.approx(float(lat.pow(2).mean().sqrt()))
    p = dm.num_atoms_distribution()
    assert p[5] == pytest.approx(1.0)
    # the cache is used the second time and gives identical data
    assert list(tmp_path.glob("*.pt"))
    ds2 = D.CrystalDataset("perov_5_val", limit=32, cache_dir=str(tmp_path))
    assert torch.equal(ds2[3].frac_coords, dm.train_set[3].frac_coords)


@pytest.mark.parametrize("name", ["carbon_24_val", "mp20_test_sample"])
def test_other_bundled_datasets(name):
    structures, ids = D.read_csv(name, limit=5)
    assert len(structures) == 5 and len(set(ids)) == 5
    if name.startswith("mp20"):
        assert all(i.startswith(("mp-", "mvc-")) for i in ids)
    else:
        assert all(s.composition.reduced_formula == "C" for s in structures)
    for s in structures:
        assert (s.frac_coords >= 0).all() and (s.frac_coords < 1).all()


# ------------------------------------------------------------------------------------------- bad inputs (issue 14)
def _good_cif():
    import pandas as pd

    return pd.read_csv(D.sample_data_path("perov_5_val"), nrows=1)["cif"].iloc[0]


def _with(cif, key, value):
    import re

    return re.sub(rf"({key}\s+)\S+", rf"\g<1>{value}", cif, count=1)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("_cell_angle_alpha", "180", "not between 0 and 180"),
        ("_cell_angle_gamma", "0", "not between 0 and 180"),
        ("_cell_length_b", "0.0", "length b = 0.0 is not positive"),
        ("_cell_length_b", "-3", "length b = -3.0 is not positive"),
        ("_cell_length_b", "nan", "non-finite cell parameter b"),
        ("_cell_length_c", "1e999", "non-finite cell parameter c"),
        ("_cell_angle_beta", "inf", "non-finite cell parameter beta"),
        ("_cell_length_a", "1.2x3", "malformed _cell_length_a"),
    ],
)
def test_cif_cell_errors_are_named(key, value, match):
    with pytest.raises(D.CrystalDataError, match=rf"^x\.csv, row 0: .*{match}"):
        D.parse_cif(_with(_good_cif(), key, value), source="x.csv, row 0")


def test_singular_lattice_is_named_as_such():
    cif = _with(
        _with(_with(_good_cif(), "_cell_angle_alpha", "120"), "_cell_angle_beta", "120"), "_cell_angle_gamma", "120"
    )
    with pytest.raises(D.CrystalDataError, match="singular lattice"):
        D.parse_cif(cif, source="s.cif")
    with pytest.raises(D.CrystalDataError, match="singular lattice"):
        D.check_cell((3, 3, 3), (90, 90, 180 - 1e-9))


def test_nan_site_coordinate_and_unknown_element_in_cif():
    cif = _good_cif()
    row = next(ln for ln in cif.splitlines() if ln.strip().startswith(("Cu", "Cd")))
    fields = row.split()
    with pytest.raises(D.CrystalDataError, match=r"^c\.cif: .*(non-finite|cannot parse)"):
        D.parse_cif(cif.replace(row, "  " + "  ".join([*fields[:3], "nan", *fields[4:]])), source="c.cif")
    with pytest.raises(D.CrystalDataError, match=r"^c\.cif: "):
        D.parse_cif(cif.replace(row, "  " + "  ".join(["Xx", "Xx0", *fields[2:]])), source="c.cif")
    with pytest.raises(D.CrystalDataError, match="empty CIF"):
        D.parse_cif("", source="c.cif")


@pytest.mark.parametrize(
    ("formula", "match"),
    [
        ("Xx2O3", "unknown element 'Xx'"),
        ("NaCl-", "malformed formula 'NaCl-'"),
        ("", "empty formula ''"),
        ("   ", "empty formula"),
        ("Fe2.5O3", "non-integer amount of Fe"),
        ("Na1e9Cl", "more than 1000 atoms"),
        ("H-1", "malformed formula"),
        ("NaCl)", "malformed formula"),
        ("Og2", "beyond Z = 100"),
    ],
)
def test_bad_compositions_are_input_errors(formula, match):
    from flowsci.errors import InputError

    with pytest.raises(InputError, match=rf"^--set composition: .*{match}"):
        D.parse_composition(formula, source="--set composition")


def test_parse_composition():
    assert D.parse_composition("SrTiO3") == [38, 22, 8, 8, 8]
    assert len(D.parse_composition("Sr2Ti2O6")) == 10
    from pymatgen.core import Composition

    assert D.parse_composition(Composition("NaCl")) == [11, 17]


def test_crystal_data_error_is_an_input_error_with_both_call_forms():
    from flowsci.errors import InputError

    old, new = D.CrystalDataError("f.csv, row 2: bad"), D.CrystalDataError("f.csv", "bad")
    assert isinstance(old, InputError) and isinstance(old, ValueError)
    assert (old.source, old.problem) == ("f.csv, row 2", "bad") and str(new) == "f.csv: bad"


def test_cache_is_loaded_without_pickle_and_remade_when_unusable(tmp_path):
    ds = D.CrystalDataset("perov_5_test_subset", limit=3, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("*.pt")
    torch.load(cache, weights_only=True)  # plain tensors, lists and strings only
    again = D.CrystalDataset("perov_5_test_subset", limit=3, cache_dir=tmp_path)
    assert again.ids == ds.ids and torch.equal(again.data[0].frac_coords, ds.data[0].frac_coords)
    cache.write_bytes(cache.read_bytes()[:100])  # truncated: re-made with a warning, never a traceback
    with pytest.warns(UserWarning, match="unusable crystal cache"):
        remade = D.CrystalDataset("perov_5_test_subset", limit=3, cache_dir=tmp_path)
    assert remade.ids == ds.ids
    torch.load(cache, weights_only=True)


def test_unwritable_cache_folder_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(D.CrystalDataError, match=r"cannot write the parsed-data cache.*cache_dir=False") as err:
        D.CrystalDataset("perov_5_test_subset", limit=2, cache_dir=blocker / "sub")
    assert err.value.source == str(blocker / "sub")


def test_fingerprint_cache_is_pickle_free():
    from flowsci.domains.crystals.metrics import _pack_arrays, _unpack_arrays

    items = [np.arange(3.0), None, np.ones(2)]
    packed = _pack_arrays(items, "s")
    assert all(a.dtype != object for a in packed.values())
    back = _unpack_arrays(packed, "s")
    assert back[1] is None and np.array_equal(back[0], items[0]) and np.array_equal(back[2], items[2])
