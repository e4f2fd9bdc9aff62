"""Goal refinement (regressed goal offsets) and mirror augmentation of GoalFlow."""

import math

import numpy as np
import pytest
import torch

from flowsci.domains.trajectories import GoalFlow, GoalFlowNet, TrajectoryWindows
from flowsci.domains.trajectories.flow import mirror_rows
from flowsci.errors import InputError


def _net(**kw) -> GoalFlowNet:
    return GoalFlowNet(d_model=32, num_layers=1, num_heads=2, scorer_d_model=32, time_dim=32, **kw)


def _mirror_world(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(batch)
    for key in ("obs", "fut", "nbr_obs", "nbr_fut"):
        out[key] = batch[key] * torch.tensor([1.0, -1.0], dtype=batch[key].dtype)
    return out


def test_mirror_rows_is_a_world_reflection(sample_windows):
    """Mirroring a prepared row in the agent frame equals preparing the world-mirrored window (y -> -y)."""
    model = GoalFlow(_net(), num_goals=8)
    model.fit_statistics(sample_windows)
    batch = sample_windows.tensors(slice(0, 64))
    x1, cond, aux = model.prepare(batch)
    gen = torch.Generator().manual_seed(1)
    fx1, fcond, faux = mirror_rows(x1, cond, aux, gen)
    flipped = (fx1[:, :, 1] != x1[:, :, 1]).any(-1)
    assert 10 < int(flipped.sum()) < 54  # about half of the rows
    mx1, mcond, maux = model.prepare(_mirror_world(batch))
    f = flipped
    torch.testing.assert_close(fx1[f], mx1[f], atol=1e-5, rtol=0)
    for key in ("hist", "nbr", "goal"):
        torch.testing.assert_close(fcond[key][f], mcond[key][f], atol=1e-5, rtol=0)
    for key in ("end", "nbr_end"):
        torch.testing.assert_close(faux[key][f], maux[key][f], atol=1e-5, rtol=0)
    # unflipped rows untouched; x coordinates and the goal flag never change; mirroring twice is the identity
    torch.testing.assert_close(fx1[~f], x1[~f])
    torch.testing.assert_close(fx1[..., 0], x1[..., 0])
    torch.testing.assert_close(fcond["goal"][:, 2], cond["goal"][:, 2])
    back, _, _ = mirror_rows(fx1, fcond, faux, torch.Generator().manual_seed(1))
    torch.testing.assert_close(back, x1)


def test_flip_vocabulary_clusters_the_mirrored_endpoints(sample_windows):
    """With as many goals as (endpoints + mirror images), k-means returns exactly those points."""
    w = sample_windows.subset(slice(0, 40, 5))  # 8 windows -> 16 points
    sym = GoalFlow(_net(), num_goals=16, augment_flip=True)
    sym.fit_statistics(w)
    plain = GoalFlow(_net(), num_goals=8)
    plain.fit_statistics(w)
    ends = plain.goals  # the 8 agent-frame endpoints themselves
    points = torch.cat([ends, ends * torch.tensor([1.0, -1.0])])
    d = (sym.goals[:, None] - points[None]).norm(dim=-1)
    assert float(d.amin(1).max()) < 1e-4 and float(d.amin(0).max()) < 1e-4
    torch.testing.assert_close(plain.pos_scale, sym.pos_scale)
    gen = torch.Generator().manual_seed(0)
    loss, _ = sym.compute_loss(sample_windows.tensors(slice(0, 32)), generator=gen)
    assert torch.isfinite(loss)


def test_offsets_start_at_the_vocabulary_and_learn_the_endpoint(sample_windows):
    torch.manual_seed(0)
    assert _net().scorer_offset is None
    model = GoalFlow(_net(goal_offsets=True), num_goals=4, col_loss_weight=0.0)
    model.fit_statistics(sample_windows)
    batch = sample_windows.tensors(slice(0, 32))
    x1, cond, aux = model.prepare(batch)
    s = model.pos_scale
    refined = model.net.offset_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], model.goals / s)
    torch.testing.assert_close(refined, (model.goals / s)[None].expand_as(refined))  # zero-initialised head
    nearest = ((model.goals[None] - aux["end"][:, None]) ** 2).sum(-1).argmin(-1)
    quantisation = (model.goals[nearest] - aux["end"]).norm(dim=-1).mean()
    opt = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    for _ in range(200):
        opt.zero_grad()
        loss, logs = model.goal_scorer_loss(cond, aux)
        loss.backward()
        opt.step()
    assert "goal_offset" in logs
    with torch.no_grad():
        refined = model.net.offset_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], model.goals / s)
    picked = refined[torch.arange(len(nearest)), nearest] * s
    err = (picked - aux["end"]).norm(dim=-1).mean()
    assert err < 0.5 * quantisation, (float(err), float(quantisation))


