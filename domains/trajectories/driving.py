r"""Closed-loop driving with GoalFlow on highway-env: simulator data, the driving batch format, the planner, rollouts.

**Simulator.** highway-env's ``highway-fast-v0`` road (``lanes`` straight lanes, ``vehicles`` IDM/MOBIL cars) or
its ``intersection-v0`` four-way crossing (``HighwayConfig(scenario="intersection")``: ``vehicles`` IDM cars on random
routes, each turning left, going straight or turning right; data only, no closed-loop scores there), headless
(``render_mode=None``), seeded by ``env.reset(seed=...)``. flowsci steps the road itself
(``road.act(); road.step(1 / sim_hz)``) instead of ``env.step`` so that the ego can be an IDM/MOBIL car (data and
the baseline) or a plain kinematic car tracking a planned trajectory. Poses of every vehicle are logged every
:data:`DT` = 0.5 s (2 Hz, NAVSIM's pose rate). The first ``(OBS_LEN - 1) * DT`` = 1.5 s of every episode are a
warm-up with the ego under IDM, identical for every planner, so each planner starts from the same state with a
full history.

**Training data** (:func:`collect_highway`). Every logged vehicle (ego included, all under IDM/MOBIL) gives windows
of :data:`OBS_LEN` = 4 past + :data:`PRED_LEN` = 8 future poses (1.5 s + 4 s) every ``stride`` logged steps, skipped
if the vehicle crashed. MOBIL lane changes make the futures multimodal (keep lane / change lane; ``maneuver`` =
lane index change over the window; at the intersection left / straight / right, from the heading change over the
future, ``maneuver`` = +1 / 0 / -1). Episodes are seeded (``seed + i``), cached as one ``.npz`` per configuration
and seed list, and collected under a tqdm progress bar.

**Batch format** (:class:`DrivingWindows`). Ego/agent history and future, up to ``max_neighbours`` nearest vehicles
within :data:`NEIGHBOUR_RADIUS` (masked), and the ``LANE_SLOTS`` nearest lane centrelines as polylines of
:data:`OBS_LEN` points at :data:`LANE_OFFSETS` metres ahead of the agent along the lane (masked), with their
widths: the drivable area is the union of the lanes (centreline ± width / 2). :meth:`DrivingWindows.to_windows`
packs lanes into the trailing neighbour slots of a :class:`~flowsci.domains.trajectories.data.TrajectoryWindows`,
so the pedestrian pipeline (agent frame, normalisation, sampling) is reused unchanged.

**Planner** (:class:`DrivingGoalFlow`, :class:`DrivingGoalFlowNet`). The package's GoalFlow with (i) a lane encoder:
lane polylines are tokens attended by the agent token, added to the social token (velocity network and goal
scorer alike), and (ii) GoalFlow's **drivable-area score** in place of the pedestrians' clearance score: the BCE
target of vocabulary point :math:`g_i` is 1 iff it lies within ``lane_half_width`` of a lane centreline of the
scene, and (iii) a **lane-aligned frame** (:meth:`DrivingGoalFlow.frame`): x along the nearest lane's centreline
instead of the car's recent heading, with the lateral position scale floored at ``min_scale`` = 2 m. In the heading
frame a car that drifts a few degrees rotates its own plan with it (the plan is drawn in that frame), which fed
back into leaving the road in closed loop; and the lateral RMS of highway futures is 0.3 m, so lanes 4 m away sat
at 13 normalised units. Inference: top-1 goal by :math:`w_1 \log p_{dis} + w_2 \log\sigma(s_{dac})`,
``candidates`` trajectories, GoalFlow's trajectory scorer picks one. ``goal_mode="none"`` is the no-goal flow.

**Closed loop** (:func:`rollout`, :func:`closed_loop`). Replan every :data:`DT`; the ego (a kinematic bicycle,
highway-env's ``Vehicle``) tracks the plan at ``sim_hz`` with pure pursuit (look-ahead 1 s along the plan) and a
proportional speed controller (acceleration clipped to [-6, 3] m/s², steering to ±0.2 rad). Episodes end at the
duration, at a collision, or when the ego is farther than 4 m outside the road. Scores per episode
(:func:`score_episode`, aggregated with :func:`~flowsci.domains.trajectories.metrics.pdm_score`):

* NC: 0 if the ego collided (highway-env's ``crashed``; no at-fault analysis), else 1.
* DAC: 0 if a corner of the ego box ever lies outside every lane (:func:`on_road`), else 1.
* TTC: 0 if, at some logged step, the constant-velocity projection over 0, 0.3, 0.6, 0.9 s puts a vehicle that is
  ahead of the ego within the ego box (boxes compared in the ego frame: :math:`|dx| < L`, :math:`|dy| < W`).
* C: :func:`~flowsci.domains.trajectories.metrics.comfort_ok` on the ego's 2 Hz poses after the warm-up.
* EP: progress along the road after the warm-up divided by the IDM baseline's on the same seed, clipped to [0, 1].
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowsci.domains.trajectories.data import TrajectoryWindows, WindowLoaders
from flowsci.domains.trajectories.flow import GoalFlow
from flowsci.domains.trajectories.metrics import comfort_ok, pdm_score
from flowsci.domains.trajectories.model import GoalFlowNet
from flowsci.errors import InputError, require
from flowsci.io import atomic_write

__all__ = [
    "DT",
    "DrivingGoalFlow",
    "DrivingGoalFlowNet",
    "DrivingWindows",
    "EpisodeLog",
    "FlowPlanner",
    "HighwayConfig",
    "HighwayDataModule",
    "closed_loop",
    "collect_highway",
    "evaluate_planner",
    "idm_progress",
    "on_road",
    "rollout",
    "score_episode",
    "simulate_episode",
]

DT = 0.5
"""Seconds between logged poses and between replans (2 Hz)."""
OBS_LEN = 4
PRED_LEN = 8
LANE_SLOTS = 4
LANE_OFFSETS = (0.0, 50.0, 100.0, 150.0)
"""Metres ahead of the agent (along each lane) of the lane polyline points on the highway, nearest last (the
model's radius mask looks at the last point)."""
INTERSECTION_LANE_OFFSETS = (0.0, 10.0, 20.0, 30.0)
"""The same at the intersection (speeds ~8 m/s instead of ~25)."""
SCENARIOS = {"highway": "highway-fast-v0", "intersection": "intersection-v0"}
TURN_THRESHOLD = 0.5
"""Heading change (rad) over the future above which an intersection window is a turn (``maneuver`` +-1)."""
NEIGHBOUR_RADIUS = 60.0
CACHE_VERSION = 1
TRAIN_SEED, VAL_SEED, EVAL_SEED = 0, 50_000, 100_000
"""First episode seed of each split: training episodes are ``TRAIN_SEED + i``, evaluation ones ``EVAL_SEED + i``."""


@dataclass(frozen=True)
class HighwayConfig:
    """The simulated road and traffic.

    Attributes:
        lanes: Straight lanes (4 m wide; highway only).
        vehicles: Other IDM/MOBIL vehicles (at the intersection: the initial vehicles, each with a random route;
            flowsci steps the road itself, so none spawn later).
        duration: Episode length (s, warm-up included).
        sim_hz: Simulation frequency (a multiple of 2).
        density: highway-env's ``vehicles_density``.
        ego_target_speed: Desired speed of the ego under IDM on the highway (m/s; the speed limit is 30).
        scenario: ``"highway"`` (``highway-fast-v0``: straight lanes, lane changes) or ``"intersection"``
            (``intersection-v0``: a four-way crossing, every car turning left, going straight or turning right).
    """

    lanes: int = 3
    vehicles: int = 20
    duration: float = 30.0
    sim_hz: int = 10
    density: float = 1.0
    ego_target_speed: float = 30.0
    scenario: str = "highway"

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise InputError("scenario", f"must be one of {sorted(SCENARIOS)}, got {self.scenario!r}")
        if self.lanes < 1 or self.lanes > LANE_SLOTS:
            raise InputError("lanes", f"must be 1..{LANE_SLOTS}, got {self.lanes}")
        if self.vehicles < 0:
            raise InputError("vehicles", f"must be >= 0, got {self.vehicles}")
        if self.sim_hz < 2 or self.sim_hz % 2:
            raise InputError("sim_hz", f"must be an even number >= 2, got {self.sim_hz}")
        if self.duration < (OBS_LEN + PRED_LEN) * DT:
            raise InputError("duration", f"must be >= {(OBS_LEN + PRED_LEN) * DT} s, got {self.duration}")

    @property
    def lane_offsets(self) -> tuple[float, ...]:
        """Metres ahead of the lane polyline points of this scenario."""
        return LANE_OFFSETS if self.scenario == "highway" else INTERSECTION_LANE_OFFSETS


# ------------------------------------------------------------------------------------------------ simulator
def _make_road(seed: int, cfg: HighwayConfig) -> Any:
    """Reset a headless highway-env scene with ``seed``; returns the env (its ``unwrapped.road`` is stepped)."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    gym = require("gymnasium", "trajectories")
    require("highway_env", "trajectories")
    config: dict[str, Any] = {"duration": cfg.duration, "simulation_frequency": cfg.sim_hz}
    if cfg.scenario == "highway":
        config.update(lanes_count=cfg.lanes, vehicles_count=cfg.vehicles, vehicles_density=cfg.density)
    else:
        config.update(initial_vehicle_count=cfg.vehicles, spawn_probability=0.0)
    env = gym.make(SCENARIOS[cfg.scenario], render_mode=None, config=config)
    env.reset(seed=int(seed))
    return env


def _lanes(road: Any) -> list[Any]:
    return [lane for tos in road.network.graph.values() for lanes in tos.values() for lane in lanes]


def on_road(road: Any, position: Any, heading: float | None = None, length: float = 5.0, width: float = 2.0) -> bool:
    """Drivable-area test: the ego box (or the point, ``heading=None``) lies inside the union of the lanes.

    Args:
        road: highway-env ``Road``.
        position: ``[2]`` centre (m).
        heading: Box heading (rad); ``None`` tests the point only.
        length: Box length (m).
        width: Box width (m).

    """
    p = np.asarray(position, dtype=np.float64)
    if heading is None:
        pts = p[None]
    else:
        u = np.array([np.cos(heading), np.sin(heading)])
        n = np.array([-u[1], u[0]])
        pts = np.stack([p + sx * length / 2 * u + sy * width / 2 * n for sx in (-1, 1) for sy in (-1, 1)])
    lanes = _lanes(road)
    return all(any(lane.on_lane(q) for lane in lanes) for q in pts)


def _lane_polylines(
    road: Any, position: np.ndarray, offsets: tuple[float, ...] = LANE_OFFSETS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``LANE_SLOTS`` nearest lanes (highway-env's ``lane.distance``) as ``[LANE_SLOTS, len(offsets), 2]``
    polylines (points ``offsets`` metres ahead along each lane, nearest last), mask and widths.
    """
    rows = []
    for lane in _lanes(road):
        s, _ = lane.local_coordinates(position)
        pts = np.stack([lane.position(s + o, 0.0) for o in offsets[::-1]])
        rows.append((lane.distance(position), pts, lane.width_at(s)))
    rows.sort(key=lambda r: r[0])
    poly = np.zeros((LANE_SLOTS, len(offsets), 2))
    mask = np.zeros(LANE_SLOTS, dtype=bool)
    width = np.zeros(LANE_SLOTS)
    for j, (_, pts, w) in enumerate(rows[:LANE_SLOTS]):
        poly[j], mask[j], width[j] = pts, True, w
    return poly, mask, width


@dataclass
class EpisodeLog:
    """Poses of every vehicle every :data:`DT` (vehicle 0 is the ego) and the ego's outcome.

    Attributes:
        seed: Episode seed.
        pos: ``[S, V, 2]`` positions (m).
        heading: ``[S, V]`` headings (rad).
        speed: ``[S, V]`` speeds (m/s).
        lane: ``[S, V]`` lane index (the lane id within the road).
        crashed: ``[S, V]`` crashed flags.
        ttc_violation: ``[S]`` the ego's TTC check failed at that step.
        on_road: ``[S]`` the ego box was inside the drivable area.
        start: First logged step after the warm-up (planner control starts there).
        planner: Name of the ego policy.
    """

    seed: int
    pos: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    lane: np.ndarray
    crashed: np.ndarray
    ttc_violation: np.ndarray
    on_road: np.ndarray
    start: int
    planner: str = "idm"

    @property
    def progress(self) -> float:
        """Ego distance along the road (x) after the warm-up (m)."""
        return float(self.pos[-1, 0, 0] - self.pos[self.start, 0, 0])


def _ttc_violation(pos: np.ndarray, heading: np.ndarray, speed: np.ndarray, length: float = 5.0, width: float = 2.0):
    """Constant-velocity projection over 0-0.9 s: does a vehicle ahead of the ego (index 0) enter the ego box?"""
    vel = speed[:, None] * np.stack([np.cos(heading), np.sin(heading)], -1)  # [V, 2]
    u = np.array([np.cos(heading[0]), np.sin(heading[0])])
    n = np.array([-u[1], u[0]])
    rel0 = pos[1:] - pos[0]
    ahead = rel0 @ u > 0
    for tau in (0.0, 0.3, 0.6, 0.9):
        rel = rel0 + (vel[1:] - vel[0]) * tau
        hit = (np.abs(rel @ u) < length) & (np.abs(rel @ n) < width) & ahead
        if hit.any():
            return True
    return False


def simulate_episode(
    seed: int,
    cfg: HighwayConfig = HighwayConfig(),
    planner: Any = "idm",
    stop_on_crash: bool = True,
) -> EpisodeLog:
    """Run one seeded episode and log every vehicle every :data:`DT`.

    Args:
        seed: Episode seed (traffic and ego start).
        cfg: Road and traffic.
        planner: ``"idm"`` (the ego is highway-env's IDM/MOBIL car) or an object with
            ``plan(window: DrivingWindows) -> [PRED_LEN, 2]`` world positions at ``DT, 2 DT, ...`` (the ego then
            tracks it, see the module docstring).
        stop_on_crash: End the episode when the ego crashes or is > 4 m off the road.

    """
    behavior = require("highway_env.vehicle.behavior", "trajectories")
    kinematics = require("highway_env.vehicle.kinematics", "trajectories")
    if not (planner == "idm" or hasattr(planner, "plan")):
        raise InputError("planner", f"must be 'idm' or have a plan(window) method, got {planner!r}")
    env = _make_road(seed, cfg)
    try:
        road = env.unwrapped.road
        ego0 = env.unwrapped.vehicle
        ego = behavior.IDMVehicle.create_from(ego0)
        if cfg.scenario == "highway":  # at the intersection the ego keeps the lane's speed limit as target
            ego.target_speed = cfg.ego_target_speed
        vehicles = [ego] + [v for v in road.vehicles if v is not ego0]
        road.vehicles[:] = vehicles
        lane_ids = {id(lane): i for i, lane in enumerate(_lanes(road))}
        per_log = cfg.sim_hz // 2
        n_logs = int(round(cfg.duration / DT)) + 1
        start = OBS_LEN - 1
        logs: dict[str, list] = {k: [] for k in ("pos", "heading", "speed", "lane", "crashed", "ttc", "road")}
        plan = None
        plan_age = 0.0
        for k in range(n_logs):
            ego = road.vehicles[0]
            pos = np.array([v.position for v in road.vehicles], dtype=np.float64)
            hd = np.array([v.heading for v in road.vehicles], dtype=np.float64)
            sp = np.array([v.speed for v in road.vehicles], dtype=np.float64)
            logs["pos"].append(pos)
            logs["heading"].append(hd)
            logs["speed"].append(sp)
            logs["lane"].append(np.array([lane_ids.get(id(v.lane), -1) for v in road.vehicles]))
            logs["crashed"].append(np.array([v.crashed for v in road.vehicles]))
            logs["ttc"].append(_ttc_violation(pos, hd, sp))
            logs["road"].append(on_road(road, ego.position, ego.heading))
            off_far = (
                not on_road(road, ego.position, None)
                and min(abs(lane.local_coordinates(ego.position)[1]) - lane.width_at(0) / 2 for lane in _lanes(road))
                > 4.0
            )
            if k == n_logs - 1 or (stop_on_crash and k >= start and (ego.crashed or off_far)):
                break
            if planner != "idm" and k >= start:
                if k == start:  # hand the ego over to the tracker
                    car = kinematics.Vehicle(road, ego.position.copy(), ego.heading, ego.speed)
                    car.action = {"steering": 0.0, "acceleration": 0.0}
                    road.vehicles[0] = car
                    ego = car
                hist = {n: np.stack(logs[n][-OBS_LEN:]) for n in ("pos", "heading", "speed")}
                window = _ego_window(road, hist["pos"], hist["speed"][-1, 0], offsets=cfg.lane_offsets)
                plan = np.asarray(planner.plan(window), dtype=np.float64).reshape(PRED_LEN, 2)
                plan = np.concatenate([ego.position[None].copy(), plan])  # pose at plan time 0
                plan_age = 0.0
            for _ in range(per_log):
                if plan is not None:
                    road.vehicles[0].action = _track(road.vehicles[0], plan, plan_age)
                road.act()
                road.step(1.0 / cfg.sim_hz)
                plan_age += 1.0 / cfg.sim_hz
        return EpisodeLog(
            seed=int(seed),
            pos=np.stack(logs["pos"]),
            heading=np.stack(logs["heading"]),
            speed=np.stack(logs["speed"]),
            lane=np.stack(logs["lane"]),
            crashed=np.stack(logs["crashed"]),
            ttc_violation=np.asarray(logs["ttc"], dtype=bool),
            on_road=np.asarray(logs["road"], dtype=bool),
            start=start,
            planner="idm" if planner == "idm" else getattr(planner, "name", type(planner).__name__),
        )
    finally:
        env.close()


def _interp(plan: np.ndarray, tau: float) -> np.ndarray:
    """Position on ``plan`` (``[PRED_LEN + 1, 2]`` at 0, DT, ...) at time ``tau`` (linear, extrapolated)."""
    i = min(max(int(tau // DT), 0), len(plan) - 2)
    a = (tau - i * DT) / DT
    return plan[i] + a * (plan[i + 1] - plan[i])


def _track(car: Any, plan: np.ndarray, age: float) -> dict[str, float]:
    """Pure pursuit (look-ahead 1 s along the plan) + proportional speed control."""
    target = _interp(plan, age + 1.0)
    v_ref = float(np.linalg.norm(_interp(plan, age + 0.75) - _interp(plan, age + 0.25)) / 0.5)
    d = target - car.position
    ld = max(float(np.linalg.norm(d)), 1.0)
    alpha = float(np.arctan2(d[1], d[0]) - car.heading)
    alpha = (alpha + np.pi) % (2 * np.pi) - np.pi
    steer = float(np.arctan2(2.0 * car.LENGTH * np.sin(alpha), ld))
    acc = float(np.clip(1.5 * (v_ref - car.speed), -6.0, 3.0))
    return {"steering": float(np.clip(steer, -0.2, 0.2)), "acceleration": acc}


# ------------------------------------------------------------------------------------------------ batch format
@dataclass
class DrivingWindows:
    """Driving windows (world coordinates, metres): agent, neighbours, lanes / drivable area.

    Attributes:
        obs: ``[N, OBS_LEN, 2]`` agent history (last = now).
        fut: ``[N, PRED_LEN, 2]`` agent future (zeros when unknown, e.g. in closed loop).
        nbr_obs: ``[N, M, OBS_LEN, 2]`` nearest vehicles' histories (zero where absent).
        nbr_fut: ``[N, M, PRED_LEN, 2]`` their futures.
        nbr_mask: ``[N, M]`` bool.
        lanes: ``[N, LANE_SLOTS, OBS_LEN, 2]`` lane centrelines at :data:`LANE_OFFSETS` ahead (nearest point last).
        lane_mask: ``[N, LANE_SLOTS]`` bool.
        lane_width: ``[N, LANE_SLOTS]`` lane widths (m); drivable = within width / 2 of a centreline.
        speed: ``[N]`` agent speed now (m/s).
        maneuver: ``[N]`` highway: lane index change over the future (0 = keep lane); intersection: +1 left turn,
            -1 right turn (heading change over the future above :data:`TURN_THRESHOLD`, counter-clockwise positive
            in the simulator's x-y coordinates), 0 straight.
        episode: ``[N]`` episode seed.
        vehicle: ``[N]`` vehicle index in the episode (0 = ego).
        step: ``[N]`` logged step of the first observed pose.
    """

    obs: np.ndarray
    fut: np.ndarray
    nbr_obs: np.ndarray
    nbr_fut: np.ndarray
    nbr_mask: np.ndarray
    lanes: np.ndarray
    lane_mask: np.ndarray
    lane_width: np.ndarray
    speed: np.ndarray
    maneuver: np.ndarray
    episode: np.ndarray
    vehicle: np.ndarray
    step: np.ndarray
    meta: dict = field(default_factory=dict)

    _ARRAYS = (
        "obs", "fut", "nbr_obs", "nbr_fut", "nbr_mask", "lanes", "lane_mask", "lane_width", "speed", "maneuver",
        "episode", "vehicle", "step",
    )  # fmt: skip

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def subset(self, index: Any) -> DrivingWindows:
        """The windows at ``index``."""
        return DrivingWindows(**{n: getattr(self, n)[index] for n in self._ARRAYS}, meta=self.meta)

    @staticmethod
    def concat(parts: list[DrivingWindows]) -> DrivingWindows:
        """Concatenate (same neighbour slots)."""
        if not parts:
            raise InputError("parts", "concat needs at least one DrivingWindows")
        return DrivingWindows(
            **{n: np.concatenate([getattr(p, n) for p in parts]) for n in DrivingWindows._ARRAYS}, meta=parts[0].meta
        )

    def to_windows(self) -> TrajectoryWindows:
        """Pack into :class:`TrajectoryWindows` with the lanes in the last ``LANE_SLOTS`` neighbour slots (their
        "future" is the last polyline point repeated); what :class:`DrivingGoalFlow` consumes.
        """
        n = len(self)
        lane_fut = np.repeat(self.lanes[:, :, -1:], PRED_LEN, axis=2)
        return TrajectoryWindows(
            obs=self.obs,
            fut=self.fut,
            nbr_obs=np.concatenate([self.nbr_obs, self.lanes], axis=1),
            nbr_fut=np.concatenate([self.nbr_fut, lane_fut], axis=1),
            nbr_mask=np.concatenate([self.nbr_mask, self.lane_mask], axis=1),
            frame=self.step.astype(np.int64),
            ped=(self.episode.astype(np.int64) * 1000 + self.vehicle).astype(np.int64),
            scene=np.asarray([f"highway_{int(e)}" for e in self.episode], dtype=object)
            if n
            else np.zeros(0, dtype=object),
            frame_step=1,
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write a compressed ``.npz`` atomically."""
        arrays = {n: getattr(self, n) for n in self._ARRAYS}
        meta = json.dumps(self.meta)
        return atomic_write(path, lambda tmp: np.savez_compressed(tmp, meta=np.asarray(meta), **arrays))

    @staticmethod
    def load(path: str | os.PathLike) -> DrivingWindows:
        """Read what :meth:`save` wrote."""
        with np.load(path, allow_pickle=False) as z:
            missing = [n for n in DrivingWindows._ARRAYS if n not in z.files]
            if missing:
                raise InputError(str(path), f"not a driving-window file (missing {missing})")
            arrays = {n: z[n] for n in DrivingWindows._ARRAYS}
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        return DrivingWindows(**arrays, meta=meta)


def _neighbours(pos_hist: np.ndarray, i: int, max_neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (padded with -1) and mask of the ``max_neighbours`` nearest vehicles to ``i`` at the last step."""
    d = np.linalg.norm(pos_hist[-1] - pos_hist[-1, i], axis=-1)
    d[i] = np.inf
    order = [j for j in np.argsort(d) if d[j] <= NEIGHBOUR_RADIUS][:max_neighbours]
    idx = np.full(max_neighbours, -1)
    idx[: len(order)] = order
    return idx, idx >= 0


def _ego_window(
    road: Any,
    pos_hist: np.ndarray,
    speed: float,
    max_neighbours: int = 8,
    offsets: tuple[float, ...] = LANE_OFFSETS,
) -> DrivingWindows:
    """The closed-loop planning input of the ego (vehicle 0) from the last ``OBS_LEN`` logged poses."""
    idx, mask = _neighbours(pos_hist, 0, max_neighbours)
    nbr = np.where(mask[:, None, None], pos_hist[:, np.maximum(idx, 0)].transpose(1, 0, 2), 0.0)
    poly, lmask, width = _lane_polylines(road, pos_hist[-1, 0], offsets)
    return DrivingWindows(
        obs=pos_hist[None, :, 0],
        fut=np.zeros((1, PRED_LEN, 2)),
        nbr_obs=nbr[None],
        nbr_fut=np.zeros((1, max_neighbours, PRED_LEN, 2)),
        nbr_mask=mask[None],
        lanes=poly[None],
        lane_mask=lmask[None],
        lane_width=width[None],
        speed=np.array([speed]),
        maneuver=np.zeros(1, np.int64),
        episode=np.zeros(1, np.int64),
        vehicle=np.zeros(1, np.int64),
        step=np.zeros(1, np.int64),
    )


def windows_from_log(
    log: EpisodeLog, road: Any, max_neighbours: int = 8, stride: int = 2, scenario: str = "highway"
) -> DrivingWindows:
    """All training windows of one logged episode (every vehicle, every ``stride`` steps, no crashed vehicle)."""
    offsets = HighwayConfig(scenario=scenario).lane_offsets
    s_total, v_total = log.pos.shape[:2]
    span = OBS_LEN + PRED_LEN
    rows: dict[str, list] = {n: [] for n in DrivingWindows._ARRAYS}
    for t0 in range(0, s_total - span + 1, stride):
        sl = slice(t0, t0 + span)
        now = t0 + OBS_LEN - 1
        for i in range(v_total):
            if log.crashed[sl, i].any():
                continue
            idx, mask = _neighbours(log.pos[t0 : now + 1], i, max_neighbours)
            tracks = log.pos[sl][:, np.maximum(idx, 0)].transpose(1, 0, 2)  # [M, span, 2]
            tracks = np.where(mask[:, None, None], tracks, 0.0)
            poly, lmask, width = _lane_polylines(road, log.pos[now, i], offsets)
            rows["obs"].append(log.pos[t0 : now + 1, i])
            rows["fut"].append(log.pos[now + 1 : t0 + span, i])
            rows["nbr_obs"].append(tracks[:, :OBS_LEN])
            rows["nbr_fut"].append(tracks[:, OBS_LEN:])
            rows["nbr_mask"].append(mask)
            rows["lanes"].append(poly)
            rows["lane_mask"].append(lmask)
            rows["lane_width"].append(width)
            rows["speed"].append(log.speed[now, i])
            if scenario == "highway":
                rows["maneuver"].append(int(log.lane[t0 + span - 1, i]) - int(log.lane[now, i]))
            else:
                turn = (log.heading[t0 + span - 1, i] - log.heading[now, i] + np.pi) % (2 * np.pi) - np.pi
                rows["maneuver"].append(int(np.sign(turn)) if abs(turn) > TURN_THRESHOLD else 0)
            rows["episode"].append(log.seed)
            rows["vehicle"].append(i)
            rows["step"].append(t0)
    shapes = {
        "obs": (OBS_LEN, 2), "fut": (PRED_LEN, 2), "nbr_obs": (max_neighbours, OBS_LEN, 2),
        "nbr_fut": (max_neighbours, PRED_LEN, 2), "nbr_mask": (max_neighbours,),
        "lanes": (LANE_SLOTS, OBS_LEN, 2), "lane_mask": (LANE_SLOTS,), "lane_width": (LANE_SLOTS,),
    }  # fmt: skip
    out = {}
    for n, vals in rows.items():
        if vals:
            out[n] = np.asarray(np.stack(vals) if n in shapes else np.asarray(vals))
        else:
            out[n] = np.zeros((0, *shapes.get(n, ())))
    for n in ("obs", "fut", "nbr_obs", "nbr_fut", "lanes", "lane_width", "speed"):
        out[n] = out[n].astype(np.float32)
    for n in ("nbr_mask", "lane_mask"):
        out[n] = out[n].astype(bool)
    for n in ("maneuver", "episode", "vehicle", "step"):
        out[n] = out[n].astype(np.int64)
    return DrivingWindows(**out)


def collect_highway(
    num_episodes: int,
    seed: int = TRAIN_SEED,
    cfg: HighwayConfig = HighwayConfig(),
    cache_dir: str | os.PathLike | None = "runs/highway_cache",
    max_neighbours: int = 8,
    stride: int = 2,
    progress: bool = True,
) -> DrivingWindows:
    """Training windows from ``num_episodes`` seeded IDM/MOBIL episodes (seeds ``seed .. seed + n - 1``), cached.

    Args:
        num_episodes: Episodes.
        seed: First episode seed.
        cfg: Road and traffic.
        cache_dir: Folder of the ``.npz`` cache (one file per configuration and seed range); ``None``: no cache.
        max_neighbours: Neighbour slots.
        stride: Logged steps between window starts.
        progress: tqdm progress bar over episodes.

    Returns:
        :class:`DrivingWindows`; ``meta`` holds the configuration, the window counts and the lane-change share.

    """
    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise InputError("num_episodes", f"must be a whole number >= 1, got {num_episodes!r}")
    if stride < 1 or max_neighbours < 1:
        raise InputError("stride/max_neighbours", f"must be >= 1, got {stride}, {max_neighbours}")
    key = {"v": CACHE_VERSION, "cfg": asdict(cfg), "n": num_episodes, "seed": seed, "m": max_neighbours, "s": stride}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"highway_{digest}.npz" if cache_dir is not None else None
    if path is not None and path.exists():
        return DrivingWindows.load(path)
    from tqdm.auto import tqdm

    parts = []
    for s in tqdm(range(seed, seed + num_episodes), desc="highway-env episodes", disable=not progress):
        log = simulate_episode(s, cfg, "idm", stop_on_crash=False)
        env = _make_road(s, cfg)  # the (static) lane geometry of this episode
        try:
            parts.append(windows_from_log(log, env.unwrapped.road, max_neighbours, stride, cfg.scenario))
        finally:
            env.close()
    out = DrivingWindows.concat(parts)
    out.meta = {
        **key,
        "windows": len(out),
        "lane_change_share": float((out.maneuver != 0).mean()) if len(out) else 0.0,
        "maneuver_share": {str(int(m)): float((out.maneuver == m).mean()) for m in np.unique(out.maneuver)},
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        out.save(path)
    return out


class HighwayDataModule(WindowLoaders, pl.LightningDataModule):
    """Simulated highway windows as batches of the pedestrian format with lanes packed as extra neighbour slots.

    Args:
        train_episodes: Training episodes (seeds from :data:`TRAIN_SEED`).
        val_episodes: Validation episodes (seeds from :data:`VAL_SEED`).
        lanes: Lanes of the road.
        vehicles: Other vehicles.
        duration: Episode length (s).
        batch_size: Windows per batch.
        max_neighbours: Vehicle slots (lanes add ``LANE_SLOTS``).
        stride: Logged steps between window starts.
        cache_dir: Cache folder of the collected windows.
        num_workers: DataLoader workers.
        scenario: ``"highway"`` or ``"intersection"`` (:class:`HighwayConfig`).

    """

    test_split = "val"  # the simulated data has no held-out scene: test and predict read the validation episodes

    def __init__(
        self,
        train_episodes: int = 40,
        val_episodes: int = 4,
        lanes: int = 3,
        vehicles: int = 20,
        duration: float = 30.0,
        batch_size: int = 128,
        max_neighbours: int = 8,
        stride: int = 2,
        cache_dir: str = "runs/highway_cache",
        num_workers: int = 0,
        scenario: str = "highway",
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError("batch_size", f"must be >= 1, got {batch_size}")
        self.cfg = HighwayConfig(lanes=lanes, vehicles=vehicles, duration=duration, scenario=scenario)
        self.episodes = {"train": (train_episodes, TRAIN_SEED), "val": (val_episodes, VAL_SEED)}
        self.batch_size, self.max_neighbours, self.stride = batch_size, max_neighbours, stride
        self.cache_dir, self.num_workers = cache_dir, num_workers
        self._windows: dict[str, TrajectoryWindows] = {}

    def driving_windows(self, split: str) -> DrivingWindows:
        """The collected (cached) :class:`DrivingWindows` of ``train`` or ``val``."""
        if split not in self.episodes:
            raise InputError("split", f"must be 'train' or 'val', got {split!r}")
        n, seed = self.episodes[split]
        return collect_highway(n, seed, self.cfg, self.cache_dir, self.max_neighbours, self.stride)

    def windows(self, split: str) -> TrajectoryWindows:
        """Packed windows of ``split`` (``test``/``predict`` use the validation episodes)."""
        split = "val" if split in ("test", "predict") else split
        if split not in self._windows:
            self._windows[split] = self.driving_windows(split).to_windows()
        return self._windows[split]

    def setup(self, stage: str | None = None) -> None:
        """Collect (or load) the splits."""
        self.windows("train")
        self.windows("val")


# ------------------------------------------------------------------------------------------------ planner
class DrivingGoalFlowNet(GoalFlowNet):
    """:class:`~flowsci.domains.trajectories.model.GoalFlowNet` with a lane encoder.

    The last ``num_lanes`` neighbour slots are lane polylines: each is a token (MLP of its points and steps),
    attended by the agent token (a learned "no lane" key keeps it defined); the result is added to the social token
    of the velocity network and, with separate weights, of the goal scorer.

    Args:
        num_lanes: Lane slots at the end of ``nbr``.
        **kwargs: :class:`GoalFlowNet` arguments (``obs_len`` defaults to 4, ``pred_len`` to 8).

    """

    def __init__(
        self, num_lanes: int = LANE_SLOTS, obs_len: int = OBS_LEN, pred_len: int = PRED_LEN, **kwargs: Any
    ) -> None:
        super().__init__(obs_len=obs_len, pred_len=pred_len, **kwargs)
        if num_lanes < 1:
            raise InputError("num_lanes", f"must be >= 1, got {num_lanes}")
        if self.scorer_offset is not None:
            raise InputError("goal_offsets", "the driving planner's goal scorer has no offset head")
        self.num_lanes = num_lanes
        self.config["num_lanes"] = num_lanes
        feat = self.obs_len * 2 + (self.obs_len - 1) * 2
        heads = self.config["num_heads"]

        def lane_encoder(d: int) -> nn.ModuleDict:
            return nn.ModuleDict(
                {
                    "mlp": nn.Sequential(nn.Linear(feat, 2 * d), nn.SiLU(), nn.Linear(2 * d, d)),
                    "attn": nn.MultiheadAttention(d, heads, batch_first=True),
                    "norm": nn.LayerNorm(d),
                }
            )

        self.lane_enc = lane_encoder(self.d_model)
        self.scorer_lane_enc = lane_encoder(self.config["scorer_d_model"])
        self.no_lane = nn.Parameter(torch.zeros(1, 1, self.d_model))
        self.scorer_no_lane = nn.Parameter(torch.zeros(1, 1, self.config["scorer_d_model"]))

    def _split(self, nbr: Tensor, nbr_mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        k = self.num_lanes
        if nbr.shape[1] < k:
            raise InputError("nbr", f"needs >= {k} slots (lanes last), got {nbr.shape[1]}")
        return nbr[:, :-k], nbr_mask[:, :-k], nbr[:, -k:], nbr_mask[:, -k:]

    @staticmethod
    def _lane_token(enc: nn.ModuleDict, null: Tensor, agent: Tensor, lanes: Tensor, mask: Tensor) -> Tensor:
        feats = torch.cat([lanes.flatten(-2), torch.diff(lanes, dim=-2).flatten(-2)], dim=-1)
        tok = enc["mlp"](feats)  # [B, K, d]
        keys = torch.cat([null.expand(tok.shape[0], 1, -1), tok], dim=1)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1) < 0.5
        out, _ = enc["attn"](agent[:, None], keys, keys, key_padding_mask=pad, need_weights=False)
        return enc["norm"](out[:, 0])

    def encode(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor) -> Tensor:
        """Scene tokens ``[B, 2, d]``: agent, social + lanes."""
        veh, vmask, lanes, lmask = self._split(nbr, nbr_mask)
        tok = self.encoder(hist, veh, vmask)
        lane = self._lane_token(self.lane_enc, self.no_lane, tok[:, 0], lanes, lmask)
        return torch.stack([tok[:, 0], tok[:, 1] + lane], dim=1)

    def score_goals(self, hist: Tensor, nbr: Tensor, nbr_mask: Tensor, goals: Tensor) -> tuple[Tensor, Tensor]:
        """``(s_dis, s_dac)`` logits ``[B, G]``: distance score and drivable-area score of every goal."""
        veh, vmask, lanes, lmask = self._split(nbr, nbr_mask)
        tok = self.scorer_encoder(hist, veh, vmask)
        lane = self._lane_token(self.scorer_lane_enc, self.scorer_no_lane, tok[:, 0], lanes, lmask)
        scene = self.scorer_scene(torch.cat([tok[:, 0], tok[:, 1] + lane], dim=-1))
        g = self.scorer_goal(_goal_features(goals.to(scene.dtype), self.config["scorer_d_model"]))
        logits = self.scorer_head(scene[:, None] + g[None])
        return logits[..., 0], logits[..., 1]


def _goal_features(goals: Tensor, dim: int) -> Tensor:
    from flowsci.domains.trajectories.model import sinusoidal_2d

    return sinusoidal_2d(goals, dim)


def drivable_mask(points: Tensor, lanes: Tensor, lane_mask: Tensor, half_width: float = 2.0) -> Tensor:
    """Which points lie within ``half_width`` of a real lane centreline polyline.

    Args:
        points: ``[B, G, 2]`` or ``[G, 2]`` (shared by the batch), metres.
        lanes: ``[B, K, P, 2]`` polylines, metres (same frame as the points).
        lane_mask: ``[B, K]`` (1 = real lane).
        half_width: Half lane width (m).

    Returns:
        ``[B, G]`` bool.

    """
    if points.ndim == 2:
        points = points[None].expand(lanes.shape[0], -1, -1)
    a, b = lanes[:, :, :-1], lanes[:, :, 1:]  # [B, K, S, 2]
    ab = b - a
    p = points[:, :, None, None]  # [B, G, 1, 1, 2]
    t = (((p - a[:, None]) * ab[:, None]).sum(-1) / ab.pow(2).sum(-1).clamp_min(1e-9)[:, None]).clamp(0, 1)
    d = (p - a[:, None] - t[..., None] * ab[:, None]).norm(dim=-1).amin(-1)  # [B, G, K]
    d = torch.where(lane_mask[:, None] > 0.5, d, torch.full_like(d, float("inf")))
    return d.amin(-1) <= half_width


class DrivingGoalFlow(GoalFlow):
    """GoalFlow for highway planning: :class:`GoalFlow` with the drivable-area goal score (module docstring).

    Args:
        net: A :class:`DrivingGoalFlowNet`.
        lane_half_width: Half width (m) of the drivable band around each lane centreline (highway-env: 2).
        frame_mode: ``"lane"`` (x along the nearest lane, the default) or ``"heading"`` (the pedestrians' frame,
            x along the last second's displacement), see :meth:`frame`.
        min_scale: Floor (m) of the per-axis position scale (the lateral RMS of highway futures is ~0.3 m).
        **kwargs: :class:`GoalFlow` arguments; driving defaults ``obs_len=4``, ``pred_len=8``,
            ``neighbour_radius=60``, ``goal_temperature=4.0`` (m²), ``col_weight=1.0`` (:math:`w_2`, the DAC
            score's weight), ``col_loss_weight=1.0``.

    """

    def __init__(
        self,
        net: DrivingGoalFlowNet,
        lane_half_width: float = 2.0,
        obs_len: int = OBS_LEN,
        pred_len: int = PRED_LEN,
        neighbour_radius: float = NEIGHBOUR_RADIUS + 20.0,
        goal_temperature: float = 4.0,
        col_weight: float = 1.0,
        col_loss_weight: float = 1.0,
        frame_mode: str = "lane",
        min_scale: float = 2.0,
        **kwargs: Any,
    ) -> None:
        if not isinstance(net, DrivingGoalFlowNet):
            raise InputError("net", f"DrivingGoalFlow needs a DrivingGoalFlowNet, got {type(net).__name__}")
        if frame_mode not in ("lane", "heading"):
            raise InputError("frame_mode", f"must be 'lane' or 'heading', got {frame_mode!r}")
        super().__init__(
            net, obs_len=obs_len, pred_len=pred_len, neighbour_radius=neighbour_radius,
            goal_temperature=goal_temperature, col_weight=col_weight, col_loss_weight=col_loss_weight,
            min_scale=min_scale, **kwargs,
        )  # fmt: skip
        self.lane_half_width, self.frame_mode = lane_half_width, frame_mode

    def frame(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Lane-aligned frame (``frame_mode="lane"``): origin at the last observed position, x axis along the
        nearest lane's centreline (its points at 0 and 50 m ahead); the heading frame of :func:`agent_frame` where
        no lane is given, or with ``frame_mode="heading"``.
        """
        origin, rot = super().frame(batch)
        if self.frame_mode == "heading":
            return origin, rot
        k = self.net.num_lanes
        lanes, lmask = batch["nbr_obs"][:, -k:], batch["nbr_mask"][:, -k:]  # nearest lane first (sorted)
        d = lanes[:, 0, -2] - lanes[:, 0, -1]
        ok = (lmask[:, 0] > 0.5) & (d.norm(dim=-1) > 1e-3)
        u = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        lane_rot = torch.stack([u, torch.stack([-u[:, 1], u[:, 0]], dim=-1)], dim=-1)
        return origin, torch.where(ok[:, None, None], lane_rot.to(rot.dtype), rot)

    def goal_scorer_loss(self, cond: dict[str, Tensor], aux: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Distance-score cross entropy + drivable-area BCE (target: goal within a lane band)."""
        goals = self.goals.to(aux["end"].dtype)
        s_dis, s_dac = self.net.score_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], goals / self.pos_scale)
        d2 = (goals[None] - aux["end"][:, None]).pow(2).sum(-1)
        target = torch.softmax(-d2 / self.goal_temperature, dim=-1)
        ce = -(target * torch.log_softmax(s_dis, dim=-1)).sum(-1).mean()
        k = self.net.num_lanes
        lanes = cond["nbr"][:, -k:] * self.pos_scale  # agent-frame metres
        dac = drivable_mask(goals, lanes, cond["nbr_mask"][:, -k:], self.lane_half_width).to(s_dac.dtype)
        bce = F.binary_cross_entropy_with_logits(s_dac, dac)
        return ce + self.col_loss_weight * bce, {"goal_ce": ce.detach(), "goal_dac_bce": bce.detach()}


class FlowPlanner:
    """Closed-loop planner around a trained :class:`DrivingGoalFlow` (``goal_mode`` "goal" or "none").

    Args:
        model: The trained model.
        steps: Euler steps per plan.
        candidates: Trajectories generated (per goal); GoalFlow's trajectory scorer keeps one.
        shadow_threshold: GoalFlow's shadow-trajectory fallback (``None``: off).
        seed: Seed of the prior draws (advanced per plan).
        name: Label in the results.

    """

    def __init__(
        self,
        model: DrivingGoalFlow,
        steps: int = 2,
        candidates: int = 4,
        shadow_threshold: float | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> None:
        self.model, self.steps, self.candidates = model.eval(), steps, candidates
        self.shadow_threshold, self.seed = shadow_threshold, seed
        self.name = name or ("GoalFlow" if model.goal_mode == "goal" else "flow (no goal)")
        self._calls = 0

    def plan(self, window: DrivingWindows) -> np.ndarray:
        """``[PRED_LEN, 2]`` world positions."""
        self._calls += 1
        sol = self.model.predict_windows(
            window.to_windows(), num_samples=1, steps=self.steps, seed=self.seed + self._calls,
            candidates=self.candidates, shadow_threshold=self.shadow_threshold,
        )  # fmt: skip
        return sol.x[0, 0].numpy()


# ------------------------------------------------------------------------------------------------ scoring
def score_episode(log: EpisodeLog, reference_progress: float | None = None) -> dict[str, float]:
    """NC, DAC, TTC, comfort and EP of one episode (definitions in the module docstring).

    Args:
        log: The episode.
        reference_progress: The IDM baseline's progress on the same seed (m); ``None``: EP = 1.

    """
    s = log.start
    if len(log.pos) <= s:
        raise InputError("log", f"episode of {len(log.pos)} logged steps ends inside the warm-up ({s + 1})")
    ep = 1.0
    if reference_progress is not None:
        ep = float(np.clip(log.progress / max(reference_progress, 1e-6), 0.0, 1.0))
    return {
        "nc": 0.0 if bool(log.crashed[s:, 0].any()) else 1.0,
        "dac": 1.0 if bool(log.on_road[s:].all()) else 0.0,
        "ttc": 0.0 if bool(log.ttc_violation[s:].any()) else 1.0,
        "comfort": 1.0 if comfort_ok(log.pos[s:, 0], log.heading[s:, 0], DT) else 0.0,
        "ep": ep,
        "progress_m": log.progress,
        "duration_s": (len(log.pos) - 1 - s) * DT,
    }


def rollout(seed: int, planner: Any = "idm", cfg: HighwayConfig = HighwayConfig()) -> EpisodeLog:
    """One closed-loop episode of ``planner`` (see :func:`simulate_episode`)."""
    return simulate_episode(seed, cfg, planner, stop_on_crash=True)


def idm_progress(seeds: list[int], cfg: HighwayConfig = HighwayConfig(), progress: bool = True) -> dict[int, float]:
    """Progress (m, after the warm-up) of the simulator's IDM/MOBIL ego on each seeded episode: EP's reference."""
    from tqdm.auto import tqdm

    return {s: rollout(s, "idm", cfg).progress for s in tqdm(seeds, desc="IDM baseline", disable=not progress)}


def evaluate_planner(
    planner: Any,
    seeds: list[int],
    reference: dict[int, float],
    cfg: HighwayConfig = HighwayConfig(),
    progress: bool = True,
    desc: str = "closed loop",
) -> dict[str, float]:
    """Closed-loop scores of ``planner`` (``"idm"`` or an object with ``plan(window)``) over the seeded episodes.

    Args:
        planner: The ego policy.
        seeds: Episode seeds.
        reference: The IDM progress per seed (:func:`idm_progress`), EP's denominator.
        cfg: Road and traffic.
        progress: tqdm progress bar.
        desc: Label of the bar.

    Returns:
        ``episodes, PDMS, NC, DAC, TTC, C, EP, collision_rate, offroad_rate, progress_m, ms_per_plan`` (NC ... EP
        averaged over the episodes; PDMS by :func:`~flowsci.domains.trajectories.metrics.pdm_score`;
        ``ms_per_plan``: wall time of the planner's episodes, simulation included, per plan; NaN for IDM).

    """
    import time

    from tqdm.auto import tqdm

    missing = [s for s in seeds if s not in reference]
    if missing:
        raise InputError("reference", f"no IDM progress for seeds {missing[:5]}")
    sc, t0, calls = [], time.perf_counter(), 0
    for s in tqdm(seeds, desc=desc, disable=not progress):
        log = rollout(s, planner, cfg)
        sc.append(score_episode(log, reference[s]))
        calls += len(log.pos) - 1 - log.start if planner != "idm" else 0  # one plan per logged step after warm-up
    elapsed = time.perf_counter() - t0
    f = {k: np.array([d[k] for d in sc]) for k in sc[0]}
    return {
        "episodes": len(sc),
        "PDMS": pdm_score(f["nc"], f["dac"], f["ttc"], f["comfort"], f["ep"]),
        "NC": float(f["nc"].mean()),
        "DAC": float(f["dac"].mean()),
        "TTC": float(f["ttc"].mean()),
        "C": float(f["comfort"].mean()),
        "EP": float(f["ep"].mean()),
        "collision_rate": float(1.0 - f["nc"].mean()),
        "offroad_rate": float(1.0 - f["dac"].mean()),
        "progress_m": float(f["progress_m"].mean()),
        "ms_per_plan": 1000 * elapsed / calls if calls else float("nan"),
    }


def closed_loop(
    planners: dict[str, Any],
    num_episodes: int = 20,
    seed: int = EVAL_SEED,
    cfg: HighwayConfig = HighwayConfig(),
    progress: bool = True,
) -> Any:
    """Closed-loop evaluation over the seeded episodes ``seed .. seed + num_episodes - 1``.

    The IDM baseline is always run (its progress normalises EP) and reported as ``IDM``.

    Args:
        planners: ``{name: planner}`` (objects with ``plan(window)``; ``"idm"`` is allowed).
        num_episodes: Episodes.
        seed: First episode seed.
        cfg: Road and traffic.
        progress: tqdm progress bar.

    Returns:
        pandas DataFrame indexed by planner, the columns of :func:`evaluate_planner`.

    """
    import pandas as pd

    if isinstance(num_episodes, bool) or not isinstance(num_episodes, int) or num_episodes < 1:
        raise InputError("num_episodes", f"must be a whole number >= 1, got {num_episodes!r}")
    seeds = list(range(seed, seed + num_episodes))
    ref = idm_progress(seeds, cfg, progress)
    rows = {"IDM": evaluate_planner("idm", seeds, ref, cfg, progress, "IDM")}
    for name, planner in planners.items():
        if planner != "idm":
            rows[name] = evaluate_planner(planner, seeds, ref, cfg, progress, name)
    return pd.DataFrame.from_dict(rows, orient="index")


def main(argv: list[str] | None = None) -> Any:
    """``python -m flowsci.domains.trajectories.driving --goal G.ckpt --none N.ckpt --episodes 20``: the table."""
    import argparse

    parser = argparse.ArgumentParser(description="Closed-loop highway-env evaluation: GoalFlow vs no-goal flow vs IDM")
    parser.add_argument("--goal", help="DrivingGoalFlow checkpoint (goal_mode goal)")
    parser.add_argument("--none", help="DrivingGoalFlow checkpoint (goal_mode none)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=EVAL_SEED)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # the package's classes, not this file's copies when run as ``python -m`` (``__main__``)
    from flowsci.domains.trajectories import driving as mod

    planners: dict[str, Any] = {}
    for key, name in (("goal", "GoalFlow"), ("none", "flow (no goal)")):
        ckpt = getattr(args, key)
        if ckpt:
            model = mod.DrivingGoalFlow.from_checkpoint(ckpt)
            planners[name] = mod.FlowPlanner(model, steps=args.steps, candidates=args.candidates, name=name)
    table = mod.closed_loop(planners, args.episodes, args.seed)
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return table


if __name__ == "__main__":
    main()
