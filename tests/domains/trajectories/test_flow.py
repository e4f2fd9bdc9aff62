"""GoalFlow and the constant-velocity baselines: frames, equivariance, losses, sampling, files, checkpoints."""

import math

import numpy as np
import pytest
import torch

from flowsci.domains.trajectories import ConstantVelocity, GoalFlow, GoalFlowNet, TrajectoryWindows
from flowsci.domains.trajectories.data import read_trajectories
from flowsci.domains.trajectories.flow import (
    GoalDropout,
    agent_frame,
    nms_goals,
    score_trajectories,
    shifted_time_grid,
    to_local,
    to_world,
    windows_from_arrays,
)
from flowsci.errors import InputError


def _rotate(w: TrajectoryWindows, angle: float, shift=(3.0, -2.0)) -> TrajectoryWindows:
    c, s = math.cos(angle), math.sin(angle)
    r = np.array([[c, -s], [s, c]], np.float32)

    def f(p):
        return (p @ r.T + np.asarray(shift, np.float32)).astype(np.float32)

    return TrajectoryWindows(
        f(w.obs), f(w.fut), f(w.nbr_obs), f(w.nbr_fut), w.nbr_mask, w.frame, w.ped, w.scene, w.frame_step
    )


def test_agent_frame_round_trip_and_heading():
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(6, 8, 2, generator=g, dtype=torch.float64).cumsum(1)
    origin, rot = agent_frame(obs)
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(2, dtype=torch.float64).expand(6, 2, 2))
    p = torch.randn(6, 12, 2, generator=g, dtype=torch.float64)
    torch.testing.assert_close(to_world(to_local(p, origin, rot), origin, rot), p)
    walker = torch.stack([torch.arange(8.0), 2 * torch.arange(8.0)], -1)[None]  # heading along (1, 2)
    local = to_local(walker, *agent_frame(walker))
    torch.testing.assert_close(local[0, :, 1], torch.zeros(8), atol=1e-6, rtol=0)
    assert (local[0, :-1, 0] < 0).all() and local[0, -1, 0] == 0
    still = torch.zeros(1, 8, 2)
    torch.testing.assert_close(agent_frame(still)[1][0], torch.eye(2))


def test_shifted_grid():
    torch.testing.assert_close(shifted_time_grid(4, 1.0), torch.linspace(0, 1, 5, dtype=torch.float64))
    g = shifted_time_grid(5, 3.0)
    assert g[0] == 0 and g[-1] == 1 and (g.diff() > 0).all()
    assert g.diff()[0] < g.diff()[-1]  # small steps near the noise end
    torch.testing.assert_close(shifted_time_grid(1, 3.0), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_trajectory_scorer():
    ends = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [3.0, 0.0]]])
    goal = torch.tensor([[2.9, 0.0]])
    assert score_trajectories(ends, goal).argmax(-1).item() == 2
    assert score_trajectories(ends, goal, 0.0, 1.0).argmax(-1).item() == 2
    assert score_trajectories(ends, torch.tensor([[0.1, 0.0]])).argmax(-1).item() == 1


def test_nms_goals():
    goals = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [3.2, 0.0], [6.0, 0.0]])
    score = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    # radius 1 m: the second-best goal of each pair is suppressed until only suppressed goals are left
    assert nms_goals(score, goals, 5, 1.0).tolist() == [[0, 2, 4, 1, 3], [4, 3, 1, 2, 0]]
    assert nms_goals(score, goals, 5, 0.0).tolist() == score.argsort(-1, descending=True).tolist()  # = top-k
    assert nms_goals(score, goals, 7, 1.0)[0].tolist() == [0, 2, 4, 1, 3, 0, 1]  # repeats once all are taken
    assert nms_goals(score, goals, 3, 10.0)[0].tolist() == [0, 1, 2]  # everything suppressed: top-k of the rest


def test_goal_dropout_rates():
    n = 20_000
    cond = {"goal": torch.ones(n, 3), "hist": torch.ones(n, 8, 2), "nbr": torch.ones(n, 2, 8, 2)}
    cond["nbr_mask"] = torch.ones(n, 2)
    out = GoalDropout(0.25, 0.5)(cond, generator=torch.Generator().manual_seed(0))
    no_goal = out["goal"][:, 2] == 0
    no_scene = out["hist"].flatten(1).abs().sum(1) == 0
    assert abs(no_scene.float().mean() - 0.5) < 0.02
    assert abs((no_goal & ~no_scene).float().mean() - 0.25) < 0.02
    assert not (no_scene & ~no_goal).any()
    blank = GoalDropout().blank(cond)
    assert (blank["goal"] == 0).all() and (blank["hist"] == 1).all()
    with pytest.raises(ValueError):
        GoalDropout(0.7, 0.5)


