"""Compare two results files cell by cell: ``flowsci bench compare A.json B.json``.

Cells are matched by id (``method/solver/nfe<N>``). For every metric column and every cost column
(training throughput, sampling time per sample, peak memory, counted NFE) the relative change
:math:`(b - a) / |a|` is classified, using the column's direction, as a *regression* (worse by more than the
tolerance), an *improvement* (better by more than the tolerance) or *unchanged*. Status changes (ok -> error is a
regression), cells only in A (removed) or only in B (added) are listed too. Regressions are printed first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["COST_COLUMNS", "TRAIN_COLUMNS", "Change", "compare_results", "format_changes"]

COST_COLUMNS: dict[str, bool] = {
    "train_steps_per_s": True,
    "sample_time_per_sample_s": False,
    "peak_memory_mb": False,
    "nfe": False,
}
"""Cost columns compared besides the metrics, with ``higher_is_better``; timing ones use ``time_rtol``."""

TRAIN_COLUMNS: frozenset[str] = frozenset({"train_steps_per_s"})
"""Per-method columns, compared once per method and reported as ``"<method> (training)"``."""

_ORDER = {"regression": 0, "improvement": 1, "removed": 2, "added": 3, "unchanged": 4}


@dataclass(frozen=True)
class Change:
    """One compared value.

    Attributes:
        kind: ``"regression"``, ``"improvement"``, ``"unchanged"``, ``"added"`` or ``"removed"``.
        cell: Cell id.
        column: Metric/cost column, or ``"status"`` / ``"cell"``.
        old: Value in A.
        new: Value in B.
        rel: Relative change ``(new - old) / |old|`` (``None`` if undefined).

    """

    kind: str
    cell: str
    column: str
    old: Any
    new: Any
    rel: float | None


def _directions(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, bool]:
    out = {k: bool(v["higher_is_better"]) for k, v in a.get("columns", {}).items()}
    out.update({k: bool(v["higher_is_better"]) for k, v in b.get("columns", {}).items()})
    return out


def compare_results(
    a: Mapping[str, Any], b: Mapping[str, Any], rtol: float = 0.05, time_rtol: float = 0.25, atol: float = 0.0
) -> list[Change]:
    """Compare results document ``b`` (new) against ``a`` (old).

    Args:
        a: The old results document.
        b: The new results document.
        rtol: Relative tolerance for metric columns and NFE.
        time_rtol: Relative tolerance for timing/memory columns (noisier on shared machines).
        atol: Absolute differences below this are always unchanged.

    Returns:
        Changes sorted regressions first, then improvements, removed, added, unchanged; within a kind by the
        size of the relative change.

    """
    dirs = _directions(a, b)
    ca = {c["id"]: c for c in a["cells"]}
    cb = {c["id"]: c for c in b["cells"]}
    out: list[Change] = []
    for cid in ca.keys() - cb.keys():
        out.append(Change("removed", cid, "cell", ca[cid]["status"], None, None))
    for cid in cb.keys() - ca.keys():
        out.append(Change("added", cid, "cell", None, cb[cid]["status"], None))
    trained: set[str] = set()  # training columns are per method: compare them once, on its first common cell
    for cid in sorted(ca.keys() & cb.keys()):
        x, y = ca[cid], cb[cid]
        if x["status"] != y["status"]:
            kind = "regression" if y["status"] != "ok" else "improvement"
            out.append(Change(kind, cid, "status", x["status"], y["status"], None))
            continue
        if y["status"] != "ok":
            continue
        values = [
            (k, x["metrics"].get(k), y["metrics"].get(k), dirs.get(k, False), rtol, cid)
            for k in sorted(set(x["metrics"]) | set(y["metrics"]))
        ]
        for k, hib in COST_COLUMNS.items():
            if k in TRAIN_COLUMNS:
                if x["method"] in trained:
                    continue
                values.append((k, x.get(k), y.get(k), hib, time_rtol, f"{x['method']} (training)"))
            else:
                values.append((k, x.get(k), y.get(k), hib, rtol if k == "nfe" else time_rtol, cid))
        trained.add(x["method"])
        for col, old, new, hib, tol, where in values:
            if old is None and new is None:
                continue
            if old is None or new is None:
                kind = "regression" if new is None else "improvement"
                out.append(Change(kind, where, col, old, new, None))
                continue
            diff = float(new) - float(old)
            rel = diff / abs(old) if old != 0 else (0.0 if diff == 0 else float("inf") * (1 if diff > 0 else -1))
            better = diff > 0 if hib else diff < 0
            if abs(diff) <= atol or abs(rel) <= tol:
                kind = "unchanged"
            else:
                kind = "improvement" if better else "regression"
            out.append(Change(kind, where, col, old, new, rel))
    out.sort(key=lambda c: (_ORDER[c.kind], -abs(c.rel) if c.rel is not None else float("-inf"), c.cell, c.column))
    return out


def _v(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "–" if x is None else str(x)


def format_changes(
    changes: list[Change],
    a_name: str = "A",
    b_name: str = "B",
    show_unchanged: bool = False,
    header: Mapping[str, Any] | None = None,
) -> str:
    """Format changes as text, regressions first (unchanged ones only counted unless ``show_unchanged``)."""
    lines = [f"flowsci bench compare: {a_name} -> {b_name}"]
    if header:
        lines += [f"  {k}: {v}" for k, v in header.items()]
    counts = {k: sum(c.kind == k for c in changes) for k in _ORDER}
    lines.append(
        "  "
        + ", ".join(f"{n} {k}{'s' if n != 1 and k in ('regression', 'improvement') else ''}" for k, n in counts.items())
    )
    titles = {
        "regression": "REGRESSIONS",
        "improvement": "Improvements",
        "removed": "Removed cells",
        "added": "Added cells",
        "unchanged": "Unchanged",
    }
    for kind, title in titles.items():
        group = [c for c in changes if c.kind == kind]
        if not group or (kind == "unchanged" and not show_unchanged):
            continue
        lines += ["", f"{title} ({len(group)}):"]
        for c in group:
            rel = "" if c.rel is None else f" ({c.rel:+.1%})"
            lines.append(f"  {c.cell:<34} {c.column:<26} {_v(c.old):>12} -> {_v(c.new):<12}{rel}")
    return "\n".join(lines) + "\n"
