"""CSP of a file: `sample(k, compositions_from=...)`, the `<material_id>_<j>.cif` layout, scoring it back, and the
figure `write_samples` draws (reference overlay and unit cells)."""

import numpy as np
import pandas as pd
import pytest
import torch

from flowsci.domains.crystals import data as D
from flowsci.domains.crystals import metrics as M
from flowsci.domains.crystals.flow import CrysBFN, CrystalFlowMatching
from flowsci.domains.crystals.model import CSPNet
from flowsci.errors import InputError


def _net(cond_entropy=True):
    torch.manual_seed(0)
    return CSPNet(num_types=100, hidden_dim=32, num_layers=2, num_freqs=4, time_dim=16, cond_entropy=cond_entropy)


def _csp():
    return CrysBFN(_net(), task="csp", lattice_scale=2.4)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """Four Perov-5 test rows (CDVAE columns) and a folder of their CIFs."""
    root = tmp_path_factory.mktemp("csp_in")
    df = pd.read_csv(D.sample_data_path("perov_5_test_subset"), nrows=4)
    df.to_csv(root / "four.csv", index=False)
    (root / "cifs").mkdir()
    for mid, cif in zip(df["material_id"], df["cif"], strict=True):
        (root / "cifs" / f"{mid}.cif").write_text(cif)
    return root, [str(m) for m in df["material_id"]]


def test_read_compositions_csv_folder_formulas_and_errors(small_csv, tmp_path):
    root, ids = small_csv
    zs, got_ids, refs = D.read_compositions(root / "four.csv")
    assert got_ids == ids and len(refs) == 4 and all(len(z) == 5 for z in zs)
    zs_dir, dir_ids, _ = D.read_compositions(root / "cifs")
    assert sorted(dir_ids) == sorted(ids)
    assert sorted(map(sorted, zs_dir)) == sorted(map(sorted, zs))
    pd.DataFrame({"material_id": ["a", "b"], "formula": ["SrTiO3", "Sr2Ti2O6"]}).to_csv(tmp_path / "f.csv")
    fz, fids, frefs = D.read_compositions(tmp_path / "f.csv")
    assert fids == ["a", "b"] and [len(z) for z in fz] == [5, 10] and frefs is None
    pd.DataFrame({"material_id": ["a", "b"], "formula": ["SrTiO3", "Xx2O3"]}).to_csv(tmp_path / "bad.csv")
    with pytest.raises(InputError, match=r"bad\.csv, row 1 \(material_id=b\).*unknown element"):
        D.read_compositions(tmp_path / "bad.csv")
    pd.DataFrame({"material_id": ["a", "a"], "formula": ["SrTiO3", "NaCl"]}).to_csv(tmp_path / "dup.csv")
    with pytest.raises(InputError, match="row 1.*duplicate material_id 'a'"):
        D.read_compositions(tmp_path / "dup.csv")
    pd.DataFrame({"material_id": ["a"], "energy": [1.0]}).to_csv(tmp_path / "none.csv")
    with pytest.raises(InputError, match="no 'cif' column and no formula column"):
        D.read_compositions(tmp_path / "none.csv")
    with pytest.raises(InputError, match="no such file"):
        D.read_compositions(tmp_path / "missing.csv")


