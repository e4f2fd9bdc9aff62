r"""Metrics of the PDE domain (simulation and control) and the space-time figure.

Simulation (prediction :math:`\hat u`, truth :math:`u`, both ``[n, T, Nx]``; errors over the generated steps):

* ``mse``: :math:`\mathrm{mean}(\hat u - u)^2`;
* ``rel_l2``: :math:`\frac1n\sum_i \lVert\hat u_i - u_i\rVert_2 / \lVert u_i\rVert_2` over the whole trajectory, and
  per time step (:func:`rel_l2_per_step`);
* ``frmse_low/mid/high``: PDEBench's fRMSE: :math:`E_k = \sqrt{\mathrm{mean}_i|\hat U_{i,k} - U_{i,k}|^2}/N_x`
  (:math:`U = \mathrm{rfft}_x u`, mean over samples), averaged over the wavenumbers of each band
  (low :math:`k < 4`, mid :math:`4 \le k < 12`, high :math:`k \ge 12`, PDEBench's ``iLow = 4, iHigh = 12``) and
  over time;
* ``shock_rmse``: RMSE on the points where :math:`|\partial_x u|` exceeds its 95th percentile (per trajectory);
* ``final_rel_l2``: ``rel_l2`` of the final state only.

Control (:func:`control_cost`): :math:`\mathcal J = \mathrm{mean}_x (u(T) - u_T^*)^2` from re-simulation,
energy :math:`E = \sum f^2\,\Delta t\,\Delta x`, objective :math:`\mathcal J + w_f E`; the model-predicted
:math:`\mathcal J` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowsci.errors import InputError
from flowsci.io import atomic_write

__all__ = [
    "FRMSE_BANDS",
    "control_cost",
    "evaluate",
    "frmse",
    "plot_fields",
    "rel_l2",
    "rel_l2_per_step",
    "shock_rmse",
    "simulation_metrics",
]

FRMSE_BANDS = (4, 12)
"""PDEBench's band edges (``iLow``, ``iHigh``): low k < 4, mid 4 <= k < 12, high k >= 12."""


def _t(x: Any) -> Tensor:
    if hasattr(x, "values") and not isinstance(x, Tensor):
        x = x.values
    return torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).double()


def _check(pred: Tensor, true: Tensor) -> None:
    if pred.shape != true.shape or pred.dim() < 2:
        raise InputError("prediction", f"shape {tuple(pred.shape)} does not match the truth {tuple(true.shape)}")


def rel_l2(pred: Any, true: Any) -> float:
    """Mean over samples of :math:`\\lVert\\hat u_i - u_i\\rVert_2 / \\lVert u_i\\rVert_2` (all but the first axis)."""
    p, t = _t(pred), _t(true)
    _check(p, t)
    num = (p - t).flatten(1).norm(dim=1)
    den = t.flatten(1).norm(dim=1).clamp_min(1e-12)
    return float((num / den).mean())


def rel_l2_per_step(pred: Any, true: Any) -> np.ndarray:
    """Relative L2 error per time step, ``[T]`` (``pred``/``true``: ``[n, T, Nx]``)."""
    p, t = _t(pred), _t(true)
    _check(p, t)
    num = (p - t).flatten(2).norm(dim=2)
    den = t.flatten(2).norm(dim=2).clamp_min(1e-12)
    return (num / den).mean(0).numpy()


def frmse(pred: Any, true: Any, bands: tuple[int, int] = FRMSE_BANDS, length: float = 1.0) -> dict[str, float]:
    """PDEBench fRMSE in the low / mid / high Fourier bands of the last axis (see the module docstring).

    Args:
        pred: ``[n, T, Nx]`` (any leading axes; the first is samples).
        true: Same shape.
        bands: ``(iLow, iHigh)``.
        length: Domain length :math:`L_x` (PDEBench multiplies by it).

    Returns:
        ``{"frmse_low": ..., "frmse_mid": ..., "frmse_high": ...}``.

    """
    p, t = _t(pred), _t(true)
    _check(p, t)
    nx = p.shape[-1]
    err = torch.sqrt((torch.fft.rfft(p - t, dim=-1).abs() ** 2).mean(0)) / nx * length  # [..., K]
    err = err.reshape(-1, err.shape[-1])
    lo, hi = bands
    out = {}
    for name, sl in (("low", slice(0, lo)), ("mid", slice(lo, hi)), ("high", slice(hi, None))):
        part = err[:, sl]
        out[f"frmse_{name}"] = float(part.mean()) if part.numel() else float("nan")
    return out


