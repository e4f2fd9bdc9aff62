"""ReQFlow: path and targets, loss, oracle sampling, priors, couplings, reflow, checkpoints."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flowsci.couplings import MinibatchOTCoupling
from flowsci.domains.proteins.data import BackboneDataset, bundled_backbones, collate_backbones
from flowsci.domains.proteins.flow import (
    ANG_PER_NM,
    CPU_BATCH_PAIRS,
    UNROLL_T_START,
    RepeatedSeedWarning,
    ReQFlow,
    length_buckets,
    make_reflow_pairs,
    matrix_geodesic,
    translation_prior_std,
)
from flowsci.domains.proteins.metrics import kabsch_rmsd
from flowsci.domains.proteins.model import IPAFrameNet
from flowsci.errors import CheckpointError
from flowsci.manifolds import SO3, quaternion_to_matrix, random_quaternion
from flowsci.timesteps import TimeSampler

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def batch():
    chains = bundled_backbones()
    ds = BackboneDataset([chains[i] for i in (0, 1, 2)], crop_length=24, seed=0)
    return collate_backbones([ds[i] for i in range(3)])


class Oracle(nn.Module):
    """Returns fixed frames (padded to the input length); a learnable scalar so optimisers are happy."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, mask=None, res_idx=None, x_sc=None):
        return self.target[:, : x_t.shape[1]].to(x_t) + 0 * self.w


class FixedTime(TimeSampler):
    def __init__(self, t: float) -> None:
        self.t = t

    def sample(self, n, device=None, generator=None):
        return torch.full((n,), self.t, device=device)

    def density(self, t):
        raise NotImplementedError


def _x1(model: ReQFlow, batch) -> torch.Tensor:
    return model.unpack_batch(batch)[0]


def _oracle_losses(x1: torch.Tensor, batch, **weights: float) -> tuple[float, float]:
    """(total loss, auxiliary loss) of a ReQFlow whose network always predicts ``x1``, at t = 0.8."""
    model = ReQFlow(net=Oracle(x1), self_condition_prob=0.0, time_sampler=FixedTime(0.8), **weights)
    loss, logs = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    return float(loss), float(logs["aux_loss"])


def test_unpack_batch_centres_in_nm(batch):
    m = ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1))
    x1, cond, mask = m.unpack_batch(batch)
    assert x1.shape[-1] == 7 and set(cond) == {"mask", "res_idx"}
    com = (x1[..., :3] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert com.abs().max() < 1e-6
    assert torch.allclose(
        x1[..., :3] * ANG_PER_NM * mask[..., None],
        (batch["trans"] - (batch["trans"] * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None])
        * mask[..., None],
        atol=1e-5,
    )


def test_rotation_target_is_remaining_rotation_of_slerp_path():
    so3 = SO3()
    g = torch.Generator().manual_seed(0)
    q0 = random_quaternion((50,), generator=g, dtype=torch.float64)
    q1 = random_quaternion((50,), generator=g, dtype=torch.float64)
    t = torch.rand(50, 1, generator=g, dtype=torch.float64)
    q_t = so3.geodesic(q0, q1, t)
    omega = so3.log(q0, q1)
    # the ReQFlow target rotvec(q_t^* q1) equals (1 - t) * omega on the exact path
    assert torch.allclose(so3.log(q_t, q1), (1 - t) * omega, atol=1e-9)
    # and FrameFlow's matrix path gives the same points in float64 away from pi
    q_m, om_m = matrix_geodesic(q0, q1, t)
    same = torch.minimum((q_m - q_t).norm(dim=-1), (q_m + q_t).norm(dim=-1))
    far_from_pi = omega.norm(dim=-1) < 3.0
    assert torch.allclose(om_m[far_from_pi], omega[far_from_pi], atol=1e-8)
    assert same[far_from_pi].max() < 1e-8


def test_quaternion_path_is_stable_near_pi_where_matrix_path_is_not():
    g = torch.Generator().manual_seed(1)
    axis = torch.randn(2000, 3, generator=g, dtype=torch.float64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    ang = math.pi - torch.logspace(-7, -2, 2000, dtype=torch.float64)
    q0 = random_quaternion((2000,), generator=g, dtype=torch.float64)
    q1 = SO3().exp(q0, axis * ang[:, None])
    t = torch.full((2000, 1), 0.5, dtype=torch.float64)
    exact = SO3().geodesic(q0, q1, t)
    so3 = SO3()
    q_quat = so3.geodesic(q0.float(), q1.float(), t.float())
    q_mat, _ = matrix_geodesic(q0.float(), q1.float(), t.float())
    err_quat = so3.dist(q_quat.double(), exact)
    err_mat = so3.dist(q_mat.double(), exact)
    assert torch.isfinite(q_quat).all()
    assert err_quat.max() < 1e-3
    assert err_mat.max() > 10 * err_quat.max()


def test_loss_vanishes_for_oracle_and_is_sign_invariant(batch):
    m0 = ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1))
    x1 = _x1(m0, batch)
    m = ReQFlow(net=Oracle(x1), self_condition_prob=0.0)
    g = torch.Generator().manual_seed(0)
    loss, logs = m.compute_loss(batch, generator=g)
    assert float(loss.detach()) < 1e-8
    # -q is the same rotation: the loss of a sign-flipped oracle is also zero
    flipped = torch.cat([x1[..., :3], -x1[..., 3:]], -1)
    m_flip = ReQFlow(net=Oracle(flipped), self_condition_prob=0.0)
    assert float(m_flip.compute_loss(batch, generator=torch.Generator().manual_seed(0))[0].detach()) < 1e-8
    # a translation error of 0.1 nm on every residue costs 2 * (0.1 / s(t))^2 / 3 per residue (closed form)
    fixed_t = FixedTime(0.3)
    s_t = torch.tensor(0.7)
    bad = x1.clone()
    bad[..., 0] += 0.1
    mb = ReQFlow(net=Oracle(bad), self_condition_prob=0.0, aux_weight=0.0, time_sampler=fixed_t)
    _, logs_b = mb.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    expected = 2.0 * (0.1 / s_t) ** 2 / 3
    assert abs(float(logs_b["trans_loss"]) - float(expected)) < 1e-4 * float(expected)
    assert float(logs_b["rot_loss"]) < 1e-10
    # a rotation error of 0.2 rad costs about (0.2 / s(t))^2 / 3 per residue (exact only when the error
    # commutes with the remaining rotation)
    bad = x1.clone()
    bad[..., 3:] = SO3().exp(x1[..., 3:], torch.tensor([0.2, 0.0, 0.0]).expand_as(x1[..., :3]))
    mb = ReQFlow(net=Oracle(bad), self_condition_prob=0.0, aux_weight=0.0, time_sampler=fixed_t)
    _, logs_b = mb.compute_loss(batch, generator=torch.Generator().manual_seed(3))
    expected = (0.2 / s_t) ** 2 / 3
    assert abs(float(logs_b["rot_loss"]) - float(expected)) < 0.25 * float(expected)
    assert float(logs_b["trans_loss"]) < 1e-8


