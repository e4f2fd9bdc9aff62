"""Leaderboards (Markdown) and plots (PNG) from results documents.

Per domain: ``<domain>.md`` (best cell per method ranked by the primary metric, the full grid, failed cells,
and reported reference rows in a separate table), ``plots/<domain>_vs_nfe.png`` (every metric against NFE) and
``plots/<domain>_vs_time.png`` (every metric against sampling wall-clock per sample). Per suite: ``README.md``
linking every domain's leaderboard. Across suites: :func:`render_report` turns any set of committed results files
into one Markdown page (``flowsci bench report``; the documentation's leaderboard page is made this way).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowsci.io import atomic_write, atomic_write_text

__all__ = [
    "collect_results",
    "format_time",
    "render_markdown",
    "render_report",
    "write_domain_report",
    "write_index",
    "write_plots",
]


def format_time(seconds: float | None) -> str:
    """Human-readable duration (``"12.3 µs"``, ``"4.56 ms"``, ``"1.23 s"``, ``"2.5 min"``)."""
    if seconds is None:
        return "–"
    s = float(seconds)
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    return f"{s / 60:.3g} min"


def _train_time(cell: dict[str, Any]) -> str:
    """A cell's training wall time; "–" for a method that does not train (0 steps)."""
    return "–" if cell.get("train_steps") == 0 else format_time(cell["train_time_s"])


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _mem(c: Mapping[str, Any]) -> str:
    if c.get("peak_memory_mb") is None:
        return "–"
    delta = c.get("peak_memory_delta_mb")
    return f"{c['peak_memory_mb']:.0f}" + (f" (+{delta:.0f})" if delta is not None else "")


def _columns(doc: Mapping[str, Any]) -> list[str]:
    cols = list(doc.get("columns", {}))
    for c in doc["cells"]:
        cols += [k for k in c["metrics"] if k not in cols]
    return cols


def _primary(doc: Mapping[str, Any], cols: Sequence[str]) -> str | None:
    spec = doc.get("spec") or {}
    p = spec.get("primary_metric")
    return p if p in cols else (cols[0] if cols else None)


def _arrow(doc: Mapping[str, Any], col: str) -> str:
    info = doc.get("columns", {}).get(col)
    if info is None:
        return ""
    return " ↑" if info["higher_is_better"] else " ↓"


def _sort_key(doc: Mapping[str, Any], col: str | None):  # noqa: ANN202
    hib = bool(doc.get("columns", {}).get(col, {}).get("higher_is_better", False)) if col else False

    def key(c: Mapping[str, Any]) -> tuple[int, float]:
        v = c["metrics"].get(col) if col else None
        if v is None:
            return (1, 0.0)
        return (0, -v if hib else v)

    return key


def _nfe(c: Mapping[str, Any]) -> str:
    if c["nfe_target"] is None:
        return f"{_fmt(c['nfe'])} (adaptive)"
    if c["nfe"] is not None and c["nfe"] != c["nfe_target"]:
        return f"{c['nfe_target']} (ran {c['nfe']})"
    return str(c["nfe_target"])


