"""Shipped LightningCLI configs build the right objects; the benchmark spec is well formed and runs (smoke)."""

from importlib import resources

import pytest
import torch

CONFIGS = ["crysbfn_csp_tiny", "crysbfn_csp_paper", "crysbfn_gen_tiny", "fm_csp_tiny"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_instantiates(name, tmp_path):
    import pytorch_lightning as pl
    from pytorch_lightning.cli import LightningCLI

    from flowsci.domains.crystals import CrysBFN, CrystalDataModule, CrystalFlowMatching, CSPNet

    path = resources.files("flowsci.configs").joinpath(f"crystals/{name}.yaml")
    cli = LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        auto_configure_optimizers=False,
        args=["--config", str(path), "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
    )
    expected = CrystalFlowMatching if name.startswith("fm") else CrysBFN
    assert type(cli.model) is expected and isinstance(cli.model.net, CSPNet)
    assert isinstance(cli.datamodule, CrystalDataModule)
    if name.startswith("crysbfn"):
        assert cli.model.net.cond_entropy and cli.model.coord_flow.beta1 == 1e3
        assert cli.model.task == ("gen" if "gen" in name else "csp")
        assert cli.model.lattice_center == ("gen" in name)  # the generation recipe centres the lattice flow
    if "paper" in name:
        assert sum(p.numel() for p in cli.model.parameters()) > 10e6


def test_benchmark_spec_and_metric(perov):
    from flowsci.domains.crystals.benchmark import csp_metric, spec

    s = spec("quick")
    assert s.nfe_grid == (5, 10, 20, 50, 100) and s.num_samples == 500
    assert {m.name for m in s.methods} == {
        "crysbfn",
        "crysbfn-bayes",
        "crysbfn-time-only",
        "crysbfn-paper-loss",
        "fm-torus",
    }
    assert [m.name for m in s.methods if m.baseline] == ["fm-torus"]
    assert s.method("crysbfn-bayes").weights_of == "crysbfn" and s.train_steps_of(s.method("crysbfn-bayes")) == 6000
    tuned, paper, fm = (s.method(n).build(None) for n in ("crysbfn", "crysbfn-paper-loss", "fm-torus"))
    assert (tuned.loss_weighting, tuned.translation_invariant, tuned.train_steps) == ("uniform", True, [10])
    assert (paper.loss_weighting, paper.translation_invariant) == ("bfn", False)
    assert fm.lattice_target == "x1"
    full = {m.name for m in spec("full").methods}
    assert {"crysbfn-multi-n", "crysbfn-residual-lattice", "fm-torus-frame", "fm-torus-velocity"} <= full
    assert all(r.to_json()["kind"] == "reported" for r in s.references)
    out = csp_metric(perov[:3], perov[:3])  # the ground truth predicts itself
    assert out["match_rate"] == 1.0 and out["rmse"] == pytest.approx(0.0, abs=1e-6) and out["valid"] == 1.0
    with pytest.raises(ValueError, match="unknown suite"):
        spec("huge")


@pytest.mark.parametrize("domain", ["crystals_gen", "crystals_gen_c24"])
def test_generation_benchmark_smoke_run(tmp_path, domain):
    from flowsci.benchmarks.registry import load_spec
    from flowsci.benchmarks.runner import run_spec

    torch.set_num_threads(1)
    s = load_spec(domain, "smoke")
    doc = run_spec(s, "smoke", out=tmp_path, progress=False, plots=False, cache=False)
    cells = {c["method"]: c for c in doc["cells"]}
    assert set(cells) == {"crysbfn-gen", "training-data"}
    assert all(c["status"] == "ok" for c in cells.values()), [c.get("error") for c in cells.values()]
    assert cells["crysbfn-gen"]["nfe"] == cells["crysbfn-gen"]["nfe_counted"] == 5
    assert 0.0 <= cells["crysbfn-gen"]["metrics"]["valid"] <= 1.0
    assert cells["training-data"]["metrics"]["struct_valid"] == 1.0  # real crystals are valid
    quick = load_spec(domain, "quick")
    assert quick.num_samples == (200 if domain == "crystals_gen" else 100)
    model = quick.methods[0].build(None)
    assert (model.task, model.train_steps, model.loss_weighting) == ("gen", [10], "uniform")
    assert model.lattice_center == (domain == "crystals_gen")  # Perov-5 centres the lattice flow, Carbon-24 not
    if domain == "crystals_gen_c24":  # Carbon-24 is all carbon
        dm = s.datamodule()
        dm.setup("fit")
        assert {site.specie.symbol for st in dm.train_set.structures() for site in st} == {"C"}


def test_generation_metric_on_data(perov):
    from flowsci.domains.crystals import metrics as M
    from flowsci.domains.crystals.benchmark_gen import generation_metric

    out = generation_metric(perov[:6], perov[:6], coverage=False)
    assert out["struct_valid"] == 1.0 and out["comp_valid"] >= 5 / 6
    assert out["wdist_num_elems"] == 0.0 and out["wdist_density"] == pytest.approx(0.0, abs=1e-12)
    valid = [s for s in perov[:6] if M.compositional_validity(s, "smact14")]
    assert out["mean_density"] == pytest.approx(sum(s.density for s in valid) / len(valid))


def test_carbon24_csp_benchmark_smoke_run(tmp_path):
    from flowsci.benchmarks.registry import load_spec
    from flowsci.benchmarks.runner import run_spec

    torch.set_num_threads(1)
    s = load_spec("crystals_c24", "smoke")
    assert s.name == "crystals_c24" and [m.name for m in s.methods] == ["crysbfn", "crysbfn-bayes", "fm-torus"]
    doc = run_spec(s, "smoke", out=tmp_path, progress=False, plots=False, cache=False)
    assert all(c["status"] == "ok" for c in doc["cells"]), [c.get("error") for c in doc["cells"]]
    assert {"match_rate", "rmse", "valid", "lattice_err", "lattice_off"} <= set(doc["cells"][0]["metrics"])
    dm = s.datamodule()
    dm.setup("test")
    assert {site.specie.symbol for st in dm.test_set.structures() for site in st} == {"C"}
    quick = load_spec("crystals_c24", "quick")
    assert quick.train_steps == 6000 and quick.num_samples == 500


def test_cli_fit_then_sample_writes_cifs_for_a_composition(tmp_path, monkeypatch):
    """README's CLI path: `flowsci fit --config crystals/crysbfn_csp_tiny.yaml`, then `flowsci sample --set`."""
    from pymatgen.core import Structure

    from flowsci.cli import main

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            "crystals/crysbfn_csp_tiny.yaml",
            "--trainer.max_steps=3",
            "--trainer.val_check_interval=3",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--data.init_args.max_train=64",
            "--data.init_args.max_val=16",
        ]
    )
    ckpt = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    main(["sample", "--ckpt", str(ckpt), "--num", "3", "--steps", "5", "--set", "composition=SrTiO3", "--out", "cifs"])
    cifs = sorted((tmp_path / "cifs").glob("*.cif"))
    assert len(cifs) == 3 and (tmp_path / "cifs" / "structures.png").is_file()
    assert {Structure.from_file(str(p)).composition.reduced_formula for p in cifs} == {"SrTiO3"}


