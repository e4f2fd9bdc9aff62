"""``flowsci bench``: run benchmark suites and compare results files.

Usage::

    flowsci bench --suite {smoke,quick,full} [--domains a,b] [--out results/] [--resume | --force]
                  [--threads N] [--device auto|cpu|cuda] [--no-plots] [--no-progress]
    flowsci bench --list
    flowsci bench compare A.json B.json [--rtol 0.05] [--time-rtol 0.25] [--all] [--fail-on-regression]
    flowsci bench report RESULTS... [--out PAGE.md] [--plots DIR] [--title T] [--check]

``flowsci bench`` (the lead's console script) dispatches here with the arguments after ``bench``; the same is
available as ``python -m flowsci.benchmarks.cli``. Exit status: 0 if every cell finished, 1 if any cell or
domain failed (or, for ``compare --fail-on-regression``, if anything regressed; for ``report --check``, if the
page is out of date), 2 on bad usage or input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsci bench",
        description="Run flowsci benchmark suites (see also: flowsci bench compare A.json B.json).",
    )
    p.add_argument(
        "--suite",
        choices=["smoke", "quick", "full"],
        default="smoke",
        help="smoke: seconds per domain (CI); quick: <= ~15 min per domain on 2 CPU cores; full: paper "
        "scale (default: smoke)",
    )
    p.add_argument(
        "--domains", default=None, help="comma-separated domains (default: every registered domain that is installed)"
    )
    p.add_argument("--out", default="results", help="results root; files go to <out>/<suite>/ (default: results)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        dest="force",
        action="store_false",
        default=False,
        help="keep finished cells and run the rest (default)",
    )
    mode.add_argument("--force", dest="force", action="store_true", help="rerun every cell and retrain")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list registered domains and exit")
    return p


def _compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsci bench compare", description="Compare two results files (B against A), regressions first."
    )
    p.add_argument("a", help="old results file (A.json)")
    p.add_argument("b", help="new results file (B.json)")
    p.add_argument("--rtol", type=float, default=0.05, help="relative tolerance of metrics and NFE (0.05)")
    p.add_argument("--time-rtol", type=float, default=0.25, help="relative tolerance of time/memory (0.25)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute differences below this are unchanged")
    p.add_argument("--all", dest="show_unchanged", action="store_true", help="also list unchanged values")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 if anything regressed")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsci bench report",
        description="Render committed results files (JSON written by flowsci bench) into one Markdown page.",
    )
    p.add_argument("results", nargs="+", help="results files or folders (searched recursively for *.json)")
    p.add_argument("--out", default=None, help="write the page here (default: print it)")
    p.add_argument("--title", default="Leaderboard", help="page title (default: Leaderboard)")
    p.add_argument(
        "--plots",
        default=None,
        help="also write each domain's metric-vs-NFE plot into this folder and show it on the page (needs --out)",
    )
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if --out differs from what would be written"
    )
    return p


def _report(argv: Sequence[str]) -> int:
    import os

    from flowsci.benchmarks.report import collect_results, render_report, write_plots
    from flowsci.benchmarks.runner import load_result
    from flowsci.io import atomic_write_text

    args = _report_parser().parse_args(argv)
    if (args.check or args.plots) and not args.out:
        print("flowsci bench report: --check and --plots need --out", file=sys.stderr)
        return 2
    try:
        paths = collect_results(args.results)
        docs = [load_result(p) for p in paths]
    except (OSError, ValueError) as e:
        print(f"flowsci bench report: {e}", file=sys.stderr)
        return 2
    base = Path(args.out).resolve().parent if args.out else Path.cwd()
    sources = [Path(os.path.relpath(p.resolve(), base)).as_posix() for p in paths]
    plots: dict[tuple[str, str], list[str]] = {}
    if args.plots and not args.check:
        for doc in docs:
            folder = Path(args.plots) / doc["suite"]
            written = [p for p in write_plots(doc, folder) if p.stem.endswith("_vs_nfe")]
            plots[(doc["suite"], doc["domain"])] = [
                Path(os.path.relpath(p.resolve(), base)).as_posix() for p in written
            ]
    elif args.plots:  # --check: link the plots that a normal run would have written
        for doc in docs:
            png = Path(args.plots) / doc["suite"] / f"{doc['domain']}_vs_nfe.png"
            if png.is_file():
                plots[(doc["suite"], doc["domain"])] = [Path(os.path.relpath(png.resolve(), base)).as_posix()]
    command = " ".join(["flowsci bench report", *args.results] + (["--out", args.out] if args.out else []))
    command += f" --plots {args.plots}" if args.plots else ""
    command += f" --title '{args.title}'" if args.title != "Leaderboard" else ""
    text = render_report(docs, title=args.title, sources=sources, command=command, plots=plots)
    if args.check:
        current = Path(args.out).read_text() if Path(args.out).is_file() else None
        if current != text:
            print(f"flowsci bench report: {args.out} is out of date; regenerate it with: {command}", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date ({len(docs)} results files)")
        return 0
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out} from {len(docs)} results files")
    else:
        print(text, end="")
    return 0


def _compare(argv: Sequence[str]) -> int:
    from flowsci.benchmarks.compare import compare_results, format_changes
    from flowsci.benchmarks.runner import load_result

    args = _compare_parser().parse_args(argv)
    try:
        a, b = load_result(args.a), load_result(args.b)
    except (OSError, ValueError) as e:
        print(f"flowsci bench compare: {e}", file=sys.stderr)
        return 2
    header = {}
    if (a["suite"], a["domain"]) != (b["suite"], b["domain"]):
        header["warning"] = f"comparing {a['suite']}/{a['domain']} with {b['suite']}/{b['domain']}"
    if a["environment"]["device"] != b["environment"]["device"]:
        header["note"] = (
            f"different devices ({a['environment']['device']} vs {b['environment']['device']}): "
            "timings are not comparable"
        )
    changes = compare_results(a, b, rtol=args.rtol, time_rtol=args.time_rtol, atol=args.atol)
    print(format_changes(changes, args.a, args.b, show_unchanged=args.show_unchanged, header=header), end="")
    if args.fail_on_regression and any(c.kind == "regression" for c in changes):
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``flowsci bench``; ``argv`` are the arguments after ``bench``. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return _compare(argv[1:])
    if argv and argv[0] == "report":
        return _report(argv[1:])
    args = _run_parser().parse_args(argv)
    from flowsci.benchmarks.registry import DOMAINS, available_domains

    if args.list:
        present = set(available_domains())
        width = max(map(len, DOMAINS))
        for name, module in DOMAINS.items():
            print(f"{name:<{width}}  {module}{'' if name in present else '  (not installed)'}")
        return 0
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    unknown = [d for d in domains or [] if d not in DOMAINS]
    if unknown:
        print(f"flowsci bench: unknown domain(s) {unknown}; registered: {sorted(DOMAINS)}", file=sys.stderr)
        return 2
    from flowsci.benchmarks.runner import run_benchmarks

    try:
        docs = run_benchmarks(
            args.suite,
            domains,
            args.out,
            force=args.force,
            device=args.device,
            threads=args.threads,
            progress=args.progress,
            plots=args.plots,
        )
    except ValueError as e:  # e.g. an unreadable results file on --resume
        print(f"flowsci bench: {e}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) / args.suite
    for name, doc in docs.items():
        ok = sum(c["status"] == "ok" for c in doc["cells"])
        extra = f" — {doc['error']}" if doc.get("error") else ""
        print(
            f"{args.suite}/{name}: {doc['status']} ({ok}/{len(doc['cells'])} cells ok) -> "
            f"{out_dir / (name + '.json')}{extra}"
        )
    print(f"leaderboard: {out_dir / 'README.md'}")
    return 0 if docs and all(d["status"] == "ok" for d in docs.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