def render_markdown(doc: Mapping[str, Any]) -> str:
    """Render one domain's results document as a Markdown leaderboard section."""
    suite, domain = doc["suite"], doc["domain"]
    lines = [f"## {domain} — suite `{suite}`", ""]
    spec = doc.get("spec") or {}
    if spec.get("description"):
        lines += [spec["description"], ""]
    env = doc["environment"]
    vers = env["versions"]
    lines += [
        f"Measured on `{env['device']}` ({env['torch_threads']} torch threads), torch {vers.get('torch')}, "
        f"flowsci {vers.get('flowsci')}, updated {doc['updated_at']}. Status: **{doc['status']}**.",
        "",
    ]
    if doc.get("error"):
        lines += [f"Domain failed: `{doc['error']}`", ""]
        return "\n".join(lines) + "\n"
    if spec:
        own = [f"`{m['name']}` {m['num_samples']}" for m in spec.get("methods", []) if "num_samples" in m]
        lines += [
            f"{spec['num_samples']} samples per cell{' (' + ', '.join(own) + ')' if own else ''}, seed {spec['seed']}, "
            f"default {spec['train_steps']} training steps.",
            "",
        ]
    cols = _columns(doc)
    primary = _primary(doc, cols)
    ok = [c for c in doc["cells"] if c["status"] == "ok"]
    if ok and primary:
        lines += [
            f"### Leaderboard (best cell per method by `{primary}`{_arrow(doc, primary)})",
            "",
            "| rank | method | solver | NFE | "
            + " | ".join(f"{c}{_arrow(doc, c)}" for c in cols)
            + " | train time | sampling / sample |",
            "|---|---|---|---|" + "---|" * len(cols) + "---|---|",
        ]
        for i, c in enumerate(best_cells(doc), 1):
            name = c["method"] + (" *(baseline)*" if c["baseline"] else "")
            lines.append(
                f"| {i} | {name} | {c['solver']} | {_nfe(c)} | "
                + " | ".join(_fmt(c["metrics"].get(k)) for k in cols)
                + f" | {_train_time(c)} | {format_time(c['sample_time_per_sample_s'])} |"
            )
        lines.append("")
    lines += [
        "### All cells",
        "",
        "| method | solver | NFE | "
        + " | ".join(f"{c}{_arrow(doc, c)}" for c in cols)
        + " | train steps/s | train time | sampling / sample | peak mem MB (Δ) | status |",
        "|---|---|---|" + "---|" * len(cols) + "---|---|---|---|---|",
    ]
    for c in doc["cells"]:
        name = c["method"] + (" *(baseline)*" if c["baseline"] else "")
        lines.append(
            f"| {name} | {c['solver']} | {_nfe(c)} | "
            + " | ".join(_fmt(c["metrics"].get(k)) for k in cols)
            + f" | {_fmt(c['train_steps_per_s'])} | {_train_time(c)}"
            + f" | {format_time(c['sample_time_per_sample_s'])} | {_mem(c)} | {c['status']} |"
        )
    lines.append("")
    if doc.get("noise_floor"):
        lines += [
            "Noise floor (a second held-out draw of the same size scored against the reference; a perfect "
            "sampler lands here): " + ", ".join(f"{k} = {_fmt(v)}" for k, v in doc["noise_floor"].items()),
            "",
        ]
    mem = next((c["memory_method"] for c in doc["cells"] if c.get("memory_method")), None)
    if mem:
        lines += [
            f"Peak memory is measured around the sampler call of each cell: {mem}; (+Δ) is the increase "
            "over the value at the call's start. Sampling time is wall-clock of the sampler call divided by the "
            "number of samples; train time is the wall-clock of the whole training of the method.",
            "",
        ]
    failed = [c for c in doc["cells"] if c["status"] != "ok"]
    if failed:
        lines += ["### Failed cells", ""]
        lines += [f"- `{c['id']}`: `{(c['error'] or '').splitlines()[0] if c['error'] else ''}`" for c in failed]
        lines.append("")
    methods = {m["name"]: m for m in spec.get("methods", [])}
    if methods:
        lines += [
            "Methods: "
            + "; ".join(
                f"**{n}**{' (baseline)' if m['baseline'] else ''}: {m['description'] or '–'}"
                for n, m in methods.items()
            ),
            "",
        ]
    metrics = [m for m in spec.get("metrics", []) if m.get("description")]
    if metrics:
        lines += ["Metrics: " + "; ".join(f"**{m['name']}**: {m['description']}" for m in metrics), ""]
    if doc["reference"]:
        rcols: list[str] = []
        for r in doc["reference"]:
            rcols += [k for k in r["metrics"] if k not in rcols]
        lines += [
            "### Reported elsewhere (not measured here; different hardware, budget and code)",
            "",
            "| method | NFE | " + " | ".join(rcols) + " | source | scale | note |",
            "|---|---|" + "---|" * len(rcols) + "---|---|---|",
        ]
        for r in doc["reference"]:
            nfe = _fmt(r.get("nfe")) + (f" ({r['solver']})" if r.get("solver") else "")
            lines.append(
                f"| {r['method']} | {nfe} | "
                + " | ".join(_fmt(r["metrics"].get(k)) for k in rcols)
                + f" | {r['source']} | {r['scale']} | {r.get('note', '')} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def write_plots(doc: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``<domain>_vs_nfe.png`` and ``<domain>_vs_time.png`` (one panel per metric) under ``out_dir``.

    Each (method, solver) is one line; adaptive-solver cells are single markers at their counted NFE.

    Returns:
        The written paths (empty if no cell finished).

    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = [c for c in doc["cells"] if c["status"] == "ok"]
    cols = [k for k in _columns(doc) if any(c["metrics"].get(k) is not None for c in ok)]
    if not ok or not cols:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in ok:
        series.setdefault((c["method"], c["solver"]), []).append(c)
    written = []
    for xname, xlabel, xkey in (
        ("nfe", "NFE (network evaluations)", lambda c: c["nfe"] if c["nfe"] is not None else c["nfe_target"]),
        ("time", "sampling wall-clock per sample [s]", lambda c: c["sample_time_per_sample_s"]),
    ):
        fig, axes = plt.subplots(1, len(cols), figsize=(4.2 * len(cols), 3.4), squeeze=False)
        for ax, col in zip(axes[0], cols, strict=True):
            for (method, solver), cells in sorted(series.items()):
                pts = sorted(
                    (xkey(c), c["metrics"].get(col))
                    for c in cells
                    if xkey(c) is not None and c["metrics"].get(col) is not None and xkey(c) > 0
                )
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                style = "--" if cells[0]["baseline"] else "-"
                ax.plot(xs, ys, style, marker="o", ms=3, label=f"{method} · {solver}")
            ax.set_xscale("log", base=2 if xname == "nfe" else 10)
            ys_all = [c["metrics"][col] for c in ok if c["metrics"].get(col) is not None]
            if ys_all and min(ys_all) > 0 and max(ys_all) / min(ys_all) > 30:
                ax.set_yscale("log")
            floor = (doc.get("noise_floor") or {}).get(col)
            if floor is not None and floor > 0:
                ax.axhline(floor, color="k", lw=0.8, ls=":", label="noise floor")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(col + _arrow(doc, col))
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"{doc['domain']} ({doc['suite']}): metrics vs {xname}")
        fig.tight_layout()
        path = out_dir / f"{doc['domain']}_vs_{xname}.png"
        try:
            atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, dpi=110))
        finally:
            plt.close(fig)
        written.append(path)
    return written