def test_oracle_sampling_reaches_the_target_backbone():
    chain = bundled_backbones()[5]
    q, tr = chain.frames()
    target = torch.cat([(tr - tr.mean(0)) / ANG_PER_NM, q], -1)[None].double()
    for sched in ("linear", "exp"):
        m = ReQFlow(net=Oracle(target), rot_schedule=sched).double()
        s = m.sample(lengths=[len(chain)], steps=10, seed=0)
        assert s.nfe == 10 and len(s) == 1
        rot_err = SO3().dist(s.x[0, :, 3:], target[0, :, 3:]).max()
        assert rot_err < (1e-6 if sched == "linear" else 1e-3)
        assert (s.x[0, :, :3] - target[0, :, :3]).abs().max() < 1e-6
        rmsd, _ = kabsch_rmsd(s[0].ca, chain.ca)
        assert rmsd < 1e-3
    # exp schedule at 10 steps pulls rotations ~10x faster than translations (fraction 10 * dt per step)
    m = ReQFlow(net=Oracle(target), rot_schedule="exp").double()
    traj = m.sample(lengths=[len(chain)], steps=10, seed=0, return_trajectory=True).trajectory
    so3 = SO3()
    d_rot = [float(so3.dist(x[0, :, 3:], target[0, :, 3:]).mean()) for x in traj]
    d_tr = [float((x[0, :, :3] - target[0, :, :3]).norm(dim=-1).mean()) for x in traj]
    assert d_rot[2] < 0.05 * d_rot[0] and d_tr[2] > 0.5 * d_tr[0]


def test_sampling_shapes_masks_and_pdb_files(tmp_path):
    torch.manual_seed(0)
    m = ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1))
    s = m.sample(lengths=[12, 20], steps=3, seed=4, return_trajectory=True)
    assert [len(b) for b in s] == [12, 20] and s.nfe == 3
    assert torch.isfinite(s.x).all()
    assert (s.x[0, 12:, :3] == s.extras["x0"][0, 12:, :3]).all()  # padding untouched
    files = m.write_samples(s, tmp_path)
    names = sorted(f.name for f in files)
    assert len(files) == 5 and sum(n.endswith("_traj.pdb") for n in names) == 2 and "samples.png" in names
    assert (tmp_path / "samples.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traj_txt = next(f for f in files if f.name.endswith("_traj.pdb")).read_text()
    assert traj_txt.count("ENDMDL") == 4  # initial state + 3 steps
    # same seed -> same backbones
    s2 = m.sample(lengths=[12, 20], steps=3, seed=4)
    assert np.allclose(s2[1].coords, s[1].coords)


def test_minibatch_ot_on_translations_reduces_cost(batch):
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)
    chains = bundled_backbones()
    ds = BackboneDataset(chains[:8], crop_length=20, seed=0)
    b = collate_backbones([ds[i] for i in range(8)])
    ind, ot = ReQFlow(net=net), ReQFlow(net=net, coupling=MinibatchOTCoupling())
    x1, cond, _ = ind.unpack_batch(b)
    costs = []
    for model in (ind, ot):
        x0 = model._training_prior(x1, cond, torch.Generator().manual_seed(0))
        costs.append(float(((x0[..., :3] - x1[..., :3]) ** 2).sum()))
        # a permutation of the same noise rows: the set of noise draws is unchanged
        assert torch.allclose(x0[..., 3:], ind._training_prior(x1, cond, torch.Generator().manual_seed(0))[..., 3:])
    assert costs[1] < costs[0]


