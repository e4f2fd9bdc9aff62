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