def shock_rmse(pred: Any, true: Any, quantile: float = 0.95) -> float:
    """RMSE on the points where :math:`|\\partial_x u|` (centred differences) is above its per-trajectory
    ``quantile``.
    """
    p, t = _t(pred), _t(true)
    _check(p, t)
    grad = torch.zeros_like(t)
    grad[..., 1:-1] = (t[..., 2:] - t[..., :-2]).abs()
    flat = grad.flatten(1)
    thr = torch.quantile(flat, quantile, dim=1, keepdim=True)
    mask = (flat > thr).reshape(t.shape)
    err = ((p - t) ** 2)[mask]
    return float(err.mean().sqrt()) if err.numel() else 0.0


def simulation_metrics(pred: Any, true: Any) -> dict[str, float]:
    """All simulation metrics of the generated steps ``[:, 1:]`` of ``pred``/``true`` ``[n, Nt+1, Nx]``."""
    p, t = _t(pred)[:, 1:], _t(true)[:, 1:]
    _check(p, t)
    out = {"mse": float(((p - t) ** 2).mean()), "rel_l2": rel_l2(p, t)}
    out.update(frmse(p, t))
    out["shock_rmse"] = shock_rmse(p, t)
    out["final_rel_l2"] = rel_l2(p[:, -1], t[:, -1])
    return out


def control_cost(u: Any, f: Any, target: Any, dt: float, dx: float, control_weight: float = 0.0) -> dict[str, Tensor]:
    """Per-trajectory control cost.

    Args:
        u: Trajectories ``[n, Nt+1, Nx]`` (the final state ``u[:, -1]`` is used).
        f: Controls ``[n, Nt, Nx]``.
        target: Target final states ``[n, Nx]``.
        dt: Control interval length.
        dx: Grid spacing.
        control_weight: :math:`w_f`.

    Returns:
        ``{"J": [n], "energy": [n], "objective": [n]}`` (float64).

    """
    u, f, tgt = _t(u), _t(f), _t(target)
    j = ((u[:, -1] - tgt) ** 2).mean(-1)
    energy = (f**2).sum(dim=(-2, -1)) * dt * dx
    return {"J": j, "energy": energy, "objective": j + control_weight * energy}


def evaluate(samples: Any, reference: Any = None) -> Any:
    """Metrics of generated trajectories as a table (``pandas.DataFrame``, one row per metric).

    Args:
        samples: A :class:`~flowsci.domains.pde.flow.PDESolution` or its ``xarray.Dataset`` (``u``, and ``u_solver``
            -- the solver's trajectory for the same conditions -- when the model wrote it; control samples also
            carry ``J_model``, ``J_solver``, ``energy``, ``objective``).
        reference: Held-out data (``xarray.Dataset`` with ``u``); the truth when ``samples`` has no
            ``u_solver`` (then it must have been simulated from the reference's ``u0`` and ``f``), and the source
            of the reference energy spectrum otherwise.

    Returns:
        ``DataFrame`` with columns ``metric`` and ``value``.

    """
    import pandas as pd

    ds = getattr(samples, "dataset", samples)
    if ds is None or "u" not in getattr(ds, "variables", {}):
        raise InputError("samples", "need an xarray.Dataset with variable 'u' (a WaveletFlow sample)")
    pred = _t(ds["u"])
    if "u_solver" in ds.variables:
        truth = _t(ds["u_solver"])
    elif reference is not None:
        truth = _t(reference["u"])[: pred.shape[0]]
        if truth.shape != pred.shape:
            raise InputError("reference", f"u {tuple(truth.shape)} does not match the samples {tuple(pred.shape)}")
    else:
        raise InputError("reference", "samples carry no solver trajectory (u_solver); pass the reference data")
    rows = simulation_metrics(pred, truth)
    for name in ("J_model", "J_solver", "energy", "objective"):
        if name in ds.variables:
            rows[name] = float(np.mean(ds[name].values))
    if reference is not None and "u" in getattr(reference, "variables", {}):
        # distance of the mean energy spectrum at the final time (a distributional check against real data)
        ref_u = _t(reference["u"])
        if ref_u.shape[-1] == pred.shape[-1]:
            s_pred = (torch.fft.rfft(pred[:, -1], dim=-1).abs() ** 2).mean(0)
            s_ref = (torch.fft.rfft(ref_u[:, -1], dim=-1).abs() ** 2).mean(0)
            rows["spectrum_log_l1"] = float((torch.log(s_pred + 1e-12) - torch.log(s_ref + 1e-12)).abs().mean())
    return pd.DataFrame({"metric": list(rows), "value": [float(v) for v in rows.values()]})


