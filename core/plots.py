"""Figures that compare generated samples with reference data, one panel per feature (PNG, atomic write).

Domains build :class:`Panel` objects from their own features (bond lengths, angles, radii, densities, ...) and
call :func:`save_panels`; matplotlib is imported only then, with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowsci.io import atomic_write

__all__ = ["Panel", "draw_panel", "save_panels"]

_KINDS = ("hist", "scatter", "bar")


@dataclass
class Panel:
    """One subplot.

    Attributes:
        title: Panel title.
        series: Label → values. ``hist``: 1-D values (one density histogram per label, shared bins);
            ``scatter``: ``[N, 2]`` points; ``bar``: one value per entry of ``categories``.
        kind: ``"hist"``, ``"scatter"`` or ``"bar"``.
        xlabel: x-axis label (with units).
        ylabel: y-axis label (default: "density" for histograms).
        bins: Histogram bins: a count, or the edges.
        categories: Bar labels (``bar`` only).
        curve: Optional ``(label, x, y)`` line drawn on top, e.g. an empirical law.
    """

    title: str
    series: dict[str, np.ndarray]
    kind: str = "hist"
    xlabel: str = ""
    ylabel: str = ""
    bins: int | np.ndarray = 40
    categories: Sequence[str] = ()
    curve: tuple[str, np.ndarray, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Panel {self.title!r}: kind must be one of {_KINDS}, got {self.kind!r}")
        if not self.series:
            raise ValueError(f"Panel {self.title!r}: no series to draw")
        self.series = {k: np.asarray(v, dtype=np.float64) for k, v in self.series.items()}
        for label, v in self.series.items():
            if self.kind == "scatter" and (v.ndim != 2 or v.shape[-1] != 2):
                raise ValueError(f"Panel {self.title!r}: scatter series {label!r} must be [N, 2], got {v.shape}")
            if self.kind == "bar" and v.shape != (len(self.categories),):
                raise ValueError(
                    f"Panel {self.title!r}: bar series {label!r} needs one value per category "
                    f"({len(self.categories)}), got shape {v.shape}"
                )


def draw_panel(ax: Any, panel: Panel) -> None:
    """Draw ``panel`` on a matplotlib axes (for figures that mix panels with other drawings)."""
    finite = {k: v[np.isfinite(v).all(-1)] if v.ndim == 2 else v[np.isfinite(v)] for k, v in panel.series.items()}
    if panel.kind == "hist":
        nonempty = [v for v in finite.values() if v.size]
        bins = panel.bins
        if nonempty and np.ndim(bins) == 0:
            pooled = np.concatenate(nonempty)
            lo, hi = float(pooled.min()), float(pooled.max())
            bins = np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
        for label, v in finite.items():
            if v.size:
                ax.hist(v, bins=bins, density=True, histtype="step", linewidth=1.5, label=f"{label} (n={v.size})")
        ax.set_ylabel(panel.ylabel or "density")
    elif panel.kind == "scatter":
        for label, v in finite.items():
            ax.scatter(v[:, 0], v[:, 1], s=10, alpha=0.7, label=f"{label} (n={len(v)})")
        ax.set_ylabel(panel.ylabel)
    else:
        width = 0.8 / len(finite)
        pos = np.arange(len(panel.categories))
        for i, (label, v) in enumerate(finite.items()):
            ax.bar(pos + (i - (len(finite) - 1) / 2) * width, v, width, label=label)
        ax.set_xticks(pos, list(panel.categories))
        ax.set_ylabel(panel.ylabel)
    if panel.curve is not None:
        label, x, y = panel.curve
        ax.plot(np.asarray(x), np.asarray(y), "k--", linewidth=1, label=label)
    ax.set_title(panel.title, fontsize=10)
    ax.set_xlabel(panel.xlabel)
    ax.legend(fontsize=7)


def save_panels(panels: Sequence[Panel], path: str | os.PathLike, title: str | None = None, ncols: int = 3) -> Path:
    """Draw ``panels`` on a grid (``ncols`` per row) and write one PNG to ``path`` (temp file, then rename).

    Raises:
        ValueError: no panels.
    """
    if not panels:
        raise ValueError(f"save_panels({str(path)!r}): no panels to draw")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
