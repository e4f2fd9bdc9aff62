"""Closed-loop driving on highway-env: data collection, the batch format, IDM rollouts and the episode metrics."""

import numpy as np
import pytest
import torch

pytest.importorskip("highway_env")

from flowsci.domains.trajectories.driving import (  # noqa: E402
    DT,
    LANE_SLOTS,
    OBS_LEN,
    PRED_LEN,
    DrivingGoalFlow,
    DrivingGoalFlowNet,
    DrivingWindows,
    EpisodeLog,
    FlowPlanner,
    HighwayConfig,
    _make_road,
    _ttc_violation,
    closed_loop,
    collect_highway,
    drivable_mask,
    evaluate_planner,
    on_road,
    rollout,
    score_episode,
)
from flowsci.domains.trajectories.metrics import pdm_score  # noqa: E402
from flowsci.errors import InputError  # noqa: E402

CFG = HighwayConfig(duration=8.0, vehicles=10)


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return collect_highway(2, 0, CFG, cache_dir=tmp_path_factory.mktemp("hw"), progress=False)


def test_collection_is_cached_and_seeded(tmp_path, windows):
    first = collect_highway(1, 3, CFG, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("highway_*.npz"))
    assert len(files) == 1
    again = collect_highway(1, 3, CFG, cache_dir=tmp_path, progress=False)  # read back from the cache
    fresh = collect_highway(1, 3, CFG, cache_dir=None, progress=False)  # re-simulated: same seed, same data
    for name in DrivingWindows._ARRAYS:
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
        np.testing.assert_allclose(getattr(first, name), getattr(fresh, name))
    assert again.meta["windows"] == len(first) > 0
    assert set(np.unique(windows.episode)) == {0, 1}
    with pytest.raises(InputError):
        collect_highway(0, cache_dir=None)


def test_batch_shapes(windows):
    n = len(windows)
    assert windows.obs.shape == (n, OBS_LEN, 2) and windows.fut.shape == (n, PRED_LEN, 2)
    assert windows.lanes.shape == (n, LANE_SLOTS, OBS_LEN, 2)
    assert (windows.lane_mask.sum(1) == CFG.lanes).all()  # three lanes, one empty slot
    assert np.allclose(windows.lane_width[windows.lane_mask], 4.0)
    # vehicles move forward along x at highway speed; the future continues the history
    assert (windows.fut[:, -1, 0] > windows.obs[:, -1, 0]).all()
    assert set(np.unique(windows.maneuver)) <= {-1, 0, 1}
    packed = windows.to_windows()
    m = windows.nbr_mask.shape[1]
    assert packed.nbr_obs.shape == (n, m + LANE_SLOTS, OBS_LEN, 2)
    np.testing.assert_array_equal(packed.nbr_mask[:, m:], windows.lane_mask)
    batch = packed.tensors(slice(0, 8))
    model = DrivingGoalFlow(DrivingGoalFlowNet(d_model=16, num_layers=1, scorer_d_model=16), num_goals=4)
    model.fit_statistics(packed)
    loss, logs = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and "goal_dac_bce" in logs
    plan = FlowPlanner(model, steps=1, candidates=2).plan(windows.subset(slice(0, 1)))
    assert plan.shape == (PRED_LEN, 2) and np.isfinite(plan).all()


def test_idm_closed_loop_baseline():
    log = rollout(100_000, "idm", CFG)
    again = rollout(100_000, "idm", CFG)
    np.testing.assert_array_equal(log.pos, again.pos)  # seeded and deterministic
    steps = int(round(CFG.duration / DT)) + 1
    assert log.pos.shape[0] == steps and log.start == OBS_LEN - 1
    s = score_episode(log, log.progress)
    assert s["nc"] == 1.0 and s["dac"] == 1.0 and s["ep"] == 1.0 and s["comfort"] == 1.0
    speed = log.progress / s["duration_s"]
    assert 15.0 < speed < 31.0  # IDM at highway speed, below its 30 m/s target plus slack
    assert (np.abs(log.heading[:, 0]) < 0.3).all()


