"""CrysBFN / torus-FM crystal models: loss symmetries, samplers, public API, checkpoints, a short overfit."""

import numpy as np
import pytest
import torch

from flowsci.domains.crystals.data import structures_to_batch
from flowsci.domains.crystals.flow import CrysBFN, CrystalBatch, CrystalFlowMatching, composition_to_types
from flowsci.domains.crystals.model import CSPNet


def _net(cond_entropy=True, k=100, lattice_head="equivariant"):
    torch.manual_seed(0)
    return CSPNet(
        num_types=k,
        hidden_dim=32,
        num_layers=2,
        num_freqs=4,
        time_dim=16,
        cond_entropy=cond_entropy,
        lattice_head=lattice_head,
    )


def _bfn(task="csp", **kw):
    return CrysBFN(_net(), task=task, lattice_scale=2.4, num_atoms_dist=[0, 0, 0, 0, 0, 1.0], **kw)


def test_composition_to_types():
    assert composition_to_types("SrTiO3") == [38, 22, 8, 8, 8]
    assert len(composition_to_types("Sr2Ti2O6")) == 10
    with pytest.raises(ValueError, match="non-integer"):
        composition_to_types("SrTiO2.5")


@pytest.mark.parametrize("task", ["csp", "gen"])
def test_bfn_loss_invariant_to_integer_shifts_and_finite(perov, task):
    model = _bfn(task)
    batch = structures_to_batch(perov[:6])
    g = torch.Generator().manual_seed(1)
    loss0, logs = model.compute_loss(batch, generator=g)
    assert torch.isfinite(loss0) and set(logs) >= {"coord", "lattice"} | ({"type"} if task == "gen" else set())
    shifted = batch.clone()
    shifted.frac_coords = shifted.frac_coords + torch.randint(-2, 3, shifted.frac_coords.shape).float()
    loss1, _ = model.compute_loss(shifted, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss1, loss0, rtol=1e-4, atol=1e-4)
    loss0.backward()
    unused = {"type_out.weight", "type_out.bias"} if task == "csp" else set()  # CSP does not predict types
    missing = [n for n, p in model.net.named_parameters() if p.grad is None and n not in unused]
    assert not missing


def test_bfn_prediction_equivariance(perov):
    """A global shift of the coordinate beliefs shifts F̂; rotating the lattice belief rotates L̂."""
    model = _bfn()
    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:2]))
    belief = model.coord_flow.sample_flow_at_step(cb.frac, 3, 10, generator=torch.Generator().manual_seed(0))
    types = torch.nn.functional.one_hot(cb.types, 100).float()
    lat = cb.lattice / 2.4
    t = torch.full((2,), 0.3)
    f0, l0, _ = model.predict(types, belief, lat, t, cb.num_atoms)
    belief.mean = (belief.mean + 0.25) % 1.0
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
    f1, l1, _ = model.predict(types, belief, lat @ q.T, t, cb.num_atoms)
    d = (f1 - f0 - 0.25) % 1.0
    assert torch.minimum(d, 1 - d).max() < 1e-4
    torch.testing.assert_close(l1, l0 @ q.T, rtol=1e-4, atol=1e-4)


def test_bfn_lattice_prediction_direct_vs_residual(perov):
    """direct: L̂ is the head's output (canonical, whatever the belief); residual: L̂ = μ + output."""
    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:2]))
    belief = CrysBFN(_net(), lattice_scale=2.4).coord_flow.sample_flow_at_step(
        cb.frac, 3, 10, generator=torch.Generator().manual_seed(0)
    )
    types = torch.nn.functional.one_hot(cb.types, 100).float()
    lat, t = cb.lattice / 2.4, torch.full((2,), 0.3)
    out = {}
    for mode in ("direct", "residual"):
        model = CrysBFN(_net(lattice_head="invariant"), lattice_scale=2.4, lattice_prediction=mode)
        out[mode] = model.predict(types, belief, lat, t, cb.num_atoms)[1]
    torch.testing.assert_close(out["residual"], lat + out["direct"])
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(2)))
    model = CrysBFN(_net(lattice_head="invariant"), lattice_scale=2.4, lattice_prediction="direct")
    rotated = model.predict(types, belief, lat @ q.T, t, cb.num_atoms)[1]
    torch.testing.assert_close(rotated, out["direct"], rtol=1e-4, atol=1e-5)  # invariant to the belief's orientation
    with pytest.raises(ValueError, match="lattice_prediction"):
        CrysBFN(_net(), lattice_prediction="eps")