def test_prediction_file_names_and_round_trip(perov, tmp_path):
    assert D.prediction_file_names(["mp-1", "a/b"], 1) == [["mp-1.cif"], ["a_b.cif"]]
    assert D.prediction_file_names(["mp-1"], 2) == [["mp-1_0.cif", "mp-1_1.cif"]]
    D.write_predictions([perov[:2], perov[2:4]], ["x", "x_1"], tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_0.cif", "x_1.cif", "x_1_0.cif", "x_1_1.cif"]
    back = D.read_predictions(tmp_path, ["x", "x_1", "absent"])
    assert [len(b) for b in back] == [2, 2, 0]
    assert back[1][1].composition == perov[3].composition
    with pytest.raises(ValueError, match="same number of samples"):
        D.write_predictions([perov[:2], perov[:1]], ["a", "b"], tmp_path / "o")


def test_sample_compositions_from_csv_writes_one_cif_per_sample_and_scores(small_csv, tmp_path):
    root, ids = small_csv
    model = _csp()
    sol = model.sample(2, steps=2, seed=0, compositions_from=str(root / "four.csv"), progress=False)
    assert sol.ids == ids and sol.samples_per_crystal == 2 and len(sol.structures) == 8
    assert [len(g) for g in sol.per_crystal()] == [2] * 4
    again = model.sample(2, steps=2, seed=0, compositions_from=str(root / "four.csv"), progress=False)
    torch.testing.assert_close(sol.x, again.x)  # seeded
    for group, ref in zip(sol.per_crystal(), sol.references, strict=True):
        assert all(s.composition == ref.composition for s in group)
    written = model.write_samples(sol, tmp_path / "preds")
    names = sorted(p.name for p in written)
    assert names == sorted([f"{i}_{j}.cif" for i in ids for j in range(2)] + ["structures.png"])
    table = M.evaluate_csp_files(tmp_path / "preds", root / "four.csv")
    assert table["n"][0] == 4 and table["missing"][0] == 0 and table["samples_per_crystal"][0] == 2
    assert table["oxidation_states_set"][0] == "smact14" and 0.0 <= table["match_rate"][0] <= 1.0
    # the ground truth scored as its own prediction: every crystal matches, RMSE 0
    D.write_predictions([[r] for r in sol.references], ids[:3] + ["other"], tmp_path / "truth")
    truth = M.evaluate_csp_files(tmp_path / "truth", root / "four.csv")
    assert truth["match_rate_any"][0] == 0.75 and truth["missing"][0] == 1
    assert truth["rmse_any"][0] == pytest.approx(0.0, abs=1e-6)
    grouped = M.evaluate(sol, sol.references, task="csp")  # best of k per input crystal
    assert grouped["n"][0] == 4 and grouped["oxidation_states_set"][0] == "smact14"


def test_sample_compositions_from_cif_folder_one_sample_fm(small_csv, tmp_path):
    root, ids = small_csv
    model = CrystalFlowMatching(_net(cond_entropy=False), lattice_scale=2.4)
    sol = model.sample(1, steps=2, seed=0, compositions_from=str(root / "cifs"), progress=False)
    written = model.write_samples(sol, tmp_path / "out")
    assert sorted(p.name for p in written) == sorted([f"{i}.cif" for i in ids] + ["structures.png"])


def test_sample_compositions_from_rejects_bad_input(small_csv, tmp_path):
    root, _ = small_csv
    model = _csp()
    with pytest.raises(InputError, match="either composition or compositions_from"):
        model.sample(1, composition="SrTiO3", compositions_from=str(root / "four.csv"))
    with pytest.raises(InputError, match="nothing.csv: no such file"):
        model.sample(1, compositions_from=str(tmp_path / "nothing.csv"))
    with pytest.raises(InputError, match="num"):
        model.sample(0, compositions_from=str(root / "four.csv"))
    gen = CrysBFN(_net(), task="gen", lattice_scale=2.4, num_atoms_dist=[0, 0, 0, 0, 0, 1.0])
    with pytest.raises(ValueError, match="task"):
        gen.sample(1, compositions_from=str(root / "four.csv"))


def test_plot_structures_draws_cells_with_validity(perov, tmp_path):
    from pymatgen.core import Lattice, Structure

    clash = Structure(Lattice.cubic(4.0), ["Na", "Na"], [[0, 0, 0], [0.01, 0, 0]])
    out = M.plot_structures([clash, *perov[:3]], perov[3:12], tmp_path / "c.png", title="t", cells=4)
    assert out.stat().st_size > 10_000
    import matplotlib.image as mpimg

    assert mpimg.imread(out).shape[0] == 3 * 340  # three rows: six panels, then the cells


def test_bundled_reference_picks_the_dataset(perov):
    from pymatgen.core import Lattice, Structure

    from flowsci.domains.crystals.flow import bundled_reference

    ref, label = bundled_reference(perov[:2], size=5)
    assert "Perov-5" in label and len(ref) == 5
    carbon = Structure(Lattice.cubic(3.6), ["C", "C"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    ref, label = bundled_reference([carbon], size=5)
    assert "Carbon-24" in label and {e.symbol for s in ref for e in s.composition.elements} == {"C"}
    assert np.isfinite([s.density for s in ref]).all()


def test_cli_sample_compositions_from_a_csv(small_csv, tmp_path, monkeypatch, capsys):
    """`flowsci sample --ckpt C --set compositions_from=file.csv --num 2 --out dir` writes <id>_<j>.cif."""
    import pytorch_lightning as pl

    from flowsci.cli import main

    root, ids = small_csv
    model = _csp()
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    monkeypatch.chdir(tmp_path)
    main(["sample", "--ckpt", "m.ckpt", "--num", "2", "--steps", "2", "--set", f"compositions_from={root}/four.csv"])
    names = sorted(p.name for p in (tmp_path / "samples").iterdir())
    assert names == sorted([f"{i}_{j}.cif" for i in ids for j in range(2)] + ["structures.png"])
    with pytest.raises(SystemExit) as exc:  # a missing file is a usage error that names it
        main(["sample", "--ckpt", "m.ckpt", "--num", "1", "--out", "o2", "--set", "compositions_from=nothing.csv"])
    assert exc.value.code == 2 and "nothing.csv: no such file" in capsys.readouterr().err