def test_refined_goals_are_used_and_equivariant(sample_windows):
    torch.manual_seed(0)
    model = GoalFlow(_net(goal_offsets=True), num_goals=8)
    model.fit_statistics(sample_windows)
    torch.nn.init.normal_(model.net.scorer_offset[3].weight, std=0.3)
    model.eval()
    w = sample_windows.strided(5)
    sol = model.predict_windows(w, 4, steps=1, seed=0)
    # goals (world frame) are vocabulary points moved by the offsets: not on the vocabulary's grid
    from flowsci.domains.trajectories.flow import agent_frame, to_local

    origin, rot = agent_frame(torch.as_tensor(w.obs))
    local = to_local(sol.goals, origin, rot)
    d = (local[:, :, None] - model.goals[None, None]).norm(dim=-1).amin(-1)
    assert float(d.min()) > 1e-3
    angle, shift = 0.9, np.array([1.0, 2.0], np.float32)
    c, sn = math.cos(angle), math.sin(angle)
    r = np.array([[c, -sn], [sn, c]], np.float32)

    def f(p):
        return (p @ r.T + shift).astype(np.float32)

    rw = TrajectoryWindows(
        f(w.obs), f(w.fut), f(w.nbr_obs), f(w.nbr_fut), w.nbr_mask, w.frame, w.ped, w.scene, w.frame_step
    )
    sol_r = model.predict_windows(rw, 4, steps=1, seed=0)
    np.testing.assert_allclose(sol_r.x.numpy(), sol.x.numpy() @ r.T + shift, atol=2e-3)


def test_driving_net_rejects_offsets():
    pytest.importorskip("highway_env")
    from flowsci.domains.trajectories.driving import DrivingGoalFlowNet

    with pytest.raises(InputError, match="goal_offsets"):
        DrivingGoalFlowNet(d_model=32, num_layers=1, num_heads=2, scorer_d_model=32, goal_offsets=True)


def test_coverage_goals_greedy_facility_location():
    from flowsci.domains.trajectories.flow import coverage_goals

    gen = torch.Generator().manual_seed(0)
    goals = torch.randn(12, 2, generator=gen) * 3
    score = torch.randn(5, 12, generator=gen) * 2
    idx = coverage_goals(score, goals, 3)
    p = torch.softmax(score, -1).numpy()
    d = torch.cdist(goals, goals).numpy()
    for a in range(5):  # brute-force greedy: each pick minimises E_p min distance to the picks so far
        picks: list[int] = []
        for _ in range(3):
            costs = [(p[a] * d[:, picks + [c]].min(1)).sum() if c not in picks else np.inf for c in range(12)]
            picks.append(int(np.argmin(costs)))
        assert idx[a].tolist() == picks
    # the first pick is the distribution's medoid; a near one-hot score picks its goal first
    one_hot = torch.full((1, 12), -50.0)
    one_hot[0, 7] = 0.0
    assert int(coverage_goals(one_hot, goals, 1)[0, 0]) == 7
    # k > G: every goal once, then the order repeats
    many = coverage_goals(score, goals, 15)
    assert sorted(many[0, :12].tolist()) == list(range(12)) and many[0, 12:].tolist() == many[0, :3].tolist()
    with pytest.raises(InputError):
        coverage_goals(score, goals, 3, temperature=0.0)


def test_speed_frame_round_trip_and_scale_equivariance(sample_windows):
    from flowsci.domains.trajectories.flow import agent_frame, to_local, to_world

    torch.manual_seed(0)
    model = GoalFlow(_net(), num_goals=8, speed_ref=0.05)  # every moving synthetic walker is "fast"
    batch = sample_windows.tensors(slice(0, 32))
    origin, rot = model.frame(batch)
    o2, r2 = agent_frame(batch["obs"])
    v = (batch["obs"][:, -1] - batch["obs"][:, -3]).norm(dim=-1) / 2
    rho = (v / 0.05).clamp_min(1.0)
    torch.testing.assert_close(rot * rho[:, None, None], r2)
    p = batch["fut"]
    torch.testing.assert_close(to_world(to_local(p, origin, rot), origin, rot), p, atol=1e-4, rtol=0)
    # walkers faster than speed_ref are seen at the reference speed: scaling the whole scene scales predictions
    model.fit_statistics(sample_windows)
    model.eval()
    w = sample_windows.strided(6)
    keep = ((np.linalg.norm(w.obs[:, -1] - w.obs[:, -3], axis=-1) / 2) > 0.2).nonzero()[0]
    w = w.subset(keep)
    c = 1.7
    scaled = TrajectoryWindows(
        w.obs * c, w.fut * c, w.nbr_obs * c, w.nbr_fut * c, w.nbr_mask, w.frame, w.ped, w.scene, w.frame_step
    )
    a = model.predict_windows(w, 4, steps=2, seed=0)
    b = model.predict_windows(scaled, 4, steps=2, seed=0)
    np.testing.assert_allclose(b.x.numpy(), a.x.numpy() * c, atol=2e-3 * c)