def test_bfn_sampler_with_oracle_recovers_truth(perov, monkeypatch):
    """With a network that always predicts the true crystal, end_back sampling returns it, with NFE = steps."""
    model = _bfn()
    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:3]))
    calls = []

    def oracle(type_input, coord_belief, lattice_mean, t, num_atoms):
        calls.append(float(t[0]))
        assert torch.all((coord_belief.mean >= 0) & (coord_belief.mean < 1))
        return cb.frac + 3.0, cb.lattice / 2.4, torch.zeros(len(cb.frac), 100)

    monkeypatch.setattr(model, "predict", oracle)
    out = model.sample_crystals(cb.types, cb.num_atoms, steps=7, seed=0)
    assert out.nfe == 7 and len(calls) == 7
    np.testing.assert_allclose(calls, np.arange(7) / 7)
    torch.testing.assert_close(out.frac, cb.frac, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.lattice, cb.lattice, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["end_back", "bayesian"])
def test_bfn_samplers_concentrate_beliefs_on_oracle(perov, monkeypatch, sampler):
    """Fed an oracle, both samplers drive the coordinate belief towards the truth with growing concentration."""
    model = _bfn()
    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:4]))
    seen = []

    def oracle(type_input, coord_belief, lattice_mean, t, num_atoms):
        d = (coord_belief.mean - cb.frac).abs()
        seen.append((float(coord_belief.concentration.mean()), float(torch.minimum(d, 1 - d).mean())))
        return cb.frac, cb.lattice / 2.4, torch.zeros(len(cb.frac), 100)

    monkeypatch.setattr(model, "predict", oracle)
    out = model.sample_crystals(cb.types, cb.num_atoms, steps=10, seed=0, sampler=sampler)
    assert out.nfe == 10 and len(seen) == 10
    conc = [c for c, _ in seen]
    assert conc[0] == 0.0 and conc[-1] > 100.0  # prior c = 0; beliefs sharpen towards β1 = 1e3
    assert seen[-1][1] < 0.02 < seen[0][1]  # the last belief's mean sits on the truth, the prior's does not
    with pytest.raises(ValueError, match="sampler"):
        model.sample_crystals(cb.types, cb.num_atoms, steps=2, sampler="ddim")


def test_fm_loss_and_oracle_sampler(perov, monkeypatch):
    model = CrystalFlowMatching(_net(cond_entropy=False), lattice_scale=2.4)
    batch = structures_to_batch(perov[:4])
    loss, logs = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and {"coord", "lattice"} <= set(logs)
    cb = CrystalBatch.from_pyg(batch)
    target_f, target_l = cb.frac, cb.lattice / 2.4

    def oracle(frac, lat_std, t, crystal):  # exact conditional velocity towards the target from the current state
        tt = t[0].clamp(max=1 - 1e-6)
        d = target_f - frac
        d = d - torch.round(d)
        return d / (1 - tt), (target_l - lat_std) / (1 - tt)

    monkeypatch.setattr(model, "_velocities", oracle)
    for solver, nfe in [("euler", 5), ("midpoint", 10)]:
        out = model.sample_crystals(cb.types, cb.num_atoms, steps=5, seed=0, solver=solver)
        assert out.nfe == nfe
        d = (out.frac - target_f).abs()
        assert torch.minimum(d, 1 - d).max() < 1e-4
        torch.testing.assert_close(out.lattice, cb.lattice, atol=1e-4, rtol=1e-4)
        assert torch.all((out.frac >= 0) & (out.frac < 1))


def test_fm_x1_lattice_target(perov, monkeypatch):
    """x1 lattice head: an oracle L̂1 gives zero lattice loss, and Euler on (L̂1 − L_t)/(1 − t) lands on L1."""
    batch = structures_to_batch(perov[:4])
    cb = CrystalBatch.from_pyg(batch)
    target_f, target_l = cb.frac, cb.lattice / 2.4
    with pytest.raises(ValueError, match="lattice_target"):
        CrystalFlowMatching(_net(cond_entropy=False), lattice_target="eps")
    model = CrystalFlowMatching(_net(cond_entropy=False), lattice_scale=2.4, lattice_target="x1")

    def oracle(frac, lat_std, t, crystal):  # exact torus velocity; the clean lattice itself
        d = target_f - frac
        d = d - torch.round(d)
        return d / (1 - t[0].clamp(max=1 - 1e-6)), target_l.clone()

    monkeypatch.setattr(model, "_network", oracle)
    _, logs = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert float(logs["lattice"]) < 1e-10
    out = model.sample_crystals(cb.types, cb.num_atoms, steps=3, seed=0, solver="euler")
    torch.testing.assert_close(out.lattice, cb.lattice, atol=1e-4, rtol=1e-4)
    velocity_model = CrystalFlowMatching(_net(cond_entropy=False), lattice_scale=2.4, lattice_target="velocity")
    monkeypatch.setattr(velocity_model, "_network", oracle)  # the same output read as a velocity is wrong
    _, logs = velocity_model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert float(logs["lattice"]) > 0.1