class _Planner:
    """Keeps the current speed and shifts laterally by ``shift`` metres over the plan."""

    def __init__(self, shift):
        self.shift, self.name = shift, f"shift{shift}"

    def plan(self, window):
        p, v = window.obs[0, -1], window.speed[0]
        k = np.arange(1, PRED_LEN + 1)[:, None]
        return p + k * np.array([v * DT, self.shift / PRED_LEN])


def test_tracker_follows_plans():
    keep = rollout(100_000, _Planner(0.0), CFG)
    s = score_episode(keep, rollout(100_000, "idm", CFG).progress)
    assert s["dac"] == 1.0 and s["ep"] > 0.5
    off = rollout(100_000, _Planner(-40.0), CFG)  # steers off the road (lanes span y in [-2, 10])
    s_off = score_episode(off)
    assert s_off["dac"] == 0.0 and len(off.pos) < len(keep.pos)
    with pytest.raises(InputError):
        rollout(0, "bogus", CFG)


def test_closed_loop_table():
    table = closed_loop({"keep": _Planner(0.0)}, num_episodes=1, cfg=CFG, progress=False)
    assert list(table.index) == ["IDM", "keep"]
    assert table.loc["IDM", "PDMS"] == 1.0 and np.isnan(table.loc["IDM", "ms_per_plan"])
    assert table.loc["keep", "DAC"] == 1.0 and table.loc["keep", "ms_per_plan"] > 0
    with pytest.raises(InputError):
        evaluate_planner("idm", [1, 2], {1: 10.0}, CFG)  # no IDM reference for seed 2
    with pytest.raises(InputError):
        closed_loop({}, num_episodes=0)


def test_episode_metrics_on_constructed_cases():
    env = _make_road(0, CFG)
    road = env.unwrapped.road
    assert on_road(road, [100.0, 4.0], 0.0) and not on_road(road, [100.0, 9.5], 0.0)  # box edge at 10.5 m
    assert on_road(road, [100.0, 9.5], None)  # the centre alone is inside
    env.close()
    pos = np.array([[0.0, 0.0], [3.0, 0.0], [-3.0, 0.0], [3.0, 4.0]])
    hd, sp = np.zeros(4), np.array([20.0, 20.0, 20.0, 20.0])
    assert _ttc_violation(pos, hd, sp)  # overlapping car ahead
    assert not _ttc_violation(pos[[0, 2, 3]], hd[:3], sp[:3])  # behind / adjacent lane only
    assert _ttc_violation(np.array([[0.0, 0.0], [15.0, 0.0]]), np.zeros(2), np.array([20.0, 0.0]))  # stopped ahead
    s = 10
    x = np.arange(s) * 10.0
    pos = np.zeros((s, 2, 2))
    pos[:, 0, 0] = x
    log = EpisodeLog(
        seed=0, pos=pos, heading=np.zeros((s, 2)), speed=np.full((s, 2), 20.0), lane=np.zeros((s, 2), int),
        crashed=np.zeros((s, 2), bool), ttc_violation=np.zeros(s, bool), on_road=np.ones(s, bool), start=3,
    )  # fmt: skip
    assert log.progress == 60.0
    good = score_episode(log, 120.0)
    assert good == pytest.approx(
        {"nc": 1.0, "dac": 1.0, "ttc": 1.0, "comfort": 1.0, "ep": 0.5, "progress_m": 60.0, "duration_s": 3.0}
    )
    assert pdm_score(good["nc"], good["dac"], good["ttc"], good["comfort"], good["ep"]) == pytest.approx(9.5 / 12)
    log.crashed[-1, 0] = True
    log.ttc_violation[5] = True
    bad = score_episode(log, 60.0)
    assert bad["nc"] == 0.0 and bad["ttc"] == 0.0 and bad["ep"] == 1.0
    lanes = torch.tensor([[[[150.0, 0.0], [0.0, 0.0]], [[150.0, 4.0], [0.0, 4.0]]]])
    pts = torch.tensor([[10.0, 1.9], [10.0, 5.5], [10.0, -2.5], [200.0, 0.0]])
    assert drivable_mask(pts, lanes, torch.ones(1, 2)).tolist() == [[True, True, False, False]]
    assert drivable_mask(pts, lanes, torch.tensor([[0.0, 1.0]])).tolist() == [[False, True, False, False]]


