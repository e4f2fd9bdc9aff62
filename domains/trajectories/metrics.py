r"""Metrics of stochastic trajectory prediction and of closed-loop planning, ``evaluate`` and ``plot_scene``.

Notation: N agents (windows), K samples :math:`\hat y^k_{i,1..T}`, ground truth :math:`y_{i,1..T}`, metres, world
frame.

* :func:`min_ade_fde` — :math:`\text{minADE}_K = \frac1N\sum_i \min_k \frac1T\sum_t\|\hat y^k_{i,t}-y_{i,t}\|`,
  :math:`\text{minFDE}_K = \frac1N\sum_i \min_k\|\hat y^k_{i,T}-y_{i,T}\|`. The minimising sample is chosen
  **separately** for ADE and FDE, as Social-GAN, Trajectron++, MID, LED and MoFlow do.
* :func:`miss_rate` — fraction of agents with :math:`\min_k\|\hat y^k_T - y_T\| > d` (default 2 m).
* :func:`collision_rate` — fraction of predicted samples that come within ``r`` = 0.1 m of a neighbour's
  ground-truth position at the same time step (Social-GAN / TrajNet++ "COL" against the true neighbours).
* :func:`kde_nll` — Trajectron++'s KDE NLL: per agent and time step a Gaussian KDE (scipy, Scott's bandwidth) on
  the K predicted positions, :math:`-\log p(y_t)` (clipped at :math:`\log p \ge -20`), averaged over t and agents.
  Trajectron++ uses 2,000 samples; with K = 20 the number is a coarse, bandwidth-dominated estimate.
* :func:`diversity` — APD = mean over pairs j < k of :math:`\frac1T\sum_t\|\hat y^j_t-\hat y^k_t\|`; FPD the same on
  the final points.
* :func:`pdm_score` — NAVSIM-style aggregate
  :math:`\text{NC}\times\text{DAC}\times(5\,\text{TTC}+2\,\text{C}+5\,\text{EP})/12`
  (see its docstring for each factor), for closed-loop evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from flowsci.errors import InputError
from flowsci.io import atomic_write

__all__ = [
    "collision_rate",
    "comfort_ok",
    "diversity",
    "evaluate",
    "kde_nll",
    "min_ade_fde",
    "miss_rate",
    "pdm_score",
    "plot_scene",
]


def _check(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(gt, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != 2:
        raise InputError("pred", f"must be [N, K, T, 2], got shape {p.shape}")
    if g.shape != (p.shape[0], p.shape[2], 2):
        raise InputError("gt", f"must be [N, T, 2] = {(p.shape[0], p.shape[2], 2)}, got shape {g.shape}")
    if not (np.isfinite(p).all() and np.isfinite(g).all()):
        raise InputError("pred/gt", "hold NaN or Inf")
    return p, g


def min_ade_fde(pred: Any, gt: Any) -> tuple[float, float]:
    """minADE_K and minFDE_K (metres; minimisers chosen separately).

    Args:
        pred: ``[N, K, T, 2]`` samples.
        gt: ``[N, T, 2]`` ground truth.

    """
    p, g = _check(pred, gt)
    d = np.linalg.norm(p - g[:, None], axis=-1)  # [N, K, T]
    return float(d.mean(-1).min(-1).mean()), float(d[..., -1].min(-1).mean())


def miss_rate(pred: Any, gt: Any, threshold: float = 2.0) -> float:
    """Fraction of agents whose best final point is farther than ``threshold`` metres from the truth."""
    p, g = _check(pred, gt)
    fde = np.linalg.norm(p[:, :, -1] - g[:, None, -1], axis=-1).min(-1)
    return float((fde > threshold).mean())


def collision_rate(pred: Any, nbr_fut: Any, nbr_mask: Any, radius: float = 0.1) -> float:
    """Fraction of predicted samples within ``radius`` metres of a real neighbour's true position at some step.

    Args:
        pred: ``[N, K, T, 2]``.
        nbr_fut: ``[N, M, T, 2]`` neighbours' ground-truth futures.
        nbr_mask: ``[N, M]`` bool, real neighbour slots.
        radius: Collision distance (m).

    """
    p = np.asarray(pred, dtype=np.float64)
    nf = np.asarray(nbr_fut, dtype=np.float64)
    m = np.asarray(nbr_mask, dtype=bool)
    if nf.ndim != 4 or nf.shape[0] != p.shape[0] or nf.shape[2] != p.shape[2] or m.shape != nf.shape[:2]:
        raise InputError(
            "nbr_fut/nbr_mask", f"must be [N, M, T, 2] and [N, M] for pred {p.shape}, got {nf.shape}, {m.shape}"
        )
    hits = np.zeros(p.shape[:2], dtype=bool)
    for start in range(0, p.shape[0], 512):  # chunks keep the [n, K, M, T] distance array small
        sl = slice(start, start + 512)
        d = np.linalg.norm(p[sl, :, None] - nf[sl, None], axis=-1)  # [n, K, M, T]
        close = (d < radius) & m[sl, None, :, None]
        hits[sl] = close.any(axis=(2, 3))
    return float(hits.mean()) if hits.size else 0.0


def kde_nll(pred: Any, gt: Any, log_pdf_floor: float = -20.0) -> float:
    """Trajectron++'s KDE NLL (nats), averaged over time steps and agents (see the module docstring)."""
    from scipy.stats import gaussian_kde

    p, g = _check(pred, gt)
    if p.shape[1] < 3:
        raise InputError("pred", f"KDE-NLL needs at least 3 samples per agent, got {p.shape[1]}")
    total, count = 0.0, 0
    for i in range(p.shape[0]):
        for t in range(p.shape[2]):
            pts = p[i, :, t].T  # [2, K]
            try:
                lp = float(gaussian_kde(pts).logpdf(g[i, t][:, None])[0])
            except np.linalg.LinAlgError:  # all samples collinear/identical: the KDE is degenerate
                lp = log_pdf_floor
            total += -max(lp, log_pdf_floor)
            count += 1
    return total / max(count, 1)