def test_public_api_and_checkpoint_round_trip(tmp_path):
    import pytorch_lightning as pl

    model = _bfn("gen")
    structs = model.generate(n=3, steps=4, seed=0)
    assert len(structs) == 3 and all(len(s) == 5 for s in structs)
    paths = model.write_cifs(structs, tmp_path / "cif")
    assert len(paths) == 3 and paths[0].read_text().startswith("# generated using pymatgen")
    with pytest.raises(ValueError, match="task='gen'"):
        _bfn("csp").generate(n=1)
    csp = _bfn("csp")
    preds = csp.predict_structure("SrTiO3", num_samples=2, steps=3, seed=0)
    assert [p.composition.reduced_formula for p in preds] == ["SrTiO3"] * 2
    again = csp.predict_structure("SrTiO3", num_samples=2, steps=3, seed=0)
    np.testing.assert_allclose(preds[1].frac_coords, again[1].frac_coords)  # seeded
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(csp)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = CrysBFN.from_checkpoint(tmp_path / "m.ckpt")
    assert loaded.lattice_scale == pytest.approx(2.4) and loaded.num_atoms_dist == [0, 0, 0, 0, 0, 1.0]
    back = loaded.predict_structure("SrTiO3", num_samples=2, steps=3, seed=0)
    np.testing.assert_allclose(back[1].frac_coords, preds[1].frac_coords, atol=1e-6)


def test_time_only_ablation_switch(perov):
    model = CrysBFN(_net(cond_entropy=False), cond_entropy=False, lattice_scale=2.4)
    loss, _ = model.compute_loss(structures_to_batch(perov[:2]))
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="disagree"):
        CrysBFN(_net(cond_entropy=False), cond_entropy=True)


def test_fm_checkpoint_round_trip(tmp_path):
    import pytorch_lightning as pl

    model = CrystalFlowMatching(_net(cond_entropy=False), lattice_scale=2.4, sample_steps=4)
    preds = model.predict_structure("SrTiO3", num_samples=2, seed=3)
    trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "fm.ckpt")
    loaded = CrystalFlowMatching.from_checkpoint(tmp_path / "fm.ckpt")
    assert loaded.lattice_scale == pytest.approx(2.4) and loaded.sample_steps == 4
    back = loaded.predict_structure("SrTiO3", num_samples=2, seed=3)
    np.testing.assert_allclose(back[0].lattice.matrix, preds[0].lattice.matrix, atol=1e-5)
    with pytest.raises(ValueError, match="atom types"):
        loaded.sample_crystals(None, torch.tensor([5]))


@pytest.mark.parametrize("weighting", ["bfn", "uniform", "late"])
def test_bfn_loss_weighting_closed_form(perov, monkeypatch, weighting):
    """With a fixed prediction error, the loss equals the closed form of each weighting (and 0 when exact)."""
    gamma = 3.0  # "late": uniform distances, each crystal weighted (1 + γ k/n) / (1 + γ (n − 1) / 2n)
    model = _bfn(loss_weighting="uniform", late_weight=gamma) if weighting == "late" else _bfn(loss_weighting=weighting)
    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:4]))
    b = len(cb.num_atoms)
    df, dl = 0.1, 0.2  # error of every fractional coordinate / standardised lattice entry

    def fixed(type_input, coord_belief, lattice_mean, t, num_atoms):
        return cb.frac + df, cb.lattice / 2.4 + dl, torch.zeros(len(cb.frac), 100)

    monkeypatch.setattr(model, "predict", fixed)
    g = torch.Generator().manual_seed(3)
    loss, logs = model.compute_loss(cb, generator=g)
    g = torch.Generator().manual_seed(3)
    pick = torch.randint(1, (1,), generator=g)
    k = torch.randint(0, 10, (b,), generator=g).double()
    assert int(pick) == 0
    per_coord = 1.0 - np.cos(2 * np.pi * df)
    if weighting == "uniform":
        want_c, want_l = 3 * per_coord, 9 * dl**2
    elif weighting == "late":
        w = (1 + gamma * k / 10) / (1 + gamma * 9 / 20)
        assert abs(float(((1 + gamma * torch.arange(10.0) / 10) / (1 + gamma * 9 / 20)).mean()) - 1) < 1e-6
        want_c, want_l = float((w * 3 * per_coord).mean()), float((w * 9 * dl**2).mean())
    else:
        alpha_c = model.coord_flow.step_accuracy(k.long() + 1, 10).double()
        w_c = alpha_c * torch.special.i1e(alpha_c) / torch.special.i0e(alpha_c)
        want_c = float((10 * w_c * 3 * per_coord).mean())
        alpha_l = model.lattice_flow.step_accuracy(k.long() + 1, 10).double()
        want_l = float((0.5 * 10 * alpha_l * 9 * dl**2).mean())
    np.testing.assert_allclose(float(logs["coord"]), want_c, rtol=1e-4)
    np.testing.assert_allclose(float(logs["lattice"]), want_l, rtol=1e-4)
    np.testing.assert_allclose(float(loss), want_c + want_l, rtol=1e-4)
    with pytest.raises(ValueError, match="loss_weighting"):
        _bfn(loss_weighting="snr")
    with pytest.raises(ValueError, match="late_weight"):
        _bfn(loss_weighting="bfn", late_weight=1.0)
    with pytest.raises(ValueError, match="late_weight"):
        _bfn(loss_weighting="uniform", late_weight=-1.0)


