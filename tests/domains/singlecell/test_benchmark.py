"""The benchmark spec: suites, methods, the reference/floor convention and the metric columns."""

from __future__ import annotations

import numpy as np
import pytest

from flowsci.benchspec import BenchmarkSpec
from flowsci.domains.singlecell import benchmark


@pytest.mark.parametrize("suite", ["smoke", "quick", "full"])
def test_spec_builds_for_every_suite(suite):
    s = benchmark.spec(suite)
    assert isinstance(s, BenchmarkSpec) and s.name == "singlecell" and s.noise_floor
    names = [m.name for m in s.methods]
    assert "wbdit-flow" in names and "gaussian-pca" in names
    if suite != "smoke":
        assert {"dit-flow", "wbdit-ddpm", "latent-mlp-flow"} <= set(names)
        assert s.method("wbdit-reflow").init_from == "wbdit-flow"
        assert {c.solver for c in s.cells() if c.method == "wbdit-ddpm"} == {"ddim"}  # the DDPM rows say DDIM
        # the type-prior row trains at least as long as the others (4,000 steps in quick, chosen on validation)
        assert s.train_steps_of(s.method("wbdit-flow-typeprior")) >= s.train_steps
        # decoder ablations reuse the trained weights and only sample differently
        for name in ("wbdit-flow-round", "wbdit-flow-continuous"):
            assert s.method(name).weights_of == "wbdit-flow" and s.method(name).sample is not None
    assert s.num_samples == 112  # the test split of the shipped PBMC set
    with pytest.raises(ValueError):
        benchmark.spec("huge")


def test_reference_and_floor_convention():
    dm = benchmark._datamodule()
    ref = benchmark.reference_data(dm, 112, 0)
    floor = benchmark.reference_data(dm, 112, 1)
    assert not ref.is_train and floor.is_train
    assert ref.heldout.n_obs == floor.heldout.n_obs == 112
    assert set(ref.heldout.obs_names).isdisjoint(ref.train.obs_names)
    counts = ref.heldout.obs["cell_type"].value_counts().to_dict()
    assert floor.heldout.obs["cell_type"].value_counts().to_dict() == counts
    scores = benchmark.score(floor, ref, markers=False)
    assert scores["clf_acc_gen"] == scores["clf_acc_real"]  # the floor's classifier value is held-out accuracy
    assert 0.4 < scores["knn_auc"] < 0.8 and "basis" in ref.cache


def test_smoke_models_build_and_sample():
    dm = benchmark._datamodule()
    ref = benchmark.reference_data(dm, 112, 0)
    from flowsci.benchspec import SampleRequest

    for build in (benchmark.build_gaussian, benchmark.build_latent):
        model = build(dm)
        sol = benchmark.sample_cells(model, SampleRequest(dm, ref, 112, "euler", 2, 2, 0))
        assert sol.adata.n_obs == 112 and sol.adata.uns["flowsci"]["params"] >= 0
        assert sol.adata.uns["flowsci"]["decoder"] == "lattice"
    cont = benchmark.sample_cells(model, SampleRequest(dm, ref, 112, "euler", 2, 2, 0), decoder="none")
    assert cont.adata.uns["flowsci"]["decoder"] == "none"


def test_spread_is_the_mean_and_standard_error_over_draws():
    dm = benchmark._datamodule()
    ref = benchmark.reference_data(dm, 112, 0)
    floors = [benchmark.reference_data(dm, 112, s + 1) for s in range(3)]
    out = benchmark.spread(lambda s: floors[s], ref, draws=3)
    aucs = [benchmark.score(f, ref, markers=False)["knn_auc"] for f in floors]
    assert out["knn_auc"][0] == pytest.approx(np.mean(aucs))
    assert out["knn_auc"][1] == pytest.approx(np.std(aucs, ddof=1) / np.sqrt(3)) and out["knn_auc"][1] > 0
    same = benchmark.spread(lambda s: floors[0], ref, draws=2)  # one draw repeated: no spread
    assert same["knn_auc"] == (pytest.approx(aucs[0]), 0.0)
    with pytest.raises(ValueError):
        benchmark.spread(lambda s: floors[0], ref, draws=1)


def test_score_on_unlabelled_cells_matches_evaluate(synth_path):
    """Unlabelled data (one type): ``score`` fits no classifier and its distribution metrics are ``evaluate``'s."""
    from flowsci.domains.singlecell.data import SingleCellDataModule
    from flowsci.domains.singlecell.metrics import evaluate

    dm = SingleCellDataModule(str(synth_path), label_key="", batch_size=32, seed=0)
    dm.setup()
    assert dm.num_classes == 1
    ref = benchmark.reference_data(dm, len(dm.test_idx), 0)
    floor = benchmark.reference_data(dm, len(dm.test_idx), 1)
    gen = benchmark.build_gaussian(dm).sample(ref.heldout.n_obs, seed=0, cells={"cell": ref.heldout.n_obs}).adata
    for cells in (floor, gen):
        out = benchmark.score(cells, ref, markers=False)
        assert ref.cache["clf"] is None and not any(k.startswith("clf_") for k in out)
        x = cells.heldout if isinstance(cells, benchmark.CellReference) else cells
        table = evaluate(x, ref.heldout, train=ref.train, markers=False, floor=False)
        for k in ("w2", "mmd", "knn_auc", "var_pearson"):
            assert out[k] == pytest.approx(table.loc[k, "value"], rel=1e-9, abs=1e-12)
        assert out["type_w2"] == pytest.approx(out["w2"])  # the single type is every cell
    # the Gaussian of 313 synthetic cells of three planted types is told apart more than real training cells
    assert benchmark.score(gen, ref, markers=False)["knn_auc"] > benchmark.score(floor, ref, markers=False)["knn_auc"]
