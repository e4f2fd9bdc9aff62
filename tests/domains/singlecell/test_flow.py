"""The generative modules: training step, sampling to AnnData, conditioning, checkpoints, DDIM, latent, floor."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from flowsci.domains.singlecell import (
    GaussianBaseline,
    LatentFlow,
    WBDiT,
    WhiteBoxDiffusion,
    WhiteBoxFlow,
)
from flowsci.errors import InputError
from flowsci.module import QUIET_TRAINER
from flowsci.nets import MLP


def _fit(model, dm, steps=3):
    pl.Trainer(**QUIET_TRAINER, max_steps=steps, accelerator="cpu", devices=1).fit(model, datamodule=dm)
    return model.eval()


@pytest.fixture(scope="module")
def flow(synth_dm):
    torch.manual_seed(0)
    return _fit(WhiteBoxFlow(WBDiT(60, 3, patch=6, hidden=16, depth=1, heads=2)), synth_dm)


def test_fit_takes_statistics_from_the_datamodule(flow, synth_dm):
    assert flow.meta["genes"] == synth_dm.genes and flow.data_shape == [60]
    z = flow.standardize(torch.from_numpy(synth_dm.train_matrix()[0]))
    assert z.mean().abs() < 1e-4  # standardised training data
    torch.testing.assert_close(flow.unstandardize(z), torch.from_numpy(synth_dm.train_matrix()[0]), atol=1e-5, rtol=0)


def test_sample_returns_cells_as_anndata(flow):
    sol = flow.sample(5, steps=2, seed=3, cells={"type2": 4, "type0": 2})
    adata = sol.adata
    assert adata.shape == (6, 60) and sol.nfe == 2 and sol.seed == 3
    assert adata.obs["cell_type"].astype(str).tolist() == ["type2"] * 4 + ["type0"] * 2
    assert adata.obs["generated"].all() and list(adata.var_names) == flow.meta["genes"]
    counts = adata.layers["counts"].toarray()
    assert (counts >= 0).all() and np.array_equal(counts, np.round(counts))
    # X is log1p(normalize_total) of the counts with the drawn library sizes
    lib = adata.obs["library_size"].to_numpy(np.float64)
    np.testing.assert_allclose(adata.X, np.log1p(counts * (1e4 / lib)[:, None]), rtol=1e-5, atol=1e-6)
    assert adata.uns["flowsci"]["nfe"] == 2


def test_count_decoders_of_generated_cells(flow):
    cont = flow.sample(6, steps=2, seed=4, decoder="none").adata
    latt = flow.sample(6, steps=2, seed=4).adata
    assert latt.uns["flowsci"]["decoder"] == "lattice" and cont.uns["flowsci"]["decoder"] == "none"
    # the same prior draw and library sizes: each count is one of the two levels around the continuous value
    mu = cont.layers["counts"].toarray().astype(np.float64)  # expm1(x) L / 1e4, not whole
    c = latt.layers["counts"].toarray()
    np.testing.assert_array_equal(cont.obs["library_size"], latt.obs["library_size"])
    assert np.all((c == np.floor(mu)) | (c == np.floor(mu) + 1)) and not np.array_equal(mu, np.round(mu))
    with pytest.raises(InputError, match="decoder"):
        flow.sample(2, steps=2, decoder="poisson")


def test_sampling_is_seeded(flow):
    a = flow.sample(4, steps=2, seed=1).adata
    b = flow.sample(4, steps=2, seed=1).adata
    c = flow.sample(4, steps=2, seed=2).adata
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.array_equal(a.X, c.X)


@pytest.mark.parametrize("cells", [{"nope": 3}, {"type0": -1}, {"type0": 0}, {"type0": 1.5}, ["type0"]], ids=str)
def test_bad_cells_are_rejected(flow, cells):
    with pytest.raises(InputError, match="cells"):
        flow.sample(2, steps=1, cells=cells)


def test_bad_sample_arguments(flow):
    with pytest.raises(InputError):
        flow.sample(0)
    with pytest.raises(InputError):
        flow.sample(2, steps=0)
    with pytest.raises(InputError):
        flow.sample(2, solver="leapfrog")


def test_checkpoint_round_trip_samples_identically(flow, tmp_path, synth_dm):
    trainer = pl.Trainer(**QUIET_TRAINER, max_steps=1, accelerator="cpu", devices=1)
    net = WBDiT(60, 3, patch=6, hidden=16, depth=1, heads=2)
    trainer.fit(WhiteBoxFlow(net, prior="type"), datamodule=synth_dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    model = trainer.lightning_module.eval()
    loaded = WhiteBoxFlow.from_checkpoint(path)
    assert loaded.meta["cell_types"] == ["type0", "type1", "type2"] and loaded.prior == "type"
    a = model.generate({"type1": 3}, steps=2, seed=5)
    b = loaded.generate({"type1": 3}, steps=2, seed=5)
    np.testing.assert_array_equal(a.X, b.X)


def test_write_samples_writes_h5ad_and_png(flow, tmp_path):
    import anndata as ad

    sol = flow.sample(6, steps=1, seed=0)
    files = flow.write_samples(sol, tmp_path / "out")
    assert sorted(p.name for p in files) == ["samples.h5ad", "samples.png"]
    back = ad.read_h5ad(tmp_path / "out" / "samples.h5ad")
    np.testing.assert_array_equal(back.X, sol.adata.X)
    assert (tmp_path / "out" / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_classifier_free_guidance_doubles_nfe(flow):
    assert flow.sample(2, steps=2, seed=0, cfg_scale=2.0).nfe == 4


def test_reflow_pairs_live_in_flow_space(flow):
    from flowsci.reflow import generate_pairs

    pairs = generate_pairs(flow, 5, steps=2, cond={"y": torch.tensor([0, 1, 2, 0, 1])}, seed=0)
    assert pairs.x0.shape == pairs.x1.shape == (5, 60)
    batch = {"x1": pairs.x1, "x0": pairs.x0, "y": pairs.cond["y"]}
    loss, _ = flow.compute_loss(batch)
    assert torch.isfinite(loss)


def test_rectify_and_distill_shorten_the_flow_to_one_step(flow):
    """The core's rectify / distill on this model: the student's one Euler step reproduces the coupling better."""
    from flowsci.distill import Distillation, distill
    from flowsci.reflow import generate_pairs, rectify

    teacher = copy.deepcopy(flow)
    torch.manual_seed(0)
    for p in teacher.net.parameters():  # a curved velocity field (the fixture's is nearly constant)
        p.data.normal_(0.0, 0.3)
    y = torch.tensor([0, 1, 2] * 8)
    pairs = generate_pairs(teacher, len(y), steps=8, cond={"y": y}, seed=0)
    kw = {"trainer_kwargs": {"accelerator": "cpu", "devices": 1}, "batch_size": 24}

    def one_step_error(model):
        with torch.no_grad():
            return float((Distillation(model, steps=1)(pairs.x0, y=y) - pairs.x1).pow(2).mean())

    before = one_step_error(teacher)
    student = distill(teacher, pairs, steps=1, lr=3e-3, max_steps=60, **kw)
    assert one_step_error(student) < 0.5 * before and one_step_error(teacher) == before  # teacher unchanged
    assert student.sample(4, steps=1, seed=0).nfe == 1  # the one-step student generates cells
    rectified = rectify(teacher, pairs, max_steps=2, **kw)
    assert rectified is not teacher and rectified.sample(3, steps=1, seed=0).adata.shape == (3, 60)


def test_ddim_with_eta0_is_deterministic_and_counts_nfe(synth_dm):
    model = _fit(WhiteBoxDiffusion(WBDiT(60, 3, patch=6, hidden=16, depth=1, heads=2)), synth_dm, steps=2)
    a = model.sample(3, steps=4, seed=0)
    b = model.sample(3, steps=4, seed=0)
    assert a.nfe == 4 and a.adata.shape == (3, 60)
    np.testing.assert_array_equal(a.adata.X, b.adata.X)
    assert model.sample(3, steps=4, seed=0, solver="ddpm").nfe == 4
    with pytest.raises(InputError):
        model.sample(3, solver="euler")


def test_ddpm_schedule_is_the_papers():
    model = WhiteBoxDiffusion(WBDiT(10, 0, patch=5, hidden=8, depth=1, heads=2))
    betas = 1 - model.alpha_bar[1:] / model.alpha_bar[:-1]
    assert float(1 - model.alpha_bar[0]) == pytest.approx(1e-4, rel=1e-3)
    assert float(betas[-1]) == pytest.approx(0.02, rel=1e-3) and len(model.alpha_bar) == 1000


def test_latent_flow_encodes_onto_the_principal_axes(synth_dm):
    model = LatentFlow(MLP(dim=10, hidden=16, depth=2, num_classes=3))
    model.set_metadata(synth_dm.metadata())
    assert model.conditional and model.unpack_batch(next(iter(synth_dm.train_dataloader())))[1]["y"].shape == (32,)
    x = torch.from_numpy(synth_dm.train_matrix()[0])
    z = model.encode(x)
    assert z.shape == (x.shape[0], 10)
    torch.testing.assert_close(z.std(0), torch.ones(10), atol=1e-3, rtol=0)  # standardised PC scores
    # decode(encode(x)) is the projection onto the top PCs: idempotent
    xr = model.decode(z)
    torch.testing.assert_close(model.decode(model.encode(xr)), xr, atol=1e-4, rtol=0)
    _fit(model, synth_dm, steps=2)
    assert model.sample(4, steps=2, seed=0).adata.shape == (4, 60)


def test_network_that_does_not_fit_the_data_is_rejected(synth_dm):
    model = WhiteBoxFlow(WBDiT(61, 3, patch=6, hidden=16, depth=1, heads=2))
    with pytest.raises(InputError, match="n_genes"):
        model.set_metadata(synth_dm.metadata())


def test_gaussian_baseline_matches_per_type_moments(synth_dm):
    g = GaussianBaseline(n_pcs=5).fit(synth_dm)
    sol = g.sample(2000, seed=0, cells={"type1": 2000}, decoder="none")
    z = LatentFlow.encode(g, torch.from_numpy(np.asarray(sol.adata.X)))
    # clipping at 0 moves the mean a little; without clipped genes the moments are those fitted
    assert sol.nfe == 0
    torch.testing.assert_close(z.mean(0), g.mu[1], atol=0.25, rtol=0)


def test_type_prior_is_the_per_type_gaussian_of_the_training_cells(synth_dm):
    # the WBDiT's last layer starts at zero, so an untrained flow returns its prior draws unchanged
    model = WhiteBoxFlow(WBDiT(60, 3, patch=6, hidden=16, depth=1, heads=2), prior="type")
    model.set_metadata(synth_dm.metadata())
    meta = model.meta
    x0 = model.decode(model.sample_prior(4000, {"y": torch.full((4000,), 2)}, torch.Generator().manual_seed(0)))
    scores = (x0 - meta["gene_mean"]) @ meta["pcs"].T
    torch.testing.assert_close(scores.mean(0), meta["type_pc_mean"][2], atol=0.1, rtol=0)
    torch.testing.assert_close(scores.std(0), meta["type_pc_std"][2], atol=0.1, rtol=0.05)
    # what is left after the PCs is the residual noise r * eps projected off the PCs: covariance Q diag(r^2) Q
    resid = x0 - meta["gene_mean"] - scores @ meta["pcs"]
    q = torch.eye(60) - meta["pcs"].T @ meta["pcs"]
    expected = torch.diagonal(q @ torch.diag(meta["resid_std"] ** 2) @ q).sqrt()
    torch.testing.assert_close(resid.std(0), expected, atol=0.02, rtol=0.05)
    # the training cells of type 2 have those PC moments
    x, y = synth_dm.train_matrix()
    real = (torch.from_numpy(x[y == 2]) - meta["gene_mean"]) @ meta["pcs"].T
    torch.testing.assert_close(real.mean(0), meta["type_pc_mean"][2], atol=1e-4, rtol=0)
    # a coupling's candidate draws repeat the labels; without labels the types follow the training frequencies
    gen = torch.Generator().manual_seed(1)
    two = model.decode(model.sample_prior(4, {"y": torch.tensor([0, 2])}, gen))
    pc = (two - meta["gene_mean"]) @ meta["pcs"].T
    near = ((pc[:, None] - meta["type_pc_mean"][None]) / meta["type_pc_std"][None]).pow(2).sum(-1).argmin(1)
    assert near.tolist() == [0, 2, 0, 2]
    assert model.sample_prior(5, {}, gen).shape == (5, 60)
    sol = model.sample(3, steps=2, seed=0, cells={"type2": 3}, decoder="none")
    np.testing.assert_allclose(sol.adata.X, model.decode(sol.x0).clamp_min(0).numpy(), atol=1e-5)
    with pytest.raises(InputError, match="prior"):
        WhiteBoxFlow(WBDiT(60, 3, patch=6, hidden=16, depth=1, heads=2), prior="uniform")


# the synthetic types are far apart, so with their own priors even a global plan would stay within types; the
# N(0, I) prior gives every type the same draws, where a plan that ignored the types would cross them
@pytest.mark.parametrize("prior", ["type", "normal"])
def test_class_wise_ot_pairs_prior_draws_only_with_cells_of_their_type(synth_dm, prior):
    from scipy.optimize import linear_sum_assignment

    from flowsci.couplings import IndependentCoupling, MinibatchOTCoupling

    calls = []

    class Spy(MinibatchOTCoupling):
        def __call__(self, x0, x1, manifold=None, groups=None):
            out = super().__call__(x0, x1, manifold, groups)
            calls.append((x0, out[0], x1, groups.clone()))
            return out

    torch.manual_seed(0)
    net = WBDiT(60, 3, patch=6, hidden=16, depth=1, heads=2)
    model = WhiteBoxFlow(net, prior=prior, coupling=Spy(group_key="y"), label_dropout=0.5)
    model.set_metadata(synth_dm.metadata())
    indep = copy.deepcopy(model)
    indep.coupling = IndependentCoupling()
    batch = next(iter(synth_dm.train_dataloader()))
    y = batch["y"]
    loss_ot, _ = model.compute_loss(batch, torch.Generator().manual_seed(0))
    loss_indep, _ = indep.compute_loss(batch, torch.Generator().manual_seed(0))
    x0, paired, x1, groups = calls[-1]
    # groups are the true types although half the labels are dropped for guidance (dropout is drawn afterwards)
    assert torch.equal(groups, y) and len(set(y.tolist())) == 3
    src = torch.cdist(paired, x0).argmin(1)  # which prior draw each cell got
    assert sorted(src.tolist()) == list(range(len(y)))
    assert torch.equal(y[src], y)  # draw src[j] was made for y[src[j]] = y[j]: never across types
    assert not torch.equal(src, torch.arange(len(y)))
    # the untrained flow predicts zero velocity, so the loss is the mean squared path length; class-wise OT makes
    # it the exact optimum of each type's assignment problem (and below the independent pairing's)
    cost = torch.cdist(x1.double(), x0.double()).pow(2).numpy()
    best = 0.0
    for k in range(3):
        idx = np.flatnonzero(y.numpy() == k)
        rows, cols = linear_sum_assignment(cost[np.ix_(idx, idx)])
        best += cost[np.ix_(idx, idx)][rows, cols].sum()
    assert float(loss_ot) * x1.numel() == pytest.approx(best, rel=1e-5)
    assert float(loss_ot) < float(loss_indep)
    # and it trains: parameters move, every training batch is paired within types
    before = copy.deepcopy(model.state_dict())
    calls.clear()
    _fit(model, synth_dm, steps=3)
    assert len(calls) == 3 and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for x0, paired, _, groups in calls:
        src = torch.cdist(paired, x0).argmin(1)
        assert torch.equal(groups[src], groups)