def test_optimal_shift_minimises_torus_loss():
    """The closed-form shift is the minimiser of Σ_i (1 − cos 2π(δ_i − c)) (checked against a fine grid)."""
    from flowsci.domains.crystals.flow import _optimal_shift

    g = torch.Generator().manual_seed(0)
    delta = (0.3 + 0.15 * torch.randn(7, 3, generator=g, dtype=torch.float64)).remainder(1.0)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    c = _optimal_shift(delta, batch, 2)
    grid = torch.linspace(-0.5, 0.5, 20001, dtype=torch.float64)
    for b in range(2):
        d = delta[batch == b]  # [n, 3]
        cost = (1 - torch.cos(2 * torch.pi * (d[:, None, :] - grid[None, :, None]))).sum(0)  # [G, 3]
        best = grid[cost.argmin(0)]
        torch.testing.assert_close(c[b], best, atol=1e-4, rtol=0)


@pytest.mark.parametrize("weighting", ["bfn", "uniform"])
def test_translation_invariant_loss_ignores_global_shifts(perov, monkeypatch, weighting):
    """With translation_invariant=True a per-crystal global shift of the prediction costs nothing; without, it does."""
    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:4]))
    shift = torch.tensor([[0.1, -0.3, 0.45], [0.2, 0.0, -0.1], [0.33, 0.25, 0.05], [-0.4, 0.15, 0.3]])

    def shifted(type_input, coord_belief, lattice_mean, t, num_atoms):
        return cb.frac + shift[cb.batch], cb.lattice / 2.4, torch.zeros(len(cb.frac), 100)

    for ti in (True, False):
        model = _bfn(loss_weighting=weighting, translation_invariant=ti)
        monkeypatch.setattr(model, "predict", shifted)
        _, logs = model.compute_loss(cb, generator=torch.Generator().manual_seed(0))
        if ti:
            assert float(logs["coord"]) < 1e-8
        else:
            assert float(logs["coord"]) > 0.1


def test_lattice_center_round_trip_and_offset_from_data(perov):
    """``lattice_center``: flow state ``L / s − c`` and back (known answer), ``c`` = mean training lattice / s,
    and the network sees ``μ + c`` (a lattice), so its input is unchanged by the reparametrisation."""
    import pytorch_lightning as pl

    from flowsci.domains.crystals.data import CrystalDataModule

    model = CrysBFN(_net(lattice_head="invariant"), task="gen", lattice_scale=2.0, lattice_center=True)
    model.lattice_offset.copy_(torch.diag(torch.tensor([2.0, 2.5, 3.0])))
    lat = torch.diag(torch.tensor([4.0, 6.0, 8.0]))[None]
    x = model._standardise(lat)
    torch.testing.assert_close(x, torch.diag(torch.tensor([0.0, 0.5, 1.0]))[None])
    torch.testing.assert_close(model._destandardise(x), lat)
    assert "lattice_offset" in model.state_dict() and "lattice_offset" not in _bfn().state_dict()
    seen = {}

    def net(type_input, frac, lattice, t, num_atoms, cond):
        seen["lattice"] = lattice
        return torch.zeros_like(frac), torch.zeros_like(lattice), torch.zeros(len(frac), 100)

    cb = CrystalBatch.from_pyg(structures_to_batch(perov[:2]))
    belief = model.coord_flow.sample_flow_at_step(cb.frac, 3, 10)
    model.net.forward = net
    model.predict(torch.zeros(len(cb.frac), 100), belief, model._standardise(cb.lattice), torch.zeros(2), cb.num_atoms)
    torch.testing.assert_close(seen["lattice"], cb.lattice / 2.0)
    fresh = CrysBFN(_net(lattice_head="invariant"), task="gen", lattice_center=True)
    dm = CrystalDataModule(train="perov_5_val", val=None, test=None, batch_size=4, max_train=8)
    pl.Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    ).fit(fresh, datamodule=dm)
    mean = torch.stack([torch.as_tensor(s.lattice.matrix, dtype=torch.float32) for s in dm.train_set.structures()])
    mean = mean.mean(0)
    torch.testing.assert_close(fresh.lattice_offset, mean / fresh.lattice_scale, atol=1e-5, rtol=1e-5)