def diversity(pred: Any) -> tuple[float, float]:
    """Average pairwise displacement (APD) and final displacement (FPD) between samples, metres."""
    p = np.asarray(pred, dtype=np.float64)
    if p.ndim != 4 or p.shape[1] < 2:
        raise InputError("pred", f"must be [N, K >= 2, T, 2], got shape {p.shape}")
    k = p.shape[1]
    iu = np.triu_indices(k, 1)
    apd, fpd = [], []
    for start in range(0, p.shape[0], 256):
        x = p[start : start + 256]
        d = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)  # [n, K, K, T]
        apd.append(d.mean(-1)[:, iu[0], iu[1]].mean(-1))
        fpd.append(d[..., -1][:, iu[0], iu[1]].mean(-1))
    return float(np.concatenate(apd).mean()), float(np.concatenate(fpd).mean())


# ------------------------------------------------------------------------------------------------ closed loop
COMFORT_LIMITS = {
    "lat_accel": 4.89,
    "lon_accel_min": -4.05,
    "lon_accel_max": 2.40,
    "jerk": 8.37,
    "lon_jerk": 4.13,
    "yaw_rate": 0.95,
    "yaw_accel": 1.93,
}
"""NAVSIM's comfort bounds (m/s², m/s³, rad/s, rad/s²)."""


def comfort_ok(xy: Any, heading: Any, dt: float) -> bool:
    """NAVSIM's comfort check on one trajectory: every bound of :data:`COMFORT_LIMITS` holds at every step.

    Derivatives are finite differences (NAVSIM smooths with Savitzky-Golay first; here use >= 5 poses at >= 2 Hz).

    Args:
        xy: ``[T, 2]`` positions (m).
        heading: ``[T]`` headings (rad).
        dt: Time step (s).

    """
    xy = np.asarray(xy, dtype=np.float64)
    h = np.unwrap(np.asarray(heading, dtype=np.float64))
    if len(xy) < 4:
        return True
    vel = np.gradient(xy, dt, axis=0)
    acc = np.gradient(vel, dt, axis=0)
    jerk = np.gradient(acc, dt, axis=0)
    u = np.stack([np.cos(h), np.sin(h)], -1)
    n = np.stack([-np.sin(h), np.cos(h)], -1)
    lon_a, lat_a = (acc * u).sum(-1), (acc * n).sum(-1)
    lon_j = (jerk * u).sum(-1)
    yaw_rate = np.gradient(h, dt)
    yaw_acc = np.gradient(yaw_rate, dt)
    lim = COMFORT_LIMITS
    return bool(
        (np.abs(lat_a) <= lim["lat_accel"]).all()
        and (lon_a >= lim["lon_accel_min"]).all()
        and (lon_a <= lim["lon_accel_max"]).all()
        and (np.linalg.norm(jerk, axis=-1) <= lim["jerk"]).all()
        and (np.abs(lon_j) <= lim["lon_jerk"]).all()
        and (np.abs(yaw_rate) <= lim["yaw_rate"]).all()
        and (np.abs(yaw_acc) <= lim["yaw_accel"]).all()
    )