def sample_plot_path(out_dir: str | Path, domain: str, cell_id: str) -> Path:
    """Where a cell's sample figure goes: ``<out>/<suite>/plots/samples/<domain>/<cell id, '/' as '_'>.png``."""
    return Path(out_dir) / "plots" / "samples" / domain / (re.sub(r"[^A-Za-z0-9.=-]+", "_", cell_id) + ".png")


def best_cells(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The leaderboard: each method's best finished cell by the primary metric, best first."""
    primary = _primary(doc, _columns(doc))
    if not primary:
        return []
    key = _sort_key(doc, primary)
    best: dict[str, Mapping[str, Any]] = {}
    for c in sorted((c for c in doc["cells"] if c["status"] == "ok"), key=key):
        best.setdefault(c["method"], c)
    return sorted(best.values(), key=key)


def write_domain_report(doc: Mapping[str, Any], out_dir: str | Path, plots: bool = True) -> list[Path]:
    """Write ``<out_dir>/<domain>.md`` and (if ``plots``) its PNG plots under ``<out_dir>/plots/``."""
    out_dir = Path(out_dir)
    md = out_dir / f"{doc['domain']}.md"
    text = render_markdown(doc)
    if plots:
        pngs = write_plots(doc, out_dir / "plots")
        if pngs:
            text += "\n" + "\n".join(f"![{p.stem}](plots/{p.name})" for p in pngs) + "\n"
        figures = [(c, sample_plot_path(out_dir, doc["domain"], c["id"])) for c in best_cells(doc)]
        figures = [(c, p) for c, p in figures if p.is_file()]
        if figures:
            text += (
                "\n### Samples against the reference (best cell per method)\n\n"
                + "\n".join(f"![{c['id']}]({p.relative_to(out_dir).as_posix()})" for c, p in figures)
                + "\n"
            )
    else:
        pngs = []
    atomic_write_text(md, text)
    return [md, *pngs]


def write_index(out_dir: str | Path) -> Path:
    """Write ``<out_dir>/README.md``: one line per domain results file in ``out_dir``, with its status."""
    out_dir = Path(out_dir)
    rows = []
    for path in sorted(out_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
            ok = sum(c.get("status") == "ok" for c in doc.get("cells", []))
            rows.append(
                f"| [{doc['domain']}]({doc['domain']}.md) | {doc['status']} | {ok}/{len(doc.get('cells', []))} "
                f"| {doc['updated_at']} |"
            )
        except (OSError, ValueError, KeyError) as e:
            rows.append(f"| {path.stem} | unreadable ({e}) | – | – |")
    suite = out_dir.name
    text = "\n".join(
        [
            f"# flowsci bench — suite `{suite}`",
            "",
            "| domain | status | cells ok | updated |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    path = out_dir / "README.md"
    atomic_write_text(path, text)
    return path


def collect_results(paths: Sequence[str | Path]) -> list[Path]:
    """The results files named by ``paths``: JSON files as given, folders searched recursively for ``*.json``.

    Hidden folders (the runner's ``.cache``) are skipped; the list is sorted and free of duplicates.

    Raises:
        FileNotFoundError: A path does not exist.

    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += [q for q in p.rglob("*.json") if not any(part.startswith(".") for part in q.relative_to(p).parts)]
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such results file or folder: {p}")
    return sorted(set(found))


def _demote(markdown: str, levels: int = 1) -> str:
    """Move every ATX heading of ``markdown`` down by ``levels`` (``##`` -> ``###``), outside code fences."""
    out, fence = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
        if not fence and re.match(r"^#{1,5} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out) + "\n"


def render_report(
    docs: Sequence[Mapping[str, Any]],
    *,
    title: str = "Leaderboard",
    sources: Sequence[str] | None = None,
    command: str | None = None,
    plots: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> str:
    """One Markdown page from several results documents (``flowsci bench report``).

    The page has an index table (suite, domain, status, cells, date measured, results file), then one section per
    suite and, in it, :func:`render_markdown` of each domain with its headings moved one level down. Rows reported
    by papers stay in each domain's separate "reported elsewhere" table, never among the measured rows.

    Args:
        docs: Results documents (as written by ``flowsci bench``; :func:`flowsci.benchmarks.runner.load_result`).
        title: The page title (a level-1 heading).
        sources: For each document, the path or link of its results file (shown in the index).
        command: The command that regenerates the page (stated under the title).
        plots: ``(suite, domain) -> image links`` to show under the domain's section.

    Returns:
        The Markdown text (deterministic for given inputs, so a committed page can be checked against it).

    """
    if sources is not None and len(sources) != len(docs):
        raise ValueError(f"{len(sources)} sources for {len(docs)} results documents")
    order = sorted(range(len(docs)), key=lambda i: (docs[i]["suite"], docs[i]["domain"]))
    lines = [f"# {title}", ""]
    if command:
        lines += [
            "<!-- Generated file: do not edit by hand. -->",
            "",
            f"Generated by `{command}` from the committed results files below; rerun it when they change.",
            "",
        ]
    lines += [
        "Every number here was measured by `flowsci bench` on the machine named in its section, with the method "
        "and its baselines trained and sampled in the same run. Rows taken from papers appear only in the "
        "*Reported elsewhere* tables, marked as reported.",
        "",
    ]
    if not docs:
        return "\n".join([*lines, "No results files were given.", ""])
    lines += [
        "| suite | domain | status | cells ok | measured (UTC) | device | results file |",
        "|---|---|---|---|---|---|---|",
    ]
    for i in order:
        d = docs[i]
        ok = sum(c.get("status") == "ok" for c in d.get("cells", []))
        src = sources[i] if sources is not None else "–"
        src_cell = f"[`{Path(src).name}`]({src})" if sources is not None else src
        lines.append(
            f"| `{d['suite']}` | [{d['domain']}](#{_anchor(d)}) | {d['status']} | {ok}/{len(d.get('cells', []))} "
            f"| {str(d.get('updated_at', '–'))[:16].replace('T', ' ')} | `{d['environment']['device']}` | {src_cell} |"
        )
    lines.append("")
    suite = None
    for i in order:
        d = docs[i]
        if d["suite"] != suite:
            suite = d["suite"]
            lines += [f"## Suite `{suite}`", ""]
        section = _demote(render_markdown(d)).splitlines()
        section[0] = f"### {d['domain']} — suite `{d['suite']}` {{#{_anchor(d)}}}"
        lines += section
        for link in (plots or {}).get((d["suite"], d["domain"]), []):
            lines += [f"![{d['domain']} {d['suite']}]({link})", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _anchor(doc: Mapping[str, Any]) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{doc['suite']}-{doc['domain']}".lower()).strip("-")