def _rotate(w, angle):
    """A copy of packed windows rotated by ``angle`` about the world origin (agents, neighbours and lanes)."""
    import dataclasses

    r = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=np.float32)
    return dataclasses.replace(w, obs=w.obs @ r.T, fut=w.fut @ r.T, nbr_obs=w.nbr_obs @ r.T, nbr_fut=w.nbr_fut @ r.T)


def test_lane_frame_follows_the_lane_and_is_equivariant(windows):
    net = DrivingGoalFlowNet(d_model=16, num_layers=1, scorer_d_model=16)
    model = DrivingGoalFlow(net, num_goals=4)
    packed = windows.to_windows().subset(slice(0, 16))
    model.fit_statistics(packed)
    batch = packed.tensors(slice(None))
    _, rot = model.frame(batch)
    # straight highway lanes run along +x: the lane frame is the world frame, whatever the car's heading
    np.testing.assert_allclose(rot.numpy(), np.broadcast_to(np.eye(2), rot.shape), atol=1e-6)
    heading = DrivingGoalFlow(net, num_goals=4, frame_mode="heading")
    tilted = dict(batch, obs=batch["obs"] + torch.tensor([0.0, 1.0]) * torch.arange(OBS_LEN)[:, None])
    _, rot_h = heading.frame(tilted)
    _, rot_l = model.frame(tilted)
    assert (rot_h[:, 1, 0].abs() > 1e-3).all() and torch.allclose(rot_l, rot)  # only the heading frame tilts
    # rotating the whole scene rotates the plan (same seed)
    a = 0.7
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    p0 = model.predict_windows(packed, num_samples=2, steps=2, seed=3).x.numpy()
    p1 = model.predict_windows(_rotate(packed, a), num_samples=2, steps=2, seed=3).x.numpy()
    np.testing.assert_allclose(p1, p0 @ r.T, atol=2e-2)
    with pytest.raises(InputError):
        DrivingGoalFlow(net, frame_mode="bogus")


def test_min_scale_floors_the_lateral_scale(windows):
    net = DrivingGoalFlowNet(d_model=16, num_layers=1, scorer_d_model=16)
    packed = windows.to_windows()
    floored = DrivingGoalFlow(net, num_goals=4)  # driving default: 2 m
    raw = DrivingGoalFlow(net, num_goals=4, min_scale=0.01)
    floored.fit_statistics(packed)
    raw.fit_statistics(packed)
    # lateral motion on the highway is small (few lane changes); the longitudinal RMS is untouched by the floor
    assert raw.pos_scale[1] < 2.0 and floored.pos_scale[1] == 2.0
    assert floored.pos_scale[0] == raw.pos_scale[0] > 20.0


def test_intersection_windows_are_multimodal(tmp_path):
    cfg = HighwayConfig(scenario="intersection", vehicles=10, duration=15.0)
    w = collect_highway(2, 0, cfg, cache_dir=tmp_path, progress=False)
    assert len(w) > 50 and set(np.unique(w.maneuver)) == {-1, 0, 1}  # right, straight and left turns
    # the label is the sign of the heading change: turning cars' futures bend to the matching side
    v = w.fut[:, -1] - w.fut[:, -2]
    u = w.obs[:, -1] - w.obs[:, -2]
    cross = u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0]
    moving = (np.linalg.norm(u, axis=1) > 1.0) & (np.linalg.norm(v, axis=1) > 1.0)
    for m in (-1, 1):
        sel = moving & (w.maneuver == m)
        assert sel.any() and (np.sign(cross[sel]) == m).mean() > 0.8
    assert 2.0 < np.median(w.speed) < 12.0  # urban speeds
    spacing = np.linalg.norm(np.diff(w.lanes[:, 0], axis=1), axis=-1)
    spacing = spacing[w.lane_mask[:, 0]]  # points 30/20/10/0 m ahead along the lane: 10 m apart, less on arcs (chords)
    assert (spacing <= 10.0 + 1e-3).all() and np.median(spacing) == pytest.approx(10.0, abs=1e-3)
    with pytest.raises(InputError):
        HighwayConfig(scenario="roundabout")