def test_nfe_sweep_columns_with_an_oracle_predictor():
    """nfe_sweep scores what the model predicts for the first test crystals: exact copies at NFE 2 match at every
    tolerance; copies with one atom moved by 0.5 (V/N)^(1/3) at NFE 1 match only at the field's stol = 0.5."""
    import numpy as np
    from pymatgen.core import Structure

    from flowsci.domains.crystals import benchmark as B
    from flowsci.domains.crystals.data import CrystalDataset

    gts = CrystalDataset("perov_5_test_subset", limit=3).structures()

    class Oracle:
        def predict_structures(self, z, steps, seed, batch_size, solver):
            assert z == [[site.specie.Z for site in s] for s in gts] and batch_size == 3 and solver == "x"
            if steps > 1:
                return [s.copy() for s in gts]
            out = []
            for s in gts:
                cart = s.cart_coords.copy()
                cart[0, 0] += 0.5 * (s.volume / len(s)) ** (1 / 3)
                out.append(Structure(s.lattice, s.species, cart, coords_are_cartesian=True))
            return out

    df = B.nfe_sweep(Oracle(), num=3, nfes=(1, 2), solver="x", stols=(0.2,))
    assert list(df["nfe"]) == [1, 2]
    assert list(df["match_rate"]) == [1.0, 1.0] and list(df["match_rate_stol0.2"]) == [0.0, 1.0]
    assert list(df["se"]) == [0.0, 0.0] and df["rmse"].iloc[1] == pytest.approx(0.0, abs=1e-6)
    assert list(df["match_rate_true_lattice"]) == [1.0, 1.0] and np.all(df["valid"] <= 1.0)


def test_nfe_sweep_start_scores_held_out_crystals():
    """``start`` scores crystals start … start + num − 1 (recipes are chosen on crystals the tables do not use):
    the model is asked for exactly those compositions, and copies of the first crystals would not match them."""
    from flowsci.domains.crystals import benchmark as B
    from flowsci.domains.crystals.data import CrystalDataset

    everything = CrystalDataset("perov_5_test_subset", limit=4).structures()
    held_out = everything[2:4]

    class Copier:
        def __init__(self, structures):
            self.structures = structures

        def predict_structures(self, z, steps, seed, batch_size, solver):
            assert z == [[site.specie.Z for site in s] for s in held_out] and batch_size == 2
            return [s.copy() for s in self.structures]

    assert list(B.nfe_sweep(Copier(held_out), num=2, nfes=(1,), start=2, stols=())["match_rate"]) == [1.0]
    assert list(B.nfe_sweep(Copier(everything[:2]), num=2, nfes=(1,), start=2, stols=())["match_rate"]) == [0.0]
    with pytest.raises(ValueError, match="start"):
        B.nfe_sweep(Copier(held_out), num=2, start=-1)
