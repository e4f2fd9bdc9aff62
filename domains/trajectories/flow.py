r"""GoalFlow (Xing et al., CVPR 2025) for pedestrian trajectory prediction, and the constant-velocity baselines.

**State.** The future of one agent, ``pred_len`` positions in the agent frame (origin at the last observed
position, x axis along the heading of the last 0.8 s), divided per axis by the position scale :math:`s` (RMS of
the training futures, stored in the checkpoint): :math:`x_1 \in \mathbb R^{12 \times 2}`.

**Goal vocabulary.** k-means (scipy ``kmeans2``, k-means++, seeded) of the training endpoints in the agent frame:
:math:`\{g_i\}_{i=1}^{G}`, metres; stored as a buffer so a checkpoint samples without the data.

**Goal scorer** (trained jointly, its own encoder). Distance score: cross entropy against
:math:`\delta^{dis}_i = \mathrm{softmax}_i(-\|g_i - g_{gt}\|^2 / \tau)` (:math:`g_{gt}` = true endpoint,
:math:`\tau` = ``goal_temperature`` in m²). GoalFlow's drivable-area score needs a map, which ETH/UCY does not
have; it becomes a **clearance score**: :math:`\delta^{col}_i = 1` iff :math:`g_i` is farther than
``goal_clearance`` from every neighbour's true position at the horizon (BCE, weight ``col_loss_weight``), i.e.
"this goal will not be occupied by someone else". Inference score:
:math:`w_1 \log\mathrm{softmax}(s^{dis})_i + w_2 \log\sigma(s^{col}_i)`.

**Generator.** Rectified flow :math:`x_t = t x_1 + (1-t) x_0`, target :math:`x_1 - x_0`, narrow prior
:math:`x_0 \sim \mathcal N(0, \sigma^2 I)` (``prior_std``, paper 0.1), L1 loss (``loss="l1"``, the paper's) or L2;
conditioned on the scene and the goal :math:`(g/s, 1)` (the true endpoint in training). Condition dropout
(:class:`GoalDropout`, a :class:`flowsci.guidance.ConditionDropout`): per row, everything dropped with probability
``scene_dropout``, only the goal with ``goal_dropout`` (GoalFlow: 1/3 each), so the goal-free "shadow" and
classifier-free guidance over the goal both work. Sampling: Euler on GoalFlow's shifted grid
:math:`t_k = 1 - u(1 - k/n)`, :math:`u(s) = \alpha s / (1 + (\alpha - 1) s)` (``time_shift`` :math:`\alpha = 3`,
small steps near the noise end).

**Inference for best-of-K.** The K best vocabulary goals (``goal_selection="topk"``, or K draws from the score's
softmax without replacement, ``"sample"``, or greedy non-maximum suppression, ``"nms"``: the best goal farther than
``nms_radius`` from every goal already taken, see :func:`nms_goals`, or ``"coverage"``: the K goals that greedily
minimise the expected distance from a goal drawn from the score's softmax to the nearest chosen one, see
:func:`coverage_goals`), ``candidates`` trajectories per goal, the
training-free trajectory scorer :math:`f(\tau) = -\lambda_1 \Phi(\|\tau_T - g\|) + \lambda_2 \Phi(\|\tau_T\|)`
(min-max :math:`\Phi` over the candidates) keeps one per goal. **Shadow trajectory**: with ``shadow_threshold``
set, the goal-free mean trajectory replaces the goal's one where :math:`\|\text{shadow}_T - g\| / \|\text{shadow}_T\|`
exceeds the threshold (GoalFlow's guard against a wrong goal; meant for single-trajectory planning, it removes
diversity from best-of-K).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from flowsci.contract import GenerativeModule, check_sample_args
from flowsci.domains.trajectories.data import (
    SAMPLE_ROOT,
    TrajectoryWindows,
    make_windows,
    read_trajectories,
    write_trajectories,
)
from flowsci.domains.trajectories.model import GoalFlowNet
from flowsci.errors import InputError, NonFiniteError
from flowsci.guidance import ClassifierFreeGuidance, ConditionDropout
from flowsci.io import atomic_write
from flowsci.module import FlowMatching
from flowsci.solvers import Solution
from flowsci.timesteps import TimeSampler

__all__ = [
    "ConstantVelocity",
    "GoalDropout",
    "GoalFlow",
    "TrajectorySolution",
    "rectify_goalflow",
    "reflow_pairs",
    "reverse_windows",
    "scale_windows",
    "agent_frame",
    "coverage_goals",
    "nms_goals",
    "score_trajectories",
    "shifted_time_grid",
    "windows_from_arrays",
]

GOAL_MODES = ("goal", "none")
SELECTIONS = ("topk", "sample", "nms", "coverage")
SCENE_KEYS = ["hist", "nbr", "nbr_mask"]


# ----------------------------------------------------------------------------------------------- geometry
def agent_frame(obs: Tensor, min_disp: float = 0.1) -> tuple[Tensor, Tensor]:
    """Origin and rotation of the agent frame of each history.

    The heading is the direction of the displacement over the last two steps (0.8 s); if that is shorter than
    ``min_disp`` metres, the whole history's displacement; if that is also shorter, the world x axis.

    Args:
        obs: ``[B, L, 2]`` observed positions (metres).
        min_disp: Shortest displacement that defines a heading (metres).

    Returns:
        ``origin [B, 2]`` and ``rot [B, 2, 2]`` whose columns are the heading and its left normal, so that
        ``local = (p - origin) @ rot`` and ``world = local @ rot.T + origin``.

    """
    origin = obs[:, -1]
    d = obs[:, -1] - obs[:, -3] if obs.shape[1] >= 3 else obs[:, -1] - obs[:, 0]
    whole = obs[:, -1] - obs[:, 0]
    d = torch.where((d.norm(dim=-1, keepdim=True) < min_disp), whole, d)
    ok = d.norm(dim=-1, keepdim=True) >= min_disp
    d = torch.where(ok, d, torch.tensor([1.0, 0.0], dtype=obs.dtype, device=obs.device))
    u = d / d.norm(dim=-1, keepdim=True)
    rot = torch.stack([u, torch.stack([-u[:, 1], u[:, 0]], dim=-1)], dim=-1)  # columns: u, n
    return origin, rot


def to_local(p: Tensor, origin: Tensor, rot: Tensor) -> Tensor:
    """World points ``[B, ..., 2]`` to the agent frame."""
    shape = p.shape
    flat = p.reshape(shape[0], -1, 2) - origin[:, None]
    return torch.bmm(flat, rot).reshape(shape)


def to_world(q: Tensor, origin: Tensor, rot: Tensor) -> Tensor:
    """Agent-frame points ``[B, ..., 2]`` to world coordinates (the inverse of :func:`to_local`; ``rot`` may be a
    scaled rotation, see :meth:`GoalFlow.frame`).
    """
    shape = q.shape
    flat = torch.bmm(q.reshape(shape[0], -1, 2), torch.linalg.inv(rot)) + origin[:, None]
    return flat.reshape(shape)


def shifted_time_grid(steps: int, alpha: float = 3.0) -> Tensor:
    """GoalFlow's sampling grid ``[steps + 1]`` from 0 to 1: :math:`t_k = 1 - u(1 - k/n)`,
    :math:`u(s) = \\alpha s / (1 + (\\alpha - 1) s)`; ``alpha = 1`` is uniform, ``alpha > 1`` refines near t = 0.
    """
    s = 1.0 - torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    t = 1.0 - alpha * s / (1.0 + (alpha - 1.0) * s)
    t[0], t[-1] = 0.0, 1.0
    return t


def nms_goals(score: Tensor, goals: Tensor, k: int, radius: float) -> Tensor:
    """Greedy non-maximum suppression over the goal vocabulary: ``k`` goal indices per agent, each the best-scored
    goal farther than ``radius`` from all goals taken before (when none is left, the best goal not yet taken; when
    all are taken, the order repeats).

    Args:
        score: ``[A, G]`` goal scores (higher is better).
        goals: ``[G, 2]`` vocabulary (metres, agent frame).
        k: Goals per agent.
        radius: Suppression radius (metres); 0 gives the top-k order.

    Returns:
        ``[A, K]`` long indices into the vocabulary.

    """
    a, g = score.shape
    d = torch.cdist(goals[None].to(score.dtype), goals[None].to(score.dtype))[0]  # [G, G]
    rows = torch.arange(a, device=score.device)
    free = torch.ones(a, g, dtype=torch.bool, device=score.device)  # not suppressed
    taken = torch.zeros(a, g, dtype=torch.bool, device=score.device)
    out = []
    neg = torch.finfo(score.dtype).min
    for _ in range(k):
        if bool(taken.all()):
            taken.zero_()
        best = score.masked_fill(~free | taken, neg).argmax(-1)
        fallback = score.masked_fill(taken, neg).argmax(-1)
        idx = torch.where((free & ~taken).any(-1), best, fallback)
        out.append(idx)
        taken[rows, idx] = True
        free &= d[idx] > radius
    return torch.stack(out, dim=-1)


def coverage_goals(score: Tensor, goals: Tensor, k: int, temperature: float = 1.0) -> Tensor:
    """Best-of-K goal choice for minFDE: greedily pick the ``k`` vocabulary points that minimise the expected
    distance from a goal drawn from :math:`p = \\mathrm{softmax}(\\text{score}/T)` to the nearest picked point,
    :math:`\\mathbb E_{g\\sim p}\\min_j\\|g - g_{c_j}\\|` (greedy facility location; the first pick is the
    distribution's medoid, each next one the point that lowers the expectation most). When ``k`` exceeds the
    vocabulary the order repeats.

    Args:
        score: ``[A, G]`` goal scores (log-probabilities up to a constant; higher is better).
        goals: ``[G, 2]`` vocabulary (metres, agent frame).
        k: Goals per agent.
        temperature: :math:`T` (> 0); larger spreads the picks over less likely goals.

    Returns:
        ``[A, K]`` long indices into the vocabulary. Memory ``A x G x G``.

    """
    if not temperature > 0:
        raise InputError("temperature", f"must be > 0, got {temperature}")
    a, g = score.shape
    p = torch.softmax(score / temperature, dim=-1)  # [A, G]
    d = torch.cdist(goals[None].to(score.dtype), goals[None].to(score.dtype))[0]  # [G, G]
    nearest = torch.full((a, g), float("inf"), dtype=score.dtype, device=score.device)  # distance to the picks
    taken = torch.zeros(a, g, dtype=torch.bool, device=score.device)
    rows = torch.arange(a, device=score.device)
    out = []
    for _ in range(min(k, g)):
        cost = (p[:, :, None] * torch.minimum(nearest[:, :, None], d[None])).sum(1)  # [A, candidate]
        idx = cost.masked_fill(taken, float("inf")).argmin(-1)
        out.append(idx)
        taken[rows, idx] = True
        nearest = torch.minimum(nearest, d[idx])
    order = torch.stack(out, dim=-1)
    return order[:, torch.arange(k, device=score.device) % order.shape[1]]


def score_trajectories(ends: Tensor, goal: Tensor, lam_goal: float = 1.0, lam_progress: float = 0.0) -> Tensor:
    """GoalFlow's training-free trajectory scorer over candidates.

    :math:`f(\\tau_c) = -\\lambda_1 \\Phi(\\|\\tau_{c,T} - g\\|) + \\lambda_2 \\Phi(\\|\\tau_{c,T}\\|)`,
    :math:`\\Phi` = min-max
    normalisation over the candidates (a constant column scores 0).

    Args:
        ends: ``[..., C, 2]`` candidate endpoints (agent frame, so ``||end||`` is progress).
        goal: ``[..., 2]`` the goal of each candidate group.
        lam_goal: Weight of closeness to the goal.
        lam_progress: Weight of progress.

    Returns:
        ``[..., C]`` scores (higher is better).

    """

    def minmax(v: Tensor) -> Tensor:
        lo, hi = v.min(-1, keepdim=True).values, v.max(-1, keepdim=True).values
        return (v - lo) / (hi - lo).clamp_min(1e-9)

    dist = (ends - goal[..., None, :]).norm(dim=-1)
    return -lam_goal * minmax(dist) + lam_progress * minmax(ends.norm(dim=-1))


# --------------------------------------------------------------------------------------------- conditioning
class GoalDropout(ConditionDropout):
    """GoalFlow's condition dropout: per row, drop everything w.p. ``p_scene``, only the goal w.p. ``p``.

    :meth:`blank` (the unconditional input of :class:`~flowsci.guidance.ClassifierFreeGuidance`, and the shadow
    trajectory's input) nulls only the goal. Null values are zeros (the goal's flag becomes 0).

    Args:
        p: Probability of dropping only the goal (GoalFlow: 1/3).
        p_scene: Probability of dropping the goal and the scene (GoalFlow: 1/3).

    """

    def __init__(self, p: float = 1 / 3, p_scene: float = 1 / 3) -> None:
        if p + p_scene > 1.0 or p_scene < 0:
            raise ValueError(f"GoalDropout needs p, p_scene >= 0 with p + p_scene <= 1, got {p}, {p_scene}")
        super().__init__(p=p, keys=["goal"])
        self.p_scene = p_scene
        self.scene = ConditionDropout(p=1.0, keys=["goal", *SCENE_KEYS])

    def __call__(self, cond: dict[str, Any], generator: torch.Generator | None = None) -> dict[str, Any]:
        """Drop per row: all (``u < p_scene``), the goal (``p_scene <= u < p_scene + p``), nothing otherwise."""
        ref = cond.get("goal")
        if not isinstance(ref, Tensor) or (self.p == 0 and self.p_scene == 0):
            return cond
        u = torch.rand(ref.shape[0], generator=generator, device=ref.device)
        out = self.scene.blank(cond, u < self.p_scene)
        return self.blank(out, (u >= self.p_scene) & (u < self.p_scene + self.p))

    def __repr__(self) -> str:
        return f"GoalDropout(p={self.p}, p_scene={self.p_scene})"


# ----------------------------------------------------------------------------------------------- solutions
@dataclass
class TrajectorySolution(Solution):
    """Predicted trajectories: ``x`` is ``[A, K, pred_len, 2]`` world coordinates (metres), K per agent.

    Attributes:
        windows: The agent windows they were predicted for (histories, ground truth, neighbours, ids).
        goals: ``[A, K, 2]`` world goals each trajectory was conditioned on (``None`` without goals).
        method: Name of the predictor.
    """

    windows: TrajectoryWindows | None = None
    goals: Tensor | None = None
    method: str = ""


def windows_from_arrays(history: Any, neighbours: Any = None, pred_len: int = 12) -> tuple[TrajectoryWindows, bool]:
    """Build windows (zero futures) from user arrays, as :meth:`GoalFlow.predict` takes them.

    Args:
        history: ``[L, 2]`` (one agent) or ``[A, L, 2]`` observed positions, metres.
        neighbours: ``None``; ``[M, L, 2]`` (one agent); ``[A, M, L, 2]``; or a list of ``A`` arrays ``[M_a, L, 2]``.
            Rows that are entirely NaN are treated as absent neighbours.
        pred_len: Predicted steps (the futures are zero placeholders).

    Returns:
        The windows and whether the input was a single agent.

    Raises:
        InputError: wrong shapes, NaN/Inf in a history.

    """
    h = np.asarray(history, dtype=np.float32)
    single = h.ndim == 2
    if single:
        h = h[None]
    if h.ndim != 3 or h.shape[-1] != 2 or h.shape[1] < 2 or h.shape[0] < 1:
        raise InputError("history", f"must be [L, 2] or [A, L, 2] with L >= 2, got shape {np.shape(history)}")
    if not np.isfinite(h).all():
        raise InputError("history", "holds NaN or Inf")
    a, obs_len = h.shape[:2]
    if neighbours is None:
        groups = [np.zeros((0, obs_len, 2), np.float32)] * a
    elif isinstance(neighbours, (list, tuple)) and not single:
        groups = [np.asarray(n, dtype=np.float32).reshape(-1, obs_len, 2) for n in neighbours]
    else:
        n = np.asarray(neighbours, dtype=np.float32)
        if single:
            n = n[None]
        if n.ndim != 4 or n.shape[2:] != (obs_len, 2):
            raise InputError("neighbours", f"must be [M, {obs_len}, 2] per agent, got shape {np.shape(neighbours)}")
        groups = list(n)
    if len(groups) != a:
        raise InputError("neighbours", f"need one neighbour array per agent ({a}), got {len(groups)}")
    m = max([len(g) for g in groups] + [1])
    nbr = np.zeros((a, m, obs_len, 2), np.float32)
    mask = np.zeros((a, m), bool)
    for i, g in enumerate(groups):
        real = np.isfinite(g).all(axis=(1, 2))
        g = g[real]
        nbr[i, : len(g)] = g
        mask[i, : len(g)] = True
    w = TrajectoryWindows(
        obs=h,
        fut=np.zeros((a, pred_len, 2), np.float32),
        nbr_obs=nbr,
        nbr_fut=np.zeros((a, m, pred_len, 2), np.float32),
        nbr_mask=mask,
        frame=np.zeros(a, np.int64),
        ped=np.arange(a, dtype=np.int64),
        scene=np.asarray(["input"] * a, dtype=object),
    )
    return w, single


def scene_windows(scene: str | None, max_agents: int, obs_len: int, pred_len: int) -> TrajectoryWindows:
    """``max_agents`` evenly spaced windows of a ``frame ped x y`` file (default: the shipped synthetic scene)."""
    path = Path(scene) if scene is not None else SAMPLE_ROOT / "synth_a.txt"
    if isinstance(max_agents, bool) or not isinstance(max_agents, int) or max_agents < 1:
        raise InputError("max_agents", f"must be a whole number >= 1, got {max_agents!r}")
    w = make_windows(read_trajectories(path), obs_len, pred_len, None, 16, scene=path.stem)
    if len(w) == 0:
        raise InputError(path, f"has no pedestrian present in {obs_len + pred_len} consecutive frames")
    return w.strided(max_agents)


def write_predictions(solution: TrajectorySolution, out_dir: str | os.PathLike) -> list[Path]:
    """Write predictions as ``frame ped x y`` text (one file per sample index), an ``.npz`` and ``scene.png``.

    ``predictions/sample_XX.txt`` holds, for every agent, its ``pred_len`` predicted positions of sample ``XX``
    at the future frame ids; ``predictions.npz`` holds ``pred [A, K, T, 2]``, ``obs``, ``fut``, ``frame``,
    ``ped``, ``scene``, ``goals``, ``nfe`` and ``seed``.
    """
    from flowsci.domains.trajectories.metrics import plot_scene

    out = Path(out_dir)
    pred = solution.x.detach().cpu().numpy().astype(np.float64)
    w = solution.windows
    if w is None:
        raise InputError("solution", "has no windows to write predictions for")
    a, k, t, _ = pred.shape
    obs_len = w.obs.shape[1]
    written = []
    for j in range(k):
        frames = w.frame[:, None] + w.frame_step * np.arange(obs_len, obs_len + t)[None]
        rows = np.concatenate(
            [frames.reshape(-1, 1), np.repeat(w.ped, t)[:, None], pred[:, j].reshape(-1, 2)], axis=1
        ).astype(np.float64)
        written.append(write_trajectories(out / "predictions" / f"sample_{j:02d}.txt", rows))
    goals = solution.goals.detach().cpu().numpy() if solution.goals is not None else np.zeros((a, k, 2))

    def save(tmp: str) -> None:
        np.savez(
            tmp,
            pred=pred,
            obs=w.obs,
            fut=w.fut,
            frame=w.frame,
            ped=w.ped,
            scene=np.asarray(w.scene, dtype=str),
            goals=goals,
            nfe=solution.nfe,
            seed=-1 if solution.seed is None else solution.seed,
        )

    written.append(atomic_write(out / "predictions.npz", save))
    title = f"{solution.method}: {k} samples per agent, NFE {solution.nfe}, seed {solution.seed}"
    written.append(plot_scene(solution, None, out / "scene.png", title=title))
    return written


def mirror_rows(
    x1: Tensor, cond: dict[str, Tensor], aux: dict[str, Tensor], generator: torch.Generator | None = None
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """Mirror a random half of a prepared batch across the agent frame's x axis (y -> -y): training-time flip
    augmentation. ``x1 [B, T, 2]``, ``cond`` (``hist [B, L, 2]``, ``nbr [B, M, L, 2]``, ``goal [B, 3]``) and
    ``aux`` (``end [B, 2]``, ``nbr_end [B, M, 2]``) as returned by :meth:`GoalFlow.prepare`; other keys pass.
    """
    b = x1.shape[0]
    flip = torch.rand(b, generator=generator, device=x1.device) < 0.5
    sign = torch.ones(b, 2, dtype=x1.dtype, device=x1.device)
    sign[:, 1] = torch.where(flip, -1.0, 1.0).to(x1.dtype)
    cond, aux = dict(cond), dict(aux)
    for key in ("hist", "nbr", "goal"):
        if key in cond:
            v = cond[key]
            per = sign.reshape(b, *([1] * (v.ndim - 2)), 2)
            if key == "goal":  # (g_x, g_y, flag)
                per = torch.cat([sign, torch.ones_like(sign[:, :1])], dim=-1)
            cond[key] = v * per
    for key in ("end", "nbr_end"):
        if key in aux:
            aux[key] = aux[key] * sign.reshape(b, *([1] * (aux[key].ndim - 2)), 2)
    return x1 * sign[:, None], cond, aux


def scale_windows(batch: dict[str, Tensor], factor: Tensor) -> dict[str, Tensor]:
    """Scale each world-frame window about its agent's last observed position: training-time speed / scale
    augmentation (a walker ``factor`` times faster on the same scene geometry, scaled).

    Args:
        batch: ``obs [B, L, 2]``, ``fut [B, T, 2]``, ``nbr_obs [B, M, L, 2]``, ``nbr_fut [B, M, T, 2]`` (metres);
            other keys (``nbr_mask``) pass unchanged, absent position keys are skipped.
        factor: ``[B]`` scale factors (> 0).

    Returns:
        A new batch dict: every position ``p`` becomes ``o + factor * (p - o)``, ``o = obs[:, -1]``.

    """
    out = dict(batch)
    origin = batch["obs"][:, -1]
    for key in ("obs", "fut", "nbr_obs", "nbr_fut"):
        if key in batch:
            v = batch[key]
            o = origin.reshape(origin.shape[0], *([1] * (v.ndim - 2)), 2)
            f = factor.to(v.dtype).reshape(-1, *([1] * (v.ndim - 1)))
            out[key] = o + f * (v - o)
    return out


def reverse_windows(batch: dict[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """Play the selected windows backwards in time: training-time time-reversal augmentation.

    The ``L + T`` frames of a window (agent and neighbours, all present in every frame by the window rule) are
    reversed and cut again into ``L`` observed and ``T`` future steps.

    Args:
        batch: ``obs [B, L, 2]``, ``fut [B, T, 2]``, ``nbr_obs [B, M, L, 2]``, ``nbr_fut [B, M, T, 2]``; other keys
            pass unchanged.
        rows: ``[B]`` bool, the windows to reverse.

    Returns:
        A new batch dict with the selected rows reversed.

    """
    out = dict(batch)
    pairs = [("obs", "fut", 1)]
    if "nbr_obs" in batch and "nbr_fut" in batch:
        pairs.append(("nbr_obs", "nbr_fut", 2))
    for ko, kf, dim in pairs:
        obs, fut = batch[ko], batch[kf]
        full = torch.cat([obs, fut], dim=dim)
        rev = full.flip(dim)
        sel = rows.reshape(-1, *([1] * (full.ndim - 1)))
        full = torch.where(sel, rev, full)
        out[ko], out[kf] = full.split([obs.shape[dim], fut.shape[dim]], dim=dim)
    return out


# ------------------------------------------------------------------------------------------------ GoalFlow
class GoalFlow(FlowMatching):
    """Goal-driven rectified flow for multimodal trajectory prediction (see the module docstring).

    Args:
        net: The :class:`~flowsci.domains.trajectories.model.GoalFlowNet`.
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.
        time_sampler: Training-time sampler (default uniform).
        sample_steps: Default Euler steps (GoalFlow: 1-5).
        sample_solver: Default solver.
        goal_mode: ``"goal"`` (GoalFlow) or ``"none"`` (plain conditional flow matching, no vocabulary, no scorer).
        prior_std: :math:`\\sigma` of the prior in normalised units (GoalFlow 0.1; scores collapsed at >= 0.2).
        loss: ``"l1"`` (GoalFlow) or ``"l2"`` velocity loss.
        num_goals: Vocabulary size ``G``.
        goal_temperature: :math:`\\tau` of the distance-score target, m².
        goal_clearance: Radius (m) of the clearance-score target.
        dis_weight: :math:`w_1` of the inference score.
        col_weight: :math:`w_2` of the inference score.
        goal_loss_weight: Weight of the goal-scorer loss next to the flow loss.
        col_loss_weight: Weight of the clearance BCE inside the goal-scorer loss.
        goal_dropout: Probability of dropping only the goal in training.
        scene_dropout: Probability of dropping goal and scene.
        neighbour_radius: Neighbours farther than this (m) at the last observed frame are ignored.
        time_shift: :math:`\\alpha` of the sampling grid (1 = uniform).
        obs_len: Observed steps.
        pred_len: Predicted steps.
        kmeans_seed: Seed of the vocabulary's k-means.
        min_scale: Floor (m) of the per-axis position scale (an axis along which the futures barely move, e.g.
            lateral on a highway, would otherwise be blown up).
        goal_selection: Default best-of-K goal rule of :meth:`predict_windows`: ``"topk"`` (GoalFlow's), ``"nms"``
            (greedy non-maximum suppression, :func:`nms_goals`), ``"coverage"`` (the goals that minimise the expected
            distance to the nearest one under the score's distribution, :func:`coverage_goals`) or ``"sample"``.
        nms_radius: Default suppression radius (m) of ``goal_selection="nms"``.
        offset_loss_weight: Weight of the goal-offset regression (smooth L1, normalised units, on the vocabulary
            point nearest the true endpoint; used when the net has an offset head, ``goal_offsets=True``).
        augment_flip: Mirror each training window across the agent's heading axis with probability 1/2 (the
            vocabulary is then clustered from the endpoints and their mirror images).
        coverage_temperature: :math:`T` of ``goal_selection="coverage"`` (:func:`coverage_goals`).
        speed_ref: Speed normalisation of the agent frame (metres per observed step; None = off): positions of
            an agent faster than this are divided by ``speed / speed_ref`` (see :meth:`frame`), so the scene, the
            vocabulary and the goals of fast walkers look like those of walkers at ``speed_ref``.
        augment_scale: ``(lo, hi)``: scale each training window about its agent's last observed position by a
            factor drawn log-uniformly from ``[lo, hi]`` (:func:`scale_windows`; speeds and distances alike), and
            cluster the vocabulary from endpoints augmented the same way; ``None`` = off.
        augment_reverse: Play each training window backwards with probability 1/2 (:func:`reverse_windows`; the
            vocabulary is clustered from endpoints augmented the same way).

    """

    def __init__(
        self,
        net: GoalFlowNet,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        time_sampler: TimeSampler | None = None,
        sample_steps: int = 1,
        sample_solver: str = "euler",
        goal_mode: str = "goal",
        prior_std: float = 0.1,
        loss: str = "l1",
        num_goals: int = 64,
        goal_temperature: float = 1.0,
        goal_clearance: float = 0.3,
        dis_weight: float = 1.0,
        col_weight: float = 0.1,
        goal_loss_weight: float = 1.0,
        col_loss_weight: float = 0.1,
        goal_dropout: float = 1 / 3,
        scene_dropout: float = 1 / 3,
        neighbour_radius: float = 5.0,
        time_shift: float = 3.0,
        obs_len: int = 8,
        pred_len: int = 12,
        kmeans_seed: int = 0,
        min_scale: float = 0.1,
        goal_selection: str = "topk",
        nms_radius: float = 2.0,
        offset_loss_weight: float = 1.0,
        augment_flip: bool = False,
        coverage_temperature: float = 1.0,
        speed_ref: float | None = None,
        augment_scale: tuple[float, float] | None = None,
        augment_reverse: bool = False,
    ) -> None:
        if goal_mode not in GOAL_MODES:
            raise ValueError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
        if loss not in ("l1", "l2"):
            raise ValueError(f"loss must be 'l1' or 'l2', got {loss!r}")
        if prior_std <= 0:
            raise ValueError(f"prior_std must be > 0, got {prior_std}")
        if num_goals < 1:
            raise ValueError(f"num_goals must be >= 1, got {num_goals}")
        if goal_selection not in SELECTIONS:
            raise ValueError(f"goal_selection must be one of {SELECTIONS}, got {goal_selection!r}")
        if not nms_radius >= 0:
            raise ValueError(f"nms_radius must be >= 0, got {nms_radius}")
        dropout = GoalDropout(goal_dropout if goal_mode == "goal" else 0.0, scene_dropout)
        super().__init__(
            net,
            time_sampler=time_sampler,
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            sample_steps=sample_steps,
            sample_solver=sample_solver,
            data_shape=[pred_len, 2],
            cond_dropout=dropout,
        )
        self.goal_mode, self.prior_std, self.loss_kind = goal_mode, prior_std, loss
        self.num_goals, self.goal_temperature, self.goal_clearance = num_goals, goal_temperature, goal_clearance
        self.dis_weight, self.col_weight = dis_weight, col_weight
        self.goal_loss_weight, self.col_loss_weight = goal_loss_weight, col_loss_weight
        self.neighbour_radius, self.time_shift = neighbour_radius, time_shift
        self.obs_len, self.pred_len, self.kmeans_seed = obs_len, pred_len, kmeans_seed
        if min_scale <= 0:
            raise ValueError(f"min_scale must be > 0, got {min_scale}")
        self.min_scale = min_scale
        self.goal_selection, self.nms_radius = goal_selection, nms_radius
        self.offset_loss_weight, self.augment_flip = offset_loss_weight, augment_flip
        if not coverage_temperature > 0:
            raise ValueError(f"coverage_temperature must be > 0, got {coverage_temperature}")
        self.coverage_temperature = coverage_temperature
        if speed_ref is not None and not speed_ref > 0:
            raise ValueError(f"speed_ref must be > 0 or None, got {speed_ref}")
        self.speed_ref = speed_ref
        if augment_scale is not None:
            lo, hi = (float(v) for v in augment_scale)
            if not 0 < lo <= hi:
                raise ValueError(f"augment_scale must be (lo, hi) with 0 < lo <= hi, got {augment_scale}")
            augment_scale = (lo, hi)
        self.augment_scale, self.augment_reverse = augment_scale, augment_reverse
        # data statistics that travel in the checkpoint (float buffers: the EMA callback averages buffers too)
        self.register_buffer("goals", torch.zeros(num_goals, 2))
        self.register_buffer("pos_scale", torch.ones(2))
        self.register_buffer("fitted", torch.zeros(()))

    # ------------------------------------------------------------------------------ statistics
    def fit_statistics(self, windows: TrajectoryWindows) -> None:
        """Set the position scale (per-axis RMS of agent-frame futures) and the goal vocabulary (k-means of the
        agent-frame endpoints, k-means++ seeded by ``kmeans_seed``) from training windows. With ``augment_scale`` /
        ``augment_reverse`` the vocabulary clusters the endpoints of the windows augmented once (draws seeded by
        ``kmeans_seed``); the position scale stays that of the windows as given.
        """
        from scipy.cluster.vq import kmeans2

        scene = {
            "obs": torch.as_tensor(windows.obs, dtype=torch.float64),
            "fut": torch.as_tensor(windows.fut, dtype=torch.float64),
            "nbr_obs": torch.as_tensor(windows.nbr_obs, dtype=torch.float64),
            "nbr_fut": torch.as_tensor(windows.nbr_fut, dtype=torch.float64),
            "nbr_mask": torch.as_tensor(windows.nbr_mask, dtype=torch.float64),
        }
        origin, rot = self.frame(scene)
        local = to_local(scene["fut"], origin, rot)
        scale = local.pow(2).mean(dim=(0, 1)).sqrt().clamp_min(self.min_scale)
        ends = local[:, -1].numpy()
        if self.augment_scale is not None or self.augment_reverse:  # the vocabulary of the augmented windows
            aug = self.augment_windows(scene, torch.Generator().manual_seed(self.kmeans_seed))
            origin, rot = self.frame(aug)
            ends = to_local(aug["fut"][:, -1:], origin, rot)[:, 0].numpy()
        if self.augment_flip:
            ends = np.concatenate([ends, ends * np.array([1.0, -1.0])])
        if len(ends) > 50_000:
            ends = ends[np.linspace(0, len(ends) - 1, 50_000).round().astype(int)]
        if len(ends) < self.num_goals:
            raise InputError(
                "num_goals", f"{self.num_goals} goals need at least as many training windows, got {len(ends)}"
            )
        centres, _ = kmeans2(ends, self.num_goals, minit="++", seed=np.random.default_rng(self.kmeans_seed))
        with torch.no_grad():
            self.pos_scale.copy_(scale.to(self.pos_scale))
            self.goals.copy_(torch.as_tensor(centres).to(self.goals))
            self.fitted.fill_(1.0)

    def setup(self, stage: str) -> None:
        """Fit the statistics from the data module's training windows once (every DDP rank gets the same)."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and float(self.fitted) < 0.5 and hasattr(dm, "windows"):
            self.fit_statistics(dm.windows("train"))

    def augment_windows(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The training augmentations that act on world-frame windows: time reversal of a random half
        (``augment_reverse``), then a log-uniform scale per window (``augment_scale``). Identity when both are off.
        """
        b, dev = batch["obs"].shape[0], batch["obs"].device
        if self.augment_reverse:
            batch = reverse_windows(batch, torch.rand(b, generator=generator, device=dev) < 0.5)
        if self.augment_scale is not None:
            lo, hi = math.log(self.augment_scale[0]), math.log(self.augment_scale[1])
            u = torch.rand(b, generator=generator, device=dev)
            batch = scale_windows(batch, torch.exp(lo + (hi - lo) * u))
        return batch

    # ------------------------------------------------------------------------------ batches
    def frame(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Origin ``[B, 2]`` and rotation ``[B, 2, 2]`` of the frame the model works in: :func:`agent_frame`
        of ``batch["obs"]`` (subclasses may use the scene too, e.g. the lane direction for driving). With
        ``speed_ref`` set, the rotation is divided by :math:`\\rho = \\max(v / v_{ref}, 1)`, ``v`` the agent's
        mean step length over its last two observed steps: agents faster than ``speed_ref`` are seen at the
        reference speed.
        """
        origin, rot = agent_frame(batch["obs"])
        if self.speed_ref is not None:
            obs = batch["obs"]
            k = min(3, obs.shape[1])  # the last two steps (fewer for a shorter history)
            v = (obs[:, -1] - obs[:, -k]).norm(dim=-1) / max(k - 1, 1)
            rot = rot / (v / self.speed_ref).clamp_min(1.0)[:, None, None]
        return origin, rot

    def prepare(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """World-frame window batch -> normalised ``x1 [B, T, 2]``, network conditioning and scorer targets.

        Returns:
            ``x1``, ``cond`` (``hist``, ``nbr``, ``nbr_mask``, ``goal``) and ``aux`` (agent-frame metres:
            ``end [B, 2]`` true endpoint, ``nbr_end [B, M, 2]`` neighbours' positions at the horizon,
            ``nbr_mask``).

        """
        obs, nbr_obs, mask = batch["obs"], batch["nbr_obs"], batch["nbr_mask"].to(batch["obs"].dtype)
        origin, rot = self.frame(batch)
        s = self.pos_scale.to(obs.dtype)
        hist = to_local(obs, origin, rot) / s
        nbr_local = to_local(nbr_obs, origin, rot)
        near = (nbr_local[..., -1, :].norm(dim=-1) <= self.neighbour_radius).to(mask.dtype)
        mask = mask * near
        nbr = nbr_local / s * mask[..., None, None]
        cond = {"hist": hist, "nbr": nbr, "nbr_mask": mask}
        aux: dict[str, Tensor] = {"nbr_mask": mask}
        b = obs.shape[0]
        if "fut" in batch:
            fut_local = to_local(batch["fut"], origin, rot)
            x1 = fut_local / s
            aux["end"] = fut_local[:, -1]
            if "nbr_fut" in batch:
                aux["nbr_end"] = to_local(batch["nbr_fut"][..., -1, :], origin, rot)
        else:
            x1 = torch.zeros(b, self.pred_len, 2, dtype=obs.dtype, device=obs.device)
        if self.goal_mode == "goal":
            cond["goal"] = torch.cat([x1[:, -1], torch.ones_like(x1[:, -1, :1])], dim=-1)
        else:
            cond["goal"] = torch.zeros(b, 3, dtype=obs.dtype, device=obs.device)
        cond["_origin"], cond["_rot"] = origin, rot
        return x1, cond, aux

    def unpack_batch(self, batch: Any) -> tuple[Tensor, dict[str, Any], Tensor | None]:
        """Window batches are normalised by :meth:`prepare`; ``{"x1", "x0", ...}`` pair batches pass through."""
        if isinstance(batch, dict) and "x1" in batch:
            return super().unpack_batch(batch)
        x1, cond, _ = self.prepare(batch)
        cond.pop("_origin"), cond.pop("_rot")
        return x1, cond, None

    def sample_prior(self, n: int, cond: dict[str, Any], generator: torch.Generator | None = None) -> Tensor:
        """The narrow prior :math:`\\mathcal N(0, \\sigma^2 I)`, ``[n, pred_len, 2]``."""
        return self.prior_std * torch.randn((n, self.pred_len, 2), generator=generator, device=self.device)

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """L1 (or L2) rectified-flow loss + the goal scorer's loss (distance CE + clearance BCE)."""
        pairs = isinstance(batch, dict) and "x1" in batch
        if pairs:
            x1, cond, _ = super().unpack_batch(batch)
            aux: dict[str, Tensor] = {}
        else:
            if self.goal_mode == "goal" and float(self.fitted) < 0.5:
                raise RuntimeError(
                    "GoalFlow has no goal vocabulary yet: train through a TrajectoryDataModule (fit sets it) or call "
                    "fit_statistics(windows) first"
                )
            x1, cond, aux = self.prepare(self.augment_windows(batch, generator) if self.training else batch)
            cond.pop("_origin"), cond.pop("_rot")
            if self.augment_flip:
                x1, cond, aux = mirror_rows(x1, cond, aux, generator)
        cond = dict(cond)
        x0 = cond.pop("x0", None)
        b = x1.shape[0]
        if x0 is None:
            x0 = self.sample_prior(b, cond, generator=generator).to(x1.dtype)
        t = self.time_sampler.sample(b, device=x1.device, generator=generator).to(x1.dtype)
        clean = dict(cond)
        if self.cond_dropout is not None and not pairs:
            cond = self.cond_dropout(cond, generator=generator)
        ps = self.path.sample(x0, x1, t)
        err = self.net(ps.x_t, t, **cond) - ps.dx_t
        flow = err.abs().mean() if self.loss_kind == "l1" else err.pow(2).mean()
        logs = {"flow_loss": flow.detach()}
        loss = flow
        if self.goal_mode == "goal" and "end" in aux:
            goal_loss, goal_logs = self.goal_scorer_loss(clean, aux)
            loss = loss + self.goal_loss_weight * goal_loss
            logs.update(goal_logs)
        logs["loss"] = loss.detach()
        return loss, logs

    def goal_scorer_loss(self, cond: dict[str, Tensor], aux: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross entropy against :math:`\\mathrm{softmax}(-\\|g_i - g_{gt}\\|^2/\\tau)` + weighted clearance BCE."""
        goals = self.goals.to(aux["end"].dtype)
        s_dis, s_col = self.net.score_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], goals / self.pos_scale)
        d2 = (goals[None] - aux["end"][:, None]).pow(2).sum(-1)  # [B, G]
        target = torch.softmax(-d2 / self.goal_temperature, dim=-1)
        ce = -(target * torch.log_softmax(s_dis, dim=-1)).sum(-1).mean()
        logs = {"goal_ce": ce.detach()}
        loss = ce
        if getattr(self.net, "scorer_offset", None) is not None:
            s = self.pos_scale.to(goals.dtype)
            refined = self.net.offset_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], goals / s)  # [B, G, 2]
            nearest = d2.argmin(-1)
            picked = refined[torch.arange(len(nearest), device=nearest.device), nearest]
            off = F.smooth_l1_loss(picked, aux["end"] / s, beta=0.1)
            loss = loss + self.offset_loss_weight * off
            logs["goal_offset"] = off.detach()
        if "nbr_end" in aux:
            dist = (goals[None, :, None] - aux["nbr_end"][:, None]).norm(dim=-1)  # [B, G, M]
            dist = torch.where(aux["nbr_mask"][:, None] > 0.5, dist, torch.full_like(dist, float("inf")))
            clear = (dist.min(-1).values > self.goal_clearance).to(s_col.dtype)
            bce = F.binary_cross_entropy_with_logits(s_col, clear)
            loss = loss + self.col_loss_weight * bce
            logs["goal_bce"] = bce.detach()
        return loss, logs

    # ------------------------------------------------------------------------------ inference
    def goal_scores(self, cond: dict[str, Tensor]) -> Tensor:
        """Combined score ``[B, G]``: :math:`w_1 \\log\\mathrm{softmax}(s^{dis}) + w_2 \\log\\sigma(s^{col})`."""
        s_dis, s_col = self.net.score_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], self.goals / self.pos_scale)
        return self.dis_weight * torch.log_softmax(s_dis, -1) + self.col_weight * F.logsigmoid(s_col)

    @torch.no_grad()
    def predict_windows(
        self,
        windows: TrajectoryWindows,
        num_samples: int = 20,
        steps: int | None = None,
        seed: int | None = None,
        solver: str | None = None,
        goal_selection: str | None = None,
        candidates: int = 1,
        cfg_scale: float = 1.0,
        shadow_threshold: float | None = None,
        oracle_goal: bool = False,
        batch_size: int = 4096,
        nms_radius: float | None = None,
    ) -> TrajectorySolution:
        """``num_samples`` futures for every window (see the module docstring for the inference rule).

        Args:
            windows: Agent windows (world coordinates).
            num_samples: K trajectories per agent.
            steps: Euler steps (default ``sample_steps``).
            seed: Seed of the prior draws (and of goal sampling).
            solver: Solver name (default ``sample_solver``).
            goal_selection: ``"topk"``, ``"sample"``, ``"nms"`` or ``"coverage"`` (default: the model's
                ``goal_selection``).
            candidates: Trajectories generated per goal; the trajectory scorer keeps one.
            cfg_scale: Classifier-free guidance weight over the goal (1 = none).
            shadow_threshold: Enable GoalFlow's shadow-trajectory fallback with this threshold.
            oracle_goal: Condition on the true endpoint instead of the scorer's goals (upper bound).
            batch_size: Agents per network batch.
            nms_radius: Suppression radius (m) of ``goal_selection="nms"`` (default: the model's ``nms_radius``).

        Returns:
            A :class:`TrajectorySolution` with ``x [A, K, pred_len, 2]`` in metres; ``nfe`` = network evaluations
            per trajectory (steps × (2 with CFG) × candidates, + steps × candidates for the shadow).

        """
        check_sample_args(num_samples, steps, solver)
        goal_selection = self.goal_selection if goal_selection is None else goal_selection
        nms_radius = self.nms_radius if nms_radius is None else nms_radius
        if goal_selection not in SELECTIONS:
            raise InputError("goal_selection", f"must be one of {SELECTIONS}, got {goal_selection!r}")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise InputError("candidates", f"must be a whole number >= 1, got {candidates!r}")
        if self.goal_mode == "goal" and float(self.fitted) < 0.5:
            raise RuntimeError("GoalFlow has no goal vocabulary: train it or load a trained checkpoint")
        preds, goals, nfe = [], [], 0
        for start in range(0, len(windows), batch_size):
            part = windows.subset(slice(start, start + batch_size))
            p, g, nfe = self._predict_batch(
                part.tensors(slice(None)), num_samples, steps, seed, solver, goal_selection, candidates, cfg_scale,
                shadow_threshold, oracle_goal, seed_offset=start, nms_radius=nms_radius,
            )  # fmt: skip
            preds.append(p)
            goals.append(g)
        x = torch.cat(preds).cpu()
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{type(self).__name__}: non-finite predictions (NFE {nfe}); nothing returned")
        n = int(steps if steps is not None else self.sample_steps)
        return TrajectorySolution(
            x=x,
            nfe=nfe,
            times=shifted_time_grid(n, self.time_shift),
            seed=seed,
            windows=windows,
            goals=torch.cat(goals).cpu() if goals[0] is not None else None,
            method="GoalFlow" if self.goal_mode == "goal" else "flow (no goal)",
        )

    def _predict_batch(
        self,
        batch: dict[str, Tensor],
        k: int,
        steps: int | None,
        seed: int | None,
        solver: str | None,
        goal_selection: str,
        candidates: int,
        cfg_scale: float,
        shadow_threshold: float | None,
        oracle_goal: bool,
        seed_offset: int = 0,
        nms_radius: float = 1.0,
    ) -> tuple[Tensor, Tensor | None, int]:
        batch = {key: v.to(self.device) for key, v in batch.items()}
        x1, cond, _ = self.prepare(batch)
        origin, rot = cond.pop("_origin"), cond.pop("_rot")
        a = x1.shape[0]
        s = self.pos_scale
        n = int(steps if steps is not None else self.sample_steps)
        gen_seed = None if seed is None else seed + seed_offset
        goal_local = None
        if self.goal_mode == "goal":
            if oracle_goal:
                goal_n = x1[:, None, -1].expand(a, k, 2)
            else:
                score = self.goal_scores(cond)  # [A, G]
                if goal_selection == "topk":
                    order = score.argsort(dim=-1, descending=True)
                    idx = order[:, torch.arange(k, device=score.device) % score.shape[1]]
                elif goal_selection == "nms":
                    idx = nms_goals(score, self.goals, k, nms_radius)
                elif goal_selection == "coverage":
                    idx = coverage_goals(score, self.goals, k, self.coverage_temperature)
                else:
                    g = torch.Generator(device=self.device)
                    g.manual_seed(0 if gen_seed is None else gen_seed + 7_919)
                    u = torch.rand(score.shape, generator=g, device=score.device).clamp_min(1e-12)
                    gumbel = score - torch.log(-torch.log(u))
                    order = gumbel.argsort(dim=-1, descending=True)
                    idx = order[:, torch.arange(k, device=score.device) % score.shape[1]]
                refined = self.net.offset_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], self.goals / s)
                goal_n = torch.gather(refined, 1, idx[..., None].expand(-1, -1, 2))  # [A, K, 2]
            goal_local = goal_n * s
            goal = torch.cat([goal_n, torch.ones_like(goal_n[..., :1])], dim=-1)
        else:
            goal = torch.zeros(a, k, 3, dtype=x1.dtype, device=x1.device)
        c = candidates
        scene = self.net.encode(cond["hist"], cond["nbr"], cond["nbr_mask"])  # once per agent, not per step/sample
        rep = {"scene": scene.repeat_interleave(k * c, dim=0)}
        rep["goal"] = goal.repeat_interleave(c, dim=1).reshape(a * k * c, 3)
        guidance = None
        if cfg_scale != 1.0 and self.goal_mode == "goal":
            guidance = ClassifierFreeGuidance(cfg_scale, self.cond_dropout)
        grid = shifted_time_grid(n, self.time_shift)
        sol = FlowMatching.sample(
            self, a * k * c, solver=solver, cond=rep, seed=gen_seed, time_grid=grid, guidance=guidance, progress=False
        )
        nfe = sol.nfe
        x = sol.x.reshape(a, k, c, self.pred_len, 2)
        if c > 1:
            ref = goal[..., :2] if self.goal_mode == "goal" else x[:, :, :, -1].mean(2)
            best = score_trajectories(x[:, :, :, -1], ref).argmax(-1)  # [A, K]
            x = torch.gather(x, 2, best[:, :, None, None, None].expand(-1, -1, 1, self.pred_len, 2))[:, :, 0]
        else:
            x = x[:, :, 0]
        if shadow_threshold is not None and self.goal_mode == "goal":
            blank = {"scene": scene, "goal": torch.zeros(a, 3, dtype=x.dtype, device=x.device)}
            rep_s = {key: v.repeat_interleave(c, dim=0) for key, v in blank.items()}
            sh = FlowMatching.sample(
                self, a * c, solver=solver, cond=rep_s, seed=None if gen_seed is None else gen_seed + 1,
                time_grid=grid, progress=False,
            )  # fmt: skip
            nfe += sh.nfe
            shadow = sh.x.reshape(a, c, self.pred_len, 2).mean(1)  # [A, T, 2]
            end = shadow[:, -1]
            ratio = (end[:, None] - goal[..., :2]).norm(dim=-1) / end.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            x = torch.where((ratio > shadow_threshold)[..., None, None], shadow[:, None], x)
        world = to_world((x * s).reshape(a, k * self.pred_len, 2), origin, rot).reshape(a, k, self.pred_len, 2)
        goals_world = None
        if goal_local is not None:
            goals_world = to_world(goal_local.reshape(a, k, 2), origin, rot)
        per_traj = n * (2 if guidance is not None and guidance.network_evals == 2 else 1) * c
        if shadow_threshold is not None and self.goal_mode == "goal":
            per_traj += n * c
        del nfe
        return world, goals_world, per_traj

    def predict(
        self,
        history: Any,
        neighbours: Any = None,
        num_samples: int = 20,
        steps: int | None = 1,
        seed: int | None = 0,
        **options: Any,
    ) -> np.ndarray:
        """Predict ``num_samples`` futures from histories in world coordinates (metres).

        Args:
            history: ``[L, 2]`` (one agent) or ``[A, L, 2]``.
            neighbours: ``None``, ``[M, L, 2]`` (one agent), ``[A, M, L, 2]`` or a list of ``[M_a, L, 2]``.
            num_samples: K futures per agent.
            steps: Euler steps (1-5 in GoalFlow).
            seed: Seed.
            **options: More keywords of :meth:`predict_windows` (``goal_selection``, ``candidates``, ...).

        Returns:
            ``[K, pred_len, 2]`` (one agent) or ``[A, K, pred_len, 2]`` float32 world coordinates.

        """
        w, single = windows_from_arrays(history, neighbours, self.pred_len)
        pred = self.predict_windows(w, num_samples, steps=steps, seed=seed, **options).x.numpy()
        return pred[0] if single else pred

    @torch.no_grad()
    def sample(
        self,
        num: int,
        steps: int | None = None,
        solver: str | None = None,
        cond: dict[str, Any] | None = None,
        seed: int | None = None,
        return_trajectory: bool = False,
        progress: bool | None = None,
        time_grid: Tensor | None = None,
        guidance: Any = None,
        scene: str | None = None,
        max_agents: int = 6,
        goal_selection: str | None = None,
        candidates: int = 1,
        cfg_scale: float = 1.0,
        shadow_threshold: float | None = None,
    ) -> Solution:
        """``flowsci sample``: ``num`` futures for each of ``max_agents`` agents of a scene file.

        With ``cond`` (normalised network conditioning, as :mod:`flowsci.reflow` passes it) this is the core's
        :meth:`FlowMatching.sample` in normalised agent-frame units instead.

        Args:
            num: K futures per agent.
            steps: Euler steps (default ``sample_steps``).
            solver: Solver.
            cond: Raw conditioning (reflow/distillation only).
            seed: Seed.
            return_trajectory: (``cond`` mode) keep the states of every step.
            progress: (``cond`` mode) progress bar.
            time_grid: (``cond`` mode) custom grid.
            guidance: (``cond`` mode) guidance object.
            scene: A ``frame ped x y`` file (default: the shipped synthetic scene ``synth_a``).
            max_agents: Agents (evenly spaced windows of the scene) to predict for.
            goal_selection: ``"topk"``, ``"sample"``, ``"nms"`` or ``"coverage"`` (default: the model's
                ``goal_selection``).
            candidates: Trajectories per goal (the trajectory scorer keeps one).
            cfg_scale: Classifier-free guidance weight over the goal.
            shadow_threshold: Shadow-trajectory fallback threshold (``None``: off).

        Returns:
            A :class:`TrajectorySolution` (``x [A, num, pred_len, 2]``, metres).

        """
        if cond is not None:
            grid = time_grid
            if grid is None:
                grid = shifted_time_grid(int(steps if steps is not None else self.sample_steps), self.time_shift)
            return FlowMatching.sample(
                self, num, solver=solver, cond=cond, seed=seed, return_trajectory=return_trajectory,
                progress=progress, time_grid=grid, guidance=guidance,
            )  # fmt: skip
        check_sample_args(num, steps, solver)
        w = scene_windows(scene, max_agents, self.obs_len, self.pred_len)
        return self.predict_windows(
            w, num, steps=steps, seed=seed, solver=solver, goal_selection=goal_selection, candidates=candidates,
            cfg_scale=cfg_scale, shadow_threshold=shadow_threshold,
        )  # fmt: skip

    def predict_step(self, batch: Any, batch_idx: int) -> Solution:
        """Twenty futures per window of a predict batch (seeded by the batch index)."""
        w = TrajectoryWindows(
            obs=batch["obs"].cpu().numpy(),
            fut=batch["fut"].cpu().numpy(),
            nbr_obs=batch["nbr_obs"].cpu().numpy(),
            nbr_fut=batch["nbr_fut"].cpu().numpy(),
            nbr_mask=batch["nbr_mask"].cpu().numpy() > 0.5,
            frame=np.zeros(len(batch["obs"]), np.int64),
            ped=np.arange(len(batch["obs"]), dtype=np.int64),
            scene=np.asarray(["batch"] * len(batch["obs"]), dtype=object),
        )
        return self.predict_windows(w, 20, seed=batch_idx)

    def write_samples(self, solution: Solution, out_dir: str | os.PathLike) -> list[Path]:
        """Predictions as ``frame ped x y`` text per sample index, ``predictions.npz`` and ``scene.png``."""
        if not isinstance(solution, TrajectorySolution):
            return super().write_samples(solution, out_dir)
        return write_predictions(solution, out_dir)


# ------------------------------------------------------------------------------------------- CVM / CVM-S
class ConstantVelocity(GenerativeModule):
    """Constant-velocity predictor (CVM) and its angular-sampling variant (CVM-S), Schöller et al. (2020).

    The last observed displacement :math:`v = p_L - p_{L-1}` is extrapolated,
    :math:`\\hat p_{L+t} = p_L + t R_\\theta v`, with :math:`\\theta = 0` (CVM: all K samples identical) or
    :math:`\\theta \\sim \\mathcal N(0, \\sigma^2)` per sample (CVM-S, :math:`\\sigma` = 25° in the
    paper). Nothing is trained.

    Args:
        angle_std_deg: :math:`\\sigma` in degrees (0 = CVM).
        pred_len: Predicted steps.
        obs_len: Observed steps.

    """

    def __init__(self, angle_std_deg: float = 0.0, pred_len: int = 12, obs_len: int = 8) -> None:
        super().__init__()
        if angle_std_deg < 0:
            raise ValueError(f"angle_std_deg must be >= 0, got {angle_std_deg}")
        self.save_hyperparameters()
        self.angle_std_deg, self.pred_len, self.obs_len = angle_std_deg, pred_len, obs_len

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Nothing to learn: zero."""
        z = torch.zeros((), device=self.device)
        return z, {"loss": z}

    def configure_optimizers(self) -> Any:
        """No parameters, no optimiser."""
        return None

    def predict_windows(
        self, windows: TrajectoryWindows, num_samples: int = 20, seed: int | None = None, **_: Any
    ) -> TrajectorySolution:
        """``num_samples`` constant-velocity futures per window, ``x [A, K, pred_len, 2]`` metres (NFE 0)."""
        check_sample_args(num_samples)
        obs = torch.as_tensor(windows.obs, dtype=torch.float64)
        v = obs[:, -1] - obs[:, -2]  # [A, 2]
        a = obs.shape[0]
        g = torch.Generator().manual_seed(0 if seed is None else seed)
        theta = torch.randn(a, num_samples, generator=g, dtype=torch.float64) * math.radians(self.angle_std_deg)
        c, s = torch.cos(theta), torch.sin(theta)
        vr = torch.stack([c * v[:, None, 0] - s * v[:, None, 1], s * v[:, None, 0] + c * v[:, None, 1]], -1)
        steps = torch.arange(1, self.pred_len + 1, dtype=torch.float64)
        x = obs[:, None, None, -1] + steps[None, None, :, None] * vr[:, :, None]
        name = "CVM" if self.angle_std_deg == 0 else f"CVM-S ({self.angle_std_deg:g} deg)"
        return TrajectorySolution(
            x=x.float(), nfe=0, times=torch.zeros(1), seed=seed, windows=windows, goals=None, method=name
        )

    def predict(
        self, history: Any, neighbours: Any = None, num_samples: int = 20, steps: int | None = None, seed: int = 0
    ) -> np.ndarray:
        """As :meth:`GoalFlow.predict` (``steps`` is ignored)."""
        del steps
        w, single = windows_from_arrays(history, neighbours, self.pred_len)
        pred = self.predict_windows(w, num_samples, seed=seed).x.numpy()
        return pred[0] if single else pred

    def sample(
        self,
        num: int,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        scene: str | None = None,
        max_agents: int = 6,
    ) -> Solution:
        """``num`` futures for each of ``max_agents`` agents of a scene file (default: the synthetic sample)."""
        check_sample_args(num, steps)
        return self.predict_windows(scene_windows(scene, max_agents, self.obs_len, self.pred_len), num, seed=seed)

    def write_samples(self, solution: Solution, out_dir: str | os.PathLike) -> list[Path]:
        """As :meth:`GoalFlow.write_samples`."""
        return write_predictions(solution, out_dir)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- reflow
def reflow_pairs(
    model: GoalFlow,
    windows: TrajectoryWindows,
    samples_per_agent: int = 4,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 4096,
) -> Any:
    """The teacher's coupling on training windows, conditioned as at inference (the scorer's top goals).

    For each window the ``samples_per_agent`` best-scored vocabulary goals (GoalFlow; none for ``goal_mode="none"``)
    condition one prior draw each; :func:`flowsci.reflow.generate_pairs` integrates the teacher with ``steps`` Euler
    steps on its shifted grid. The pairs' conditioning is stored in normalised agent-frame units.

    Returns:
        :class:`flowsci.reflow.ReflowPairs` with ``A × samples_per_agent`` pairs.

    """
    from flowsci.reflow import generate_pairs

    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, cond, _ = model.prepare({k: v.to(model.device) for k, v in windows.tensors(slice(None)).items()})
        cond.pop("_origin"), cond.pop("_rot")
        k = samples_per_agent
        if model.goal_mode == "goal":
            idx = model.goal_scores(cond).argsort(-1, descending=True)[:, torch.arange(k) % model.num_goals]
            gn = model.goals[idx] / model.pos_scale
            goal = torch.cat([gn, torch.ones_like(gn[..., :1])], -1).reshape(-1, 3)
        else:
            goal = torch.zeros(len(windows) * k, 3, device=model.device)
    model.train(was_training)
    rep = {key: v.repeat_interleave(k, dim=0) for key, v in cond.items() if key != "goal"}
    rep["goal"] = goal
    return generate_pairs(model, len(windows) * k, steps=steps, cond=rep, seed=seed, batch_size=batch_size)


def rectify_goalflow(
    model: GoalFlow,
    windows: TrajectoryWindows,
    max_steps: int = 1000,
    samples_per_agent: int = 4,
    teacher_steps: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
) -> GoalFlow:
    """2-rectified GoalFlow for 1-NFE sampling: :func:`reflow_pairs` then :func:`flowsci.reflow.rectify`.

    The student starts from the teacher's weights (same vocabulary, scale and scorer) and is trained with the
    module's own L1/L2 loss on the stored pairs (no condition dropout on pairs) on ``device`` (a ``torch.device``
    or its name).
    """
    from flowsci.benchspec import trainer_device
    from flowsci.reflow import rectify

    pairs = reflow_pairs(model, windows, samples_per_agent, teacher_steps, seed)
    kwargs = trainer_device(device)
    return rectify(model, pairs, max_steps=max_steps, batch_size=batch_size, trainer_kwargs=kwargs)