def pdm_score(nc: Any, dac: Any, ttc: Any, comfort: Any, ep: Any) -> float:
    """PDMS-like aggregate
    :math:`\\text{NC} \\times \\text{DAC} \\times (5\\,\\text{TTC} + 2\\,\\text{C} + 5\\,\\text{EP}) / 12`,
    averaged over episodes/scenes (NAVSIM v1, GoalFlow eq. 18).

    Args:
        nc: No at-fault collision: 1, 0.5 (collision with a static object) or 0, per scene.
        dac: Drivable-area compliance: 0 if the ego box ever leaves the drivable area, else 1.
        ttc: Time-to-collision: 0 if the constant-velocity projection of the ego box over 0-0.9 s hits an
            agent at some step, else 1.
        comfort: 1 if every :data:`COMFORT_LIMITS` bound holds (:func:`comfort_ok`), else 0.
        ep: Ego progress along the route divided by a reference planner's (here: the IDM expert's), clipped to
            [0, 1].

    Returns:
        The mean score in [0, 1] (NAVSIM reports it x 100).

    """
    arrs = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (nc, dac, ttc, comfort, ep)]
    n = {len(a) for a in arrs}
    if len(n) != 1:
        raise InputError("pdm_score", f"all factors need the same number of scenes, got {[len(a) for a in arrs]}")
    nc_, dac_, ttc_, c_, ep_ = arrs
    if ((ep_ < 0) | (ep_ > 1)).any() or ((nc_ < 0) | (nc_ > 1)).any():
        raise InputError("pdm_score", "factors must lie in [0, 1] (clip EP first)")
    return float((nc_ * dac_ * (5 * ttc_ + 2 * c_ + 5 * ep_) / 12).mean())


# ---------------------------------------------------------------------------------------------------- evaluate
def _unpack(samples: Any) -> tuple[np.ndarray, Any]:
    """Predictions ``[N, K, T, 2]`` and the windows they carry (``None`` for plain arrays)."""
    if hasattr(samples, "x") and hasattr(samples, "windows"):
        x = samples.x.detach().cpu().numpy() if hasattr(samples.x, "detach") else np.asarray(samples.x)
        return x, samples.windows
    if hasattr(samples, "detach"):
        samples = samples.detach().cpu().numpy()
    return np.asarray(samples), None