def plot_fields(
    samples: Any,
    path: str | os.PathLike,
    reference: Any = None,
    num: int = 3,
    title: str | None = None,
) -> Path:
    """Space-time heatmaps (x horizontal, t vertical) of the true vs generated state and the control (PNG).

    Columns: truth (``u_solver``, or ``reference.u``), generated ``u``, their difference, and ``f``; one row per
    trajectory (the first ``num``). For 2D problems (``u (sample, time, y, x)``) the panels show the final state and
    the last control interval over (x, y) instead.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ds = getattr(samples, "dataset", samples)
    u = np.asarray(ds["u"].values)
    truth = None
    if "u_solver" in ds.variables:
        truth = np.asarray(ds["u_solver"].values)
    elif reference is not None and "u" in reference.variables and reference["u"].shape[1:] == ds["u"].shape[1:]:
        truth = np.asarray(reference["u"].values)[: u.shape[0]]
    f = np.asarray(ds["f"].values) if "f" in ds.variables else None
    two_d = u.ndim == 4
    if two_d:  # final snapshots over (y, x)
        u, truth, f = u[:, -1], None if truth is None else truth[:, -1], None if f is None else f[:, -1]
    rows = max(1, min(num, u.shape[0]))
    panels = [("truth (solver)", truth), ("generated u", u), ("generated - truth", None), ("control f", f)]
    panels = [p for p in panels if p[1] is not None or (p[0].startswith("generated -") and truth is not None)]
    fig, axes = plt.subplots(rows, len(panels), figsize=(3.2 * len(panels), 2.4 * rows), squeeze=False)
    x = np.asarray(ds["x"].values)
    t_u = np.asarray(ds["time"].values)
    y = np.asarray(ds["y"].values) if two_d else None
    for i in range(rows):
        vmax = float(np.abs(u[i]).max()) if truth is None else float(max(np.abs(u[i]).max(), np.abs(truth[i]).max()))
        for j, (name, arr) in enumerate(panels):
            ax = axes[i, j]
            if name.startswith("generated -"):
                img, vm, cmap = u[i] - truth[i], None, "PuOr"
            else:
                img = arr[i]
                vm, cmap = (vmax if name != "control f" else None), "RdBu_r"
            if y is not None:
                extent = (x[0], x[-1], y[0], y[-1])
            else:
                extent = (x[0], x[-1], t_u[0], t_u[-1] if img.shape[0] == t_u.size else t_u[-2])
            m = ax.imshow(
                img, origin="lower", aspect="auto", cmap=cmap, extent=extent, vmin=-vm if vm else None, vmax=vm
            )
            fig.colorbar(m, ax=ax, fraction=0.046)
            if i == 0:
                ax.set_title(name, fontsize=9)
            ax.set_xlabel("x")
            ax.set_ylabel("y" if two_d else "t")
    fig.suptitle(title or f"{ds.attrs.get('problem', '')} {ds.attrs.get('task', '')} (NFE {ds.attrs.get('nfe', '?')})")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