def test_loss_is_finite_and_l1(sample_windows):
    net = GoalFlowNet(d_model=32, num_layers=1, num_heads=2, scorer_d_model=32, time_dim=32)
    model = GoalFlow(net, num_goals=8)
    batch = sample_windows.tensors(slice(0, 16))
    with pytest.raises(RuntimeError, match="vocabulary"):
        model.compute_loss(batch)
    model.fit_statistics(sample_windows)
    assert model.goals.abs().sum() > 0 and (model.pos_scale > 0.1).all()
    gen = torch.Generator().manual_seed(0)
    loss, logs = model.compute_loss(batch, generator=gen)
    assert torch.isfinite(loss) and {"flow_loss", "goal_ce", "goal_bce"} <= set(logs)
    # zero-initialised output layer: the velocity is 0, so the L1 loss is E|x1 - x0| exactly
    x1, cond, _ = model.prepare(batch)
    gen = torch.Generator().manual_seed(0)
    x0 = model.sample_prior(16, cond, generator=gen)
    gen2 = torch.Generator().manual_seed(0)
    _, logs2 = model.compute_loss(batch, generator=gen2)
    torch.testing.assert_close(logs2["flow_loss"], (x1 - x0).abs().mean(), atol=1e-5, rtol=1e-5)


def test_prediction_is_rotation_and_translation_equivariant(trained_model, sample_windows):
    w = sample_windows.strided(6)
    a = trained_model.predict_windows(w, 5, steps=2, seed=3)
    angle = 0.7
    b = trained_model.predict_windows(_rotate(w, angle), 5, steps=2, seed=3)
    c, s = math.cos(angle), math.sin(angle)
    expected = a.x.numpy() @ np.array([[c, -s], [s, c]]).T + np.array([3.0, -2.0])
    np.testing.assert_allclose(b.x.numpy(), expected, atol=2e-3)


def test_predict_api_and_variants(trained_model, sample_windows):
    w = sample_windows
    one = trained_model.predict(w.obs[0], w.nbr_obs[0][w.nbr_mask[0]], num_samples=7, steps=1)
    assert one.shape == (7, 12, 2) and np.isfinite(one).all()
    many = trained_model.predict(w.obs[:3], [w.nbr_obs[i][w.nbr_mask[i]] for i in range(3)], num_samples=4)
    assert many.shape == (3, 4, 12, 2)
    np.testing.assert_allclose(trained_model.predict(w.obs[0], None, 3), trained_model.predict(w.obs[0], None, 3))
    sol = trained_model.predict_windows(w.strided(4), 20, steps=1, seed=0)
    assert sol.nfe == 1 and sol.goals.shape == (4, 20, 2)
    goals = torch.unique(sol.goals[0].round(decimals=4), dim=0)
    assert len(goals) == 16  # top-20 of a 16-goal vocabulary: every goal used
    assert trained_model.predict_windows(w.strided(2), 3, steps=2, candidates=3).nfe == 6
    assert trained_model.predict_windows(w.strided(2), 3, steps=2, cfg_scale=2.0).nfe == 4
    shadow = trained_model.predict_windows(w.strided(2), 3, steps=1, shadow_threshold=0.0)
    assert shadow.nfe == 2
    torch.testing.assert_close(shadow.x[:, 0], shadow.x[:, 1])  # threshold 0: all replaced by the shadow
    oracle = trained_model.predict_windows(w.strided(2), 3, steps=1, oracle_goal=True)
    torch.testing.assert_close(oracle.goals[:, 0], torch.as_tensor(w.strided(2).fut[:, -1]), atol=1e-4, rtol=0)
    sampled = trained_model.predict_windows(w.strided(2), 3, steps=1, seed=1, goal_selection="sample")
    assert sampled.x.shape == (2, 3, 12, 2)
    nms = trained_model.predict_windows(w.strided(2), 8, steps=1, seed=1, goal_selection="nms", nms_radius=0.5)
    d = torch.cdist(nms.goals, nms.goals)  # the first goals taken are pairwise farther apart than the radius
    first = min(4, len(trained_model.goals))
    assert (d[:, :first, :first] + torch.eye(first) * 1e3 > 0.5 - 1e-4).all()
    trained_model.goal_selection, trained_model.nms_radius = "nms", 0.5  # the model's defaults are used
    try:
        torch.testing.assert_close(trained_model.predict_windows(w.strided(2), 8, steps=1, seed=1).goals, nms.goals)
    finally:
        trained_model.goal_selection, trained_model.nms_radius = "topk", 2.0
    with pytest.raises(InputError):
        trained_model.predict_windows(w, 0)
    with pytest.raises(InputError):
        trained_model.predict_windows(w, 2, goal_selection="best")
    with pytest.raises(InputError):
        trained_model.predict(np.full((8, 2), np.nan))