def evaluate(samples: Any, reference: Any, kde: bool = True, per_scene: bool = True) -> Any:
    """All prediction metrics of ``samples`` against ``reference`` windows, as a pandas DataFrame.

    Args:
        samples: A :class:`~flowsci.domains.trajectories.flow.TrajectorySolution` (or ``[N, K, T, 2]`` predictions
            aligned with the reference's first N windows).
        reference: The :class:`~flowsci.domains.trajectories.data.TrajectoryWindows` scored against. When the
            solution carries its windows, they are matched to the reference by (scene, first frame, pedestrian)
            and only the matched ones are scored (column ``agents``).
        kde: Compute KDE-NLL (slowest metric, ~1 ms per agent).
        per_scene: One row per scene plus an ``all`` row; otherwise only ``all``.

    Returns:
        DataFrame indexed by scene with columns ``agents, K, minADE, minFDE, miss_rate_2m, collision_rate, APD,
        FPD`` (+ ``kde_nll``), metres.

    Raises:
        InputError: samples that do not match the reference.

    """
    import pandas as pd

    pred, windows = _unpack(samples)
    if pred.ndim != 4:
        raise InputError("samples", f"predictions must be [N, K, T, 2], got shape {pred.shape}")
    if windows is not None:
        key = {
            (s, int(f), int(p)): i
            for i, (s, f, p) in enumerate(zip(reference.scene, reference.frame, reference.ped, strict=True))
        }
        idx = [key.get((s, int(f), int(p))) for s, f, p in zip(windows.scene, windows.frame, windows.ped, strict=True)]
        keep = np.asarray([i is not None for i in idx])
        if not keep.any():
            raise InputError("samples", f"none of the {len(idx)} predicted windows is in the reference")
        pred = pred[keep]
        ref = reference.subset(np.asarray([i for i in idx if i is not None], dtype=int))
    else:
        if pred.shape[0] > len(reference):
            raise InputError("samples", f"{pred.shape[0]} predictions for {len(reference)} reference windows")
        ref = reference.subset(slice(0, pred.shape[0]))
    groups = {"all": np.arange(len(ref))}
    if per_scene and len(set(ref.scene)) > 1:
        for s in sorted(set(ref.scene)):
            groups[s] = np.flatnonzero(ref.scene == s)
    rows = {}
    for name, ix in groups.items():
        p, g = pred[ix], ref.fut[ix]
        ade, fde = min_ade_fde(p, g)
        row = {
            "agents": len(ix),
            "K": p.shape[1],
            "minADE": ade,
            "minFDE": fde,
            "miss_rate_2m": miss_rate(p, g),
            "collision_rate": collision_rate(p, ref.nbr_fut[ix], ref.nbr_mask[ix]),
        }
        row["APD"], row["FPD"] = diversity(p) if p.shape[1] > 1 else (0.0, 0.0)
        if kde:
            row["kde_nll"] = kde_nll(p, g) if p.shape[1] >= 3 else float("nan")
        rows[name] = row
    return pd.DataFrame.from_dict(rows, orient="index")


# -------------------------------------------------------------------------------------------------------- plot
def plot_scene(
    samples: Any,
    reference: Any = None,
    path: str | os.PathLike = "scene.png",
    title: str | None = None,
    max_agents: int = 6,
) -> Path:
    """Draw sampled futures, goals, history, ground truth and neighbours, one panel per agent (PNG, atomic).

    Args:
        samples: A :class:`~flowsci.domains.trajectories.flow.TrajectorySolution` (it carries its windows), or
            ``[N, K, T, 2]`` predictions with ``reference`` windows.
        reference: Windows for plain-array samples (ignored when the solution has its own).
        path: Output PNG.
        title: Figure title.
        max_agents: Panels drawn (the first agents).

    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pred, windows = _unpack(samples)
    windows = windows if windows is not None else reference
    if windows is None:
        raise InputError("reference", "plot_scene needs the windows (histories, truth) of the predictions")
    goals = getattr(samples, "goals", None)
    goals = goals.detach().cpu().numpy() if goals is not None else None
    n = min(max_agents, pred.shape[0])
    if n < 1:
        raise InputError("samples", "no agents to plot")
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        for j in np.flatnonzero(windows.nbr_mask[i]):
            ax.plot(*windows.nbr_obs[i, j].T, color="0.7", lw=1)
            ax.plot(*windows.nbr_fut[i, j].T, color="0.85", lw=1, ls=":")
        for k in range(pred.shape[1]):
            ax.plot(*pred[i, k].T, color="tab:blue", lw=0.8, alpha=0.5, label="samples" if k == 0 else None)
        ax.plot(*windows.obs[i].T, "k.-", lw=1.5, ms=3, label="history")
        if np.abs(windows.fut[i]).sum() > 0:
            ax.plot(*windows.fut[i].T, color="tab:green", lw=1.5, label="truth")
        if goals is not None:
            ax.scatter(goals[i, :, 0], goals[i, :, 1], marker="x", color="tab:red", s=14, label="goals")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_title(f"{windows.scene[i]} ped {int(windows.ped[i])} frame {int(windows.frame[i])}", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