def test_igso3_training_prior_is_centred_on_data(batch):
    m = ReQFlow(
        net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1),
        train_rot_prior="igso3",
        igso3_sigma=0.2,
    )
    x1, cond, mask = m.unpack_batch(batch)
    x0 = m._training_prior(x1, cond, torch.Generator().manual_seed(0))
    d = SO3().dist(x0[..., 3:], x1[..., 3:])[mask.bool()]
    assert d.mean() < 0.6  # uniform would give mean angle pi/2 + 2/pi ~ 2.2 rad


def test_length_aware_translation_prior_matches_globular_rg_and_keeps_the_fixed_one():
    lengths = torch.tensor([2, 50, 250])
    sig = translation_prior_std(lengths)
    # closed form: 3 sigma^2 (L - 1) / L = (2.2 L^0.38 / 10)^2 nm^2
    assert torch.allclose(3 * sig**2 * (lengths - 1) / lengths, (0.22 * lengths.double() ** 0.38) ** 2)
    assert (translation_prior_std(lengths, "fixed") == 1).all()
    with pytest.raises(ValueError, match="trans_prior"):
        translation_prior_std(lengths, "wide")
    with pytest.raises(ValueError, match="trans_prior"):
        ReQFlow(trans_prior="wide")
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)
    mask = torch.zeros(3000, 120, dtype=torch.float64)
    mask[:1500, :40] = 1.0  # 1500 chains of 40 residues, 1500 of 120 (padded)
    mask[1500:] = 1.0
    g = torch.Generator().manual_seed(0)
    rg_ms = {}
    for prior in ("rg", "fixed"):
        x0 = ReQFlow(net=net, trans_prior=prior).sample_prior(torch.empty((), dtype=torch.float64), {"mask": mask}, g)
        sq = (x0[..., :3] * ANG_PER_NM).pow(2).sum(-1)  # centred per chain, padding at 0
        assert (x0[:1500, 40:, :3] == 0).all()
        rg_ms[prior] = ((sq[:1500].sum(-1) / 40).mean(), (sq[1500:].sum(-1) / 120).mean())  # E[Rg^2], A^2
    for got, n in zip(rg_ms["rg"], (40, 120), strict=True):
        assert float(got) == pytest.approx((2.2 * n**0.38) ** 2, rel=0.03)
    for got, n in zip(rg_ms["fixed"], (40, 120), strict=True):
        assert float(got) == pytest.approx(300 * (n - 1) / n, rel=0.03)  # 3 (10 A)^2 (L - 1)/L at every length