def test_windows_from_arrays_shapes():
    w, single = windows_from_arrays(np.zeros((8, 2)), np.zeros((3, 8, 2)))
    assert single and w.nbr_mask.sum() == 3
    nbr = np.zeros((2, 2, 8, 2))
    nbr[0, 1] = np.nan  # absent neighbour
    w, single = windows_from_arrays(np.zeros((2, 8, 2)), nbr)
    assert not single and w.nbr_mask.tolist() == [[True, False], [True, True]]
    with pytest.raises(InputError):
        windows_from_arrays(np.zeros((8, 3)))
    with pytest.raises(InputError):
        windows_from_arrays(np.zeros((2, 8, 2)), [np.zeros((1, 8, 2))])


def test_sample_write_and_checkpoint_round_trip(trained_model, tmp_path):
    import pytorch_lightning as pl

    sol = trained_model.sample(4, steps=2, seed=5, max_agents=3)
    files = trained_model.write_samples(sol, tmp_path / "out")
    names = {f.name for f in files}
    assert {"sample_00.txt", "sample_03.txt", "predictions.npz", "scene.png"} <= names
    rows = read_trajectories(tmp_path / "out" / "predictions" / "sample_02.txt")
    w = sol.windows
    first = rows[(rows[:, 1] == w.ped[0])]
    first = first[np.argsort(first[:, 0])]
    np.testing.assert_allclose(first[:, 2:], sol.x[0, 2].numpy(), atol=1e-4)
    assert first[0, 0] == w.frame[0] + 8 * 10
    with np.load(tmp_path / "out" / "predictions.npz") as z:
        assert z["pred"].shape == (3, 4, 12, 2) and int(z["seed"]) == 5
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_steps=0)
    trainer.strategy.connect(trained_model)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = GoalFlow.from_checkpoint(ckpt)
    torch.testing.assert_close(loaded.goals, trained_model.goals)
    again = loaded.sample(4, steps=2, seed=5, max_agents=3)
    torch.testing.assert_close(again.x, sol.x)


def test_no_goal_mode(sample_windows):
    model = GoalFlow(GoalFlowNet(d_model=32, num_layers=1, num_heads=2, scorer_d_model=32), goal_mode="none")
    model.fit_statistics(sample_windows)
    loss, logs = model.compute_loss(sample_windows.tensors(slice(0, 8)))
    assert "goal_ce" not in logs and torch.isfinite(loss)
    sol = model.predict_windows(sample_windows.strided(2), 3, steps=1, seed=0)
    assert sol.goals is None and sol.x.shape == (2, 3, 12, 2)
    with pytest.raises(ValueError):
        GoalFlow(GoalFlowNet(), goal_mode="maybe")
    with pytest.raises(ValueError):
        GoalFlow(GoalFlowNet(), goal_selection="best")
    with pytest.raises(ValueError):
        GoalFlow(GoalFlowNet(), nms_radius=-1.0)


def test_constant_velocity_closed_form():
    obs = np.stack([np.arange(8.0) * 0.5, np.zeros(8)], -1)
    cvm = ConstantVelocity(0.0).predict(obs, None, num_samples=3)
    np.testing.assert_allclose(cvm[0, :, 0], 3.5 + 0.5 * np.arange(1, 13), atol=1e-5)
    np.testing.assert_allclose(cvm[1], cvm[0])
    cvms = ConstantVelocity(25.0).predict(obs, None, num_samples=200, seed=1)
    step = np.linalg.norm(cvms[:, 1] - cvms[:, 0], axis=-1)
    np.testing.assert_allclose(step, 0.5, atol=1e-5)  # speed kept, direction sampled
    angles = np.degrees(np.arctan2(cvms[:, 0, 1] - 0.0, cvms[:, 0, 0] - 3.5))
    assert 20 < angles.std() < 30


def test_reflow_pairs_and_rectify(trained_model, sample_windows):
    from flowsci.domains.trajectories.flow import rectify_goalflow, reflow_pairs

    w = sample_windows.strided(8)
    pairs = reflow_pairs(trained_model, w, samples_per_agent=2, steps=3, seed=0)
    assert pairs.x0.shape == (16, 12, 2) and pairs.x1.shape == (16, 12, 2)
    assert set(pairs.cond) == {"hist", "nbr", "nbr_mask", "goal"} and (pairs.cond["goal"][:, 2] == 1).all()
    # the stored x1 is the teacher's 3-step solution from the stored x0
    from flowsci.solvers import solve_ode

    again = solve_ode(
        trained_model.velocity,
        pairs.x0,
        steps=3,
        time_grid=shifted_time_grid(3, trained_model.time_shift),
        **pairs.cond,
    )
    torch.testing.assert_close(again.x, pairs.x1, atol=1e-5, rtol=1e-5)
    student = rectify_goalflow(trained_model, w, max_steps=3, samples_per_agent=2, teacher_steps=2)
    assert student is not trained_model
    torch.testing.assert_close(student.goals, trained_model.goals)
    assert student.predict_windows(w.strided(2), 4, steps=1, seed=0).x.shape == (2, 4, 12, 2)
