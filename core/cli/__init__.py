"""The ``flowsci`` console script: LightningCLI verbs plus ``sample``, ``reflow``, ``bench`` and ``configs``.

The CLI sits above everything (core ← domains ← benchmarks ← cli) and nothing imports it. ``flowsci
fit|validate|test|predict --config ...`` is a :class:`~pytorch_lightning.cli.LightningCLI` in subclass mode
(:mod:`flowsci.cli.fit`); ``flowsci sample`` (:mod:`flowsci.cli.sample`) writes a trained model's samples in the
field's native formats; ``flowsci reflow`` (:mod:`flowsci.cli.reflow`) rectifies a trained flow; ``flowsci bench``
is the benchmark runner (:mod:`flowsci.benchmarks.cli`); ``flowsci configs`` lists the shipped configs.

Bad input ends in one line, ``flowsci <verb>: error: <file or argument>: <problem>``, and exit code 2;
``--traceback`` shows the full traceback instead. ``--help`` and ``--version`` answer without importing torch.
"""

from __future__ import annotations

import sys

__all__ = ["main"]

LIGHTNING_VERBS = ("fit", "validate", "test", "predict")
HELP = """usage: flowsci {fit,validate,test,predict,sample,likelihood,reflow,bench,configs} ... [--traceback]

flowsci: flow matching for science.

  fit|validate|test|predict --config CONFIG   LightningCLI (CONFIG: a YAML file or a shipped config such as
                                              toy2d/fm.yaml; `flowsci fit --help` lists every option)
  sample --ckpt CKPT | --run DIR --out DIR    samples of a trained model in its native formats, and a figure
  reflow --ckpt CKPT --out DIR                rectify a trained flow (and distil it to few steps)
  likelihood --ckpt CKPT --data F --out DIR   per-sample log-likelihoods (nats, bits/dim) of data in F
  bench --suite smoke|quick|full              the benchmark leaderboard
  configs                                     list the shipped configs

  --version      print the version
  --traceback    show the full traceback of an error instead of one line
Each verb takes --help.
"""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``flowsci`` console script (``argv``: arguments without the program name)."""
    from_sys = argv is None
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    args = [a for a in args if a != "--traceback"]
    if not args or args[0] in ("-h", "--help"):
        print(HELP, end="")
        return
    if args[0] == "--version":
        from flowsci import __version__

        print(f"flowsci {__version__}")
        return
    verb = args[0]
    from flowsci.errors import FlowsciError

    try:
        if verb == "sample":
            from flowsci.cli.sample import run

            run(args[1:])
        elif verb == "likelihood":
            from flowsci.cli.likelihood import run

            run(args[1:])
        elif verb == "reflow":
            from flowsci.cli.reflow import run

            run(args[1:])
        elif verb == "bench":
            from flowsci.benchmarks.cli import main as bench_main

            raise SystemExit(bench_main(args[1:]))
        elif verb == "configs":
            from flowsci.cli.fit import shipped_configs

            print("\n".join(shipped_configs()))
        elif verb in LIGHTNING_VERBS:
            from flowsci.cli.fit import run

            run(args, from_sys=from_sys)
        else:
            print(f"flowsci: error: unknown verb {verb!r}\n\n{HELP}", end="", file=sys.stderr)
            raise SystemExit(2)
    except (FlowsciError, FileNotFoundError, ValueError) as err:
        if show_traceback:
            raise
        print(f"flowsci {verb}: error: {err} (--traceback for details)", file=sys.stderr)
        raise SystemExit(2) from err