def test_translation_prior_is_stored_in_the_checkpoint_and_older_files_load_with_the_fixed_one(tmp_path):
    from flowsci.checkpoint import save_module

    torch.manual_seed(0)
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)
    path = save_module(ReQFlow(net=net, trans_prior="rg"), tmp_path / "rg.pt")
    loaded = ReQFlow.from_checkpoint(path)
    assert loaded.trans_prior == "rg"
    blob = torch.load(path, weights_only=True)
    del blob["flowsci"]["init"]["trans_prior"]  # a file written before the option existed
    torch.save(blob, tmp_path / "old.pt")
    old = ReQFlow.from_checkpoint(tmp_path / "old.pt")
    assert old.trans_prior == "fixed"
    mask = torch.ones(2, 50)
    g = torch.Generator().manual_seed(0)
    x_rg = loaded.sample_prior(torch.empty(()), {"mask": mask}, torch.Generator().manual_seed(0))[..., :3]
    x_old = old.sample_prior(torch.empty(()), {"mask": mask}, g)[..., :3]
    # same draw, scaled by sigma(50) / 1 nm: the loaded option is what sampling uses
    assert torch.allclose(x_rg, x_old * float(translation_prior_std(torch.tensor([50]))[0]), atol=1e-6)
    for a, b in zip(loaded.state_dict().values(), old.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_reflow_pairs_and_rectify_use_stored_noise():
    from flowsci.reflow import ReflowDataModule, rectify

    torch.manual_seed(0)
    m = ReQFlow(
        net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
    )
    pairs = make_reflow_pairs(m, [10, 14, 14], steps=3, batch_size=2, seed=0, max_coil=None)
    assert pairs.x0.shape == (3, 14, 7) and pairs.meta["kept"] == 3
    assert pairs.cond["mask"].sum(-1).tolist() == [10.0, 14.0, 14.0]
    # x1 is the sampler's output for that very noise (same seed -> same sample)
    again = m.sample(lengths=[10, 14], steps=3, seed=0)
    assert torch.allclose(pairs.x1[0, :10], again.x[0, :10].float(), atol=1e-5)
    assert torch.allclose(pairs.x0[1], again.extras["x0"][1].float(), atol=1e-6)
    # batches carry x0, which replaces the prior draw; the path interpolates the stored pair
    batch = next(iter(ReflowDataModule(pairs, batch_size=3).train_dataloader()))
    x1, cond, mask = m.unpack_batch(batch)
    x0 = m._training_prior(x1, cond, None)
    assert torch.equal(x0, cond["x0"].to(x0))
    x_t = m._interpolate(x0, x1, torch.full((3,), 0.5))
    assert torch.allclose(x_t[..., :3], 0.5 * (x0[..., :3] + x1[..., :3]), atol=1e-6)
    r_half = quaternion_to_matrix(x_t[..., 3:])
    r0, r1 = quaternion_to_matrix(x0[..., 3:]), quaternion_to_matrix(x1[..., 3:])
    # halfway along the geodesic: (R0^T R_half)^2 = R0^T R1
    lhs = r0.transpose(-1, -2) @ r_half
    assert torch.allclose(lhs @ lhs, r0.transpose(-1, -2) @ r1, atol=1e-4)
    student = rectify(m, pairs, max_steps=2, batch_size=3)
    assert isinstance(student, ReQFlow) and student is not m


def test_training_reduces_loss_and_checkpoint_round_trip(batch, tmp_path):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    net = IPAFrameNet(c_s=32, c_z=16, c_hidden=8, num_heads=2, num_blocks=1)
    m = ReQFlow(net=net, optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), self_condition_prob=0.0)
    x1 = m.unpack_batch(batch)[0]
    assert x1.shape[0] == 3

    def eval_loss():
        return float(
            np.mean(
                [float(m.compute_loss(batch, generator=torch.Generator().manual_seed(k))[1]["loss"]) for k in range(6)]
            )
        )

    before = eval_loss()
    loader = DataLoader([batch] * 150, batch_size=None)
    trainer = pl.Trainer(
        max_steps=150,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(m, loader)
    after = eval_loss()
    assert after < 0.9 * before
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    loaded = ReQFlow.from_checkpoint(tmp_path / "m.ckpt")
    a = m.eval().sample(lengths=[15, 15], steps=4, seed=3)
    b2 = loaded.sample(lengths=[15, 15], steps=4, seed=3)
    assert torch.allclose(a.x, b2.x, atol=1e-6)
    with pytest.raises((FileNotFoundError, CheckpointError)):  # the core's loader raises CheckpointError
        ReQFlow.from_checkpoint(tmp_path / "missing.ckpt")


class TimeRecorder(Oracle):
    """Oracle that records the times it is called at."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__(target)
        self.times: list[float] = []

    def forward(self, x_t, t, mask=None, res_idx=None, x_sc=None):
        self.times.append(float(t[0]))
        return super().forward(x_t, t, mask, res_idx, x_sc)


def test_final_x1_step_calls_the_network_at_t1_and_returns_its_prediction():
    chain = bundled_backbones()[5]
    q, tr = chain.frames()
    target = torch.cat([(tr + 7.0) / ANG_PER_NM, q], -1)[None].double()  # off-centre: must be re-centred
    centred = target[0, :, :3] - target[0, :, :3].mean(0)
    so3 = SO3()
    for k in (1, 4, 100):
        net = TimeRecorder(target)
        m = ReQFlow(net=net, rot_schedule="exp", final_step="x1").double()
        s = m.sample(lengths=[len(chain)], steps=k, seed=0, return_trajectory=True)
        # K network calls at linspace(0.01, 1, K): K - 1 Euler steps, then t = 1 (t_min alone when K = 1)
        expected = np.linspace(0.01, 1.0, k)
        assert s.nfe == k == len(net.times) and np.allclose(net.times, expected)
        assert s.extras["final_step"] == "x1" and len(s.trajectory) == k + 1
        # the sample IS the last prediction: re-centred translation and the predicted rotation, exactly
        assert (s.x[0, :, :3] - centred).abs().max() < 1e-9
        assert so3.dist(s.x[0, :, 3:], target[0, :, 3:]).max() < 1e-6
    # the Euler sampler at 100 steps with the exp schedule leaves rotations short of the prediction (each step
    # slerps the fraction 10 * dt ~ 0.1) while the translation lands on it; the x1 step closes that gap
    net = TimeRecorder(target)
    m = ReQFlow(net=net, rot_schedule="exp", final_step="euler").double()
    s = m.sample(lengths=[len(chain)], steps=100, seed=0)
    assert s.nfe == 100 and np.allclose(net.times, np.linspace(0.01, 1.0, 101)[:-1])
    assert (s.x[0, :, :3] - centred).abs().max() < 1e-9
    # constant prediction: each step slerps the fraction 10 dt, so the angle left is theta_0 (1 - 10 dt)^100
    rot_err = so3.dist(s.x[0, :, 3:], target[0, :, 3:])
    theta0 = so3.dist(s.extras["x0"][0, :, 3:], target[0, :, 3:])
    assert torch.allclose(rot_err, theta0 * (1 - 10 * 0.99 / 100) ** 100, rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="final_step"):
        ReQFlow(net=Oracle(target), final_step="last")


def test_pair_distance_loss_closed_form_and_proximity_cutoff():
    gt = torch.tensor([[[0.0, 0, 0], [0.3, 0, 0], [2.0, 0, 0]]], dtype=torch.float64)  # nm, s = 1
    pr = gt.clone()
    pr[0, 2, 0] = 2.1  # the far atom moves 0.1 nm: pairs (0,2), (1,2) both off by 0.1, both orders
    mask, s = torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 1, 1, dtype=torch.float64)
    full = ReQFlow(net=IPAFrameNet(c_s=8, c_z=8, c_hidden=4, num_heads=1, num_blocks=1))
    assert torch.allclose(full._pair_distance_loss(gt, pr, mask, s), torch.tensor([4 * 0.01 / (9 + 1)]).double())
    near = ReQFlow(net=IPAFrameNet(c_s=8, c_z=8, c_hidden=4, num_heads=1, num_blocks=1), dist_cutoff=6.0)
    # only pairs closer than 6 A in the true structure count: 3 self pairs + (0,1) twice; the far atom is ignored
    assert float(near._pair_distance_loss(gt, pr, mask, s)) == 0.0
    pr[0, 1, 0] = 0.35
    assert torch.allclose(near._pair_distance_loss(gt, pr, mask, s), torch.tensor([2 * 0.05**2 / (5 + 1)]).double())
    # the cutoff is on unscaled distances: scaling atoms by 1/s(t) = 10 keeps the same pairs and scales the loss
    s10 = torch.full((1, 1, 1), 0.1, dtype=torch.float64)
    assert torch.allclose(
        near._pair_distance_loss(gt / 0.1, pr / 0.1, mask, s10), torch.tensor([2 * 0.5**2 / 6]).double()
    )


def test_clash_loss_closed_form_zero_on_real_chains_and_in_training_loss(batch):
    ca = torch.zeros(1, 6, 3, dtype=torch.float64)
    ca[0, :, 0] = torch.arange(6) * 1.0  # 10 A apart along x (nm)
    ca[0, 3] = ca[0, 0] + torch.tensor([0.2, 0.0, 0.0])  # residue 3 at 2 A from residue 0 (|i - j| = 3)
    ca[0, 4] = ca[0, 3] + torch.tensor([0.0, 0.1, 0.0])  # residue 4 at 1 A from residue 3: |i - j| = 1, ignored
    mask = torch.ones(1, 6, dtype=torch.float64)
    s = torch.full((1, 1, 1), 0.5, dtype=torch.float64)
    m = ReQFlow(net=IPAFrameNet(c_s=8, c_z=8, c_hidden=4, num_heads=1, num_blocks=1), clash_weight=1.0)
    d04 = math.hypot(0.2, 0.1)  # residues 0 and 4 (|i - j| = 4) at 2.24 A
    expected = (((0.34 - 0.2) / 0.5) ** 2 + ((0.34 - d04) / 0.5) ** 2) / 6
    assert abs(float(m._clash_loss(ca, mask, s)) - expected) < 1e-7
    mask[0, 4] = 0.0  # a padded residue does not count (and N = 5)
    assert abs(float(m._clash_loss(ca, mask, s)) - ((0.34 - 0.2) / 0.5) ** 2 / 5) < 1e-7
    chains = bundled_backbones()
    real = torch.stack([torch.from_numpy(c.ca[:40]).double() / ANG_PER_NM for c in chains[:20]])
    assert float(m._clash_loss(real, torch.ones(20, 40, dtype=torch.float64), s).abs().max()) == 0.0
    # an oracle trained with the penalty still has zero loss; a clashing prediction raises the auxiliary loss
    x1 = _x1(m, batch)
    assert _oracle_losses(x1, batch, clash_weight=1.0)[0] < 1e-8
    bad = x1.clone()
    bad[:, 5, :3] = bad[:, 0, :3]
    logs = [_oracle_losses(bad, batch, clash_weight=w)[1] for w in (0.0, 1.0)]
    assert logs[1] > logs[0] > 0


def test_loss_chains_sums_per_chain_losses_and_is_stored(batch, tmp_path):
    from flowsci.checkpoint import save_module

    torch.manual_seed(0)
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)
    losses = {}
    for n in (None, 8, 3):
        model = ReQFlow(net=net, loss_chains=n, time_sampler=FixedTime(0.8))
        losses[n] = float(model.compute_loss(batch, generator=torch.Generator().manual_seed(0))[0])
    # 3 chains: the mean is sum / 3; with loss_chains=8 the sum / 8, and loss_chains=3 is the mean again
    assert losses[8] == pytest.approx(losses[None] * 3 / 8, rel=1e-6)
    assert losses[3] == pytest.approx(losses[None], rel=1e-6)
    with pytest.raises(ValueError, match="loss_chains"):
        ReQFlow(net=net, loss_chains=0)
    path = save_module(ReQFlow(net=net, loss_chains=8), tmp_path / "w.pt")
    assert ReQFlow.from_checkpoint(path).loss_chains == 8
    blob = torch.load(path, weights_only=True)
    del blob["flowsci"]["init"]["loss_chains"]  # a file written before the option existed
    torch.save(blob, tmp_path / "old.pt")
    assert ReQFlow.from_checkpoint(tmp_path / "old.pt").loss_chains is None


def test_rg_loss_closed_form_invariant_and_in_training_loss(batch):
    g = torch.Generator().manual_seed(0)
    gt = torch.randn(2, 30, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(2, 30, dtype=torch.float64)
    mask[1, 20:] = 0.0
    s = torch.tensor([0.5, 0.25], dtype=torch.float64)[:, None, None]

    def rg(x, m):
        x = x[m.bool()]
        return float((x - x.mean(0)).pow(2).sum(-1).mean().sqrt())

    # a trace scaled by a about any point, then rotated and shifted: loss = ((a - 1) Rg / s)^2 per chain
    a, rot = 0.8, quaternion_to_matrix(random_quaternion((), generator=g, dtype=torch.float64))
    pr = (0.8 * (gt - 3.0)) @ rot.T + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    pr[1, 20:] = 99.0  # padding is ignored
    got = ReQFlow._rg_loss(gt, pr, mask, s)
    want = [((a - 1) * rg(gt[i], mask[i]) / float(s[i])) ** 2 for i in range(2)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), rtol=1e-9)
    assert float(ReQFlow._rg_loss(gt, gt @ rot.T + 5.0, mask, s).abs().max()) < 1e-12
    # an oracle trained with the loss has zero loss; a compacted prediction raises the auxiliary loss
    x1 = _x1(ReQFlow(), batch)
    assert _oracle_losses(x1, batch, rg_weight=1.0)[0] < 1e-8
    small = torch.cat([0.7 * x1[..., :3], x1[..., 3:]], -1)
    logs = [_oracle_losses(small, batch, rg_weight=w)[1] for w in (0.0, 1.0)]
    assert logs[1] > logs[0] > 0


def test_shipped_pretrained_model_samples_trained_backbones():
    m = ReQFlow.pretrained()
    assert sum(p.numel() for p in m.net.parameters()) == 383032 and m.trans_prior == "rg" and len(m.net.blocks) == 4
    s = m.sample(lengths=[60, 80, 100, 180, 220], steps=10, seed=0)
    from flowsci.domains.proteins.metrics import evaluate

    table = evaluate(list(s), diversity_per_length=False)
    # trained: most consecutive CA-CA within 0.25 A of 3.8 A (an untrained net gives ~0, real chains 1.0)
    assert table.summary["ca_ca_valid_0.25"] > 0.6 and 3.5 < table.summary["ca_ca_mean"] < 4.1
    # trained on whole chains: long samples keep the globular size (Rg / 2.2 L^0.38: 0.94 / 0.92 here; the
    # crop-trained model gave 0.53 / 0.50 and 259 / 431 CA pairs under 3 A, the 2-block whole-chain one 0.82 / 0.79
    # and 69 / 78; real chains ~1.0 and 0)
    for row in table.rows[3:]:
        assert row["rg_ratio"] > 0.85 and row["num_ca_clashes_3A"] < 80


def test_ca_restraint_energy_closed_form_and_relaxation():
    from flowsci.domains.proteins.geometry import ca_restraint_energy, relax_ca_trace

    # 4 CAs on a line, bonds 0.38 nm except the last (0.48); residues 0 and 3 are then 1.24 nm apart: no clash
    ca = torch.tensor([[[0.0, 0, 0], [0.38, 0, 0], [0.76, 0, 0], [1.24, 0, 0]]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.float64)
    assert float(ca_restraint_energy(ca, mask)) == pytest.approx(0.1**2)
    # fold residue 3 back onto residue 0 (0.30 nm apart, |i - j| = 3): one clash term (0.38 - 0.30)^2
    folded = torch.tensor([[[0.0, 0, 0], [0.38, 0, 0], [0.38, 0.38, 0], [0.0, 0.30, 0]]], dtype=torch.float64)
    bond3 = float((folded[0, 3] - folded[0, 2]).norm())
    e = (bond3 - 0.38) ** 2 + (0.38 - 0.30) ** 2
    assert float(ca_restraint_energy(folded, mask)) == pytest.approx(e)
    half = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)  # padding residue 3 is ignored
    assert float(ca_restraint_energy(folded, half)) == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    chain = torch.randn(2, 30, 3, generator=g, dtype=torch.float64) * 0.5
    m2 = torch.ones(2, 30, dtype=torch.float64)
    relaxed = relax_ca_trace(chain, m2, step=0.2, iters=20)
    assert (ca_restraint_energy(relaxed, m2) < 0.1 * ca_restraint_energy(chain, m2)).all()


def test_sampling_restraint_is_off_by_default_and_lowers_the_energy():
    from flowsci.domains.proteins.geometry import ca_restraint_energy

    torch.manual_seed(0)
    m = ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1))
    plain = m.sample(lengths=[16, 24], steps=3, seed=1)
    zero = m.sample(lengths=[16, 24], steps=3, seed=1, restraint=0.0)
    assert torch.equal(plain.x, zero.x)
    held = m.sample(lengths=[16, 24], steps=3, seed=1, restraint=0.2)
    mask = plain.extras["mask"]
    assert (ca_restraint_energy(held.x[..., :3], mask) < ca_restraint_energy(plain.x[..., :3], mask)).all()
    assert held.nfe == plain.nfe and held.extras["restraint"] == 0.2


def _small_model() -> ReQFlow:
    torch.manual_seed(0)
    return ReQFlow(net=IPAFrameNet(c_s=32, c_z=16, c_hidden=8, num_heads=2, num_blocks=1)).eval()


def test_length_buckets_follow_each_chains_length():
    # CPU budget 16384 pairs: one 100-residue chain, two of 80, four of 60 per batch; longest bucket first
    assert length_buckets([100, 60, 60, 60, 60, 80, 80], CPU_BATCH_PAIRS) == [[0], [5, 6], [1, 2, 3, 4]]
    assert length_buckets([100, 95, 89], 10**9) == [[0, 1], [2]]  # 89 is more than 10 % shorter than 100
    lengths = [int(n) for n in np.random.default_rng(0).integers(20, 250, 40)]
    buckets = length_buckets(lengths, 50_000)
    assert sorted(i for b in buckets for i in b) == list(range(40))
    for b in buckets:
        longest = max(lengths[i] for i in b)
        assert len(b) == 1 or (len(b) * longest**2 <= 50_000 and min(lengths[i] for i in b) >= 0.9 * longest)


@pytest.mark.parametrize("final_step", ["euler", "x1"])
def test_bucketed_mixed_lengths_give_the_padded_batchs_chains(final_step):
    m = _small_model()
    lengths = [12, 30, 12, 28, 20]
    kw = {"lengths": lengths, "steps": 3, "seed": 5, "final_step": final_step, "return_trajectory": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RepeatedSeedWarning)
        a = m.sample(**kw, max_batch_pairs=2000)
        b = m.sample(**kw, bucket=False)
    assert a.extras["batches"] == [[1, 3], [4], [0, 2]] and b.extras["batches"] == [[0, 1, 2, 3, 4]]
    assert torch.equal(a.extras["x0"], b.extras["x0"])  # the seed maps to the same prior draw per chain
    assert torch.allclose(a.x, b.x, atol=1e-5) and a.x.shape == (5, 30, 7)
    assert len(a.trajectory) == len(b.trajectory)
    assert all(torch.allclose(p, q, atol=1e-5) for p, q in zip(a.trajectory, b.trajectory, strict=True))
    assert [len(bb) for bb in a] == lengths and torch.isfinite(a.x).all()
    assert np.allclose(a[3].coords, b[3].coords, atol=1e-4)


def test_repeating_a_seed_for_a_length_warns():
    m = _small_model()
    m.sample(lengths=[10, 12], steps=2, seed=1)
    with pytest.warns(RepeatedSeedWarning, match=r"seed 1 already sampled length\(s\) \[10\]"):
        m.sample(lengths=[10], steps=2, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RepeatedSeedWarning)
        m.sample(lengths=[10], steps=2, seed=2)  # a new seed
        m.sample(lengths=[14], steps=2, seed=1)  # a new length
        m.sample(lengths=[10], steps=3, seed=1)  # other sampler settings: a deliberate comparison
        m.sample(lengths=[10], steps=2)  # unseeded


# --------------------------------------------------------------------------- unrolled (trajectory-level) training


def _short_last_chain(batch):
    """The fixture batch with its last chain cut to 15 of 24 residues (padding after), residues numbered from 0 as
    in :meth:`ReQFlow.sample` (the crops keep their chain positions)."""
    out = {k: v.clone() for k, v in batch.items()}
    out["mask"][2, 15:] = 0.0
    out["res_idx"] = torch.arange(24).expand(3, 24).clone()
    return out


def _moving_model() -> ReQFlow:
    """A small untrained model whose predictions differ from x_t (a fresh trunk's output layers start at zero)."""
    m = _small_model()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m


def _unroll_inputs(m: ReQFlow, batch, seed: int = 0):
    x1, cond, mask = m.unpack_batch(batch)
    g = torch.Generator().manual_seed(seed)
    return x1, mask, cond["res_idx"], m._training_prior(x1, cond, g), g


def test_unroll_off_gives_the_old_loss_bit_for_bit_and_options_are_checked(batch):
    torch.manual_seed(0)
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)
    plain = ReQFlow(net=net)
    assert (plain.unroll_prob, plain.unroll_steps, plain.unroll_nfe) == (0.0, 4, 10)
    losses, states = [], []
    for m in (plain, ReQFlow(net=net, unroll_prob=0.0, unroll_steps=2, unroll_nfe=20)):
        g = torch.Generator().manual_seed(3)
        losses.append(m.compute_loss(batch, generator=g)[0])
        states.append(g.get_state())
    assert torch.equal(losses[0], losses[1]) and torch.equal(states[0], states[1])  # no extra random draws at p = 0
    unrolled = ReQFlow(net=net, unroll_prob=1.0).compute_loss(batch, generator=torch.Generator().manual_seed(3))[0]
    assert not torch.equal(unrolled, losses[0])
    for bad in ({"unroll_prob": 1.5}, {"unroll_steps": 0}, {"unroll_nfe": 0}, {"unroll_steps": 7}):
        with pytest.raises(ValueError, match="unroll"):
            ReQFlow(net=net, **bad)
    ReQFlow(net=net, unroll_steps=6)  # 0.3 + 7 · 0.099 <= 1: the longest unroll at NFE 10


def test_unrolled_state_is_the_samplers_euler_integration_from_the_same_start(batch):
    m = _moving_model()
    m.set_unroll(1.0, steps=3)
    b = _short_last_chain(batch)
    x1, mask, res_idx, x0, g = _unroll_inputs(m, b)
    out = m._unroll(x0, x1, mask, res_idx, g)
    grid, x_t0 = out["grid"], out["x_t0"]
    dt = (1 - m.t_min) / 10
    assert 2 <= len(grid) <= 4 and torch.allclose(grid.diff(), torch.full((len(grid) - 1,), dt, dtype=torch.float64))
    assert grid[0] >= UNROLL_T_START and grid[-1] <= 1 - dt + 1e-12
    # the start lies on the training path at t0
    t0 = torch.full((3,), float(grid[0]))
    keep = mask.bool()[..., None]
    assert torch.equal(x_t0, torch.where(keep, m._interpolate(x0, x1, t0), x1))
    # the module's sampler, started from the same state on the same grid, reaches the same state
    m.sample_prior = lambda *args, **kwargs: x_t0.clone()
    sol = m.sample(lengths=[24, 24, 15], time_grid=grid, bucket=False)
    assert torch.allclose(torch.where(keep, sol.x, x1), out["x_t"], atol=1e-6)
    assert not torch.allclose(out["x_t"], x_t0, atol=1e-3)  # it did move
    assert torch.equal(out["x_t"][~mask.bool()], x1[~mask.bool()])  # padding untouched
    assert out["x_sc"].shape == (3, 24, 3)


def test_one_unrolled_step_self_conditions_the_loss_call_like_the_sampler(batch):
    m = _moving_model()
    m.set_unroll(1.0, steps=1)
    x1, mask, res_idx, x0, g = _unroll_inputs(m, batch, seed=1)
    out = m._unroll(x0, x1, mask, res_idx, g)
    assert len(out["grid"]) == 2
    t0 = torch.full((3,), float(out["grid"][0]))
    with torch.no_grad():
        first = m._predict(out["x_t0"], t0, mask, res_idx, None)
        step = m.manifold.exp(
            out["x_t0"],
            m.manifold.proju(
                out["x_t0"],
                (out["grid"][1] - out["grid"][0]).float() * m.velocity_from_x1(out["x_t0"], first, t0, mask),
            ),
        )
    assert torch.allclose(out["x_sc"], first[..., :3], atol=1e-6)  # the sampler's next call sees this x_sc
    assert torch.allclose(out["x_t"], step, atol=1e-6)  # one geodesic Euler step


def test_unrolled_loss_of_an_exact_predictor_is_zero_with_targets_from_the_unrolled_state(batch):
    x1 = ReQFlow().unpack_batch(batch)[0]
    m = ReQFlow(net=Oracle(x1), unroll_prob=1.0, unroll_steps=4)
    x1, mask, res_idx, x0, g = _unroll_inputs(m, batch, seed=2)
    out = m._unroll(x0, x1, mask, res_idx, g)
    t = torch.full((3,), float(out["grid"][-1]))
    on_path = m._interpolate(x0, x1, t)
    # exact x1 predictions: Euler on the straight translation path is exact; the "exp" rotation schedule is not SLERP
    assert torch.allclose(out["x_t"][..., :3], on_path[..., :3], atol=1e-5)
    assert not torch.allclose(out["x_t"][..., 3:], on_path[..., 3:], atol=1e-2)
    for seed in range(4):
        loss, logs = m.compute_loss(batch, generator=torch.Generator().manual_seed(seed))
        assert float(loss.detach()) == pytest.approx(0.0, abs=1e-8) and float(logs["rot_loss"]) == pytest.approx(
            0.0, abs=1e-8
        )


def test_unrolled_loss_is_finite_and_only_its_last_network_call_has_gradients(batch):
    m = _moving_model().train()
    m.set_unroll(1.0, steps=4)
    calls: list[bool] = []
    m.net.register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    for seed in range(3):
        calls.clear()
        m.zero_grad()
        loss, logs = m.compute_loss(_short_last_chain(batch), generator=torch.Generator().manual_seed(seed))
        loss.backward()
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in logs.values())
        assert 2 <= len(calls) <= 5 and calls.count(True) == 1 and calls[-1]  # k sampler calls, then the loss call
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(gr).all() for gr in grads)


def test_unroll_options_round_trip_through_a_checkpoint(tmp_path):
    from flowsci.checkpoint import save_module

    torch.manual_seed(0)
    net = IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1)
    path = save_module(ReQFlow(net=net, unroll_prob=0.5, unroll_steps=3, unroll_nfe=20), tmp_path / "w.pt")
    loaded = ReQFlow.from_checkpoint(path)
    assert (loaded.unroll_prob, loaded.unroll_steps, loaded.unroll_nfe) == (0.5, 3, 20)
    blob = torch.load(path, weights_only=True)
    for key in ("unroll_prob", "unroll_steps", "unroll_nfe"):  # a file written before the options existed
        del blob["flowsci"]["init"][key]
    torch.save(blob, tmp_path / "old.pt")
    old = ReQFlow.from_checkpoint(tmp_path / "old.pt")
    assert (old.unroll_prob, old.unroll_steps, old.unroll_nfe) == (0.0, 4, 10)
    shipped = ReQFlow.pretrained()  # trained with the unroll; the file records its recipe (PROVENANCE.md)
    assert (shipped.unroll_prob, shipped.unroll_steps, shipped.unroll_nfe) == (0.25, 2, 10)
