"""The peer comparison runs end to end on a tiny budget (peers are used when installed, skipped otherwise)."""

from __future__ import annotations

import importlib.util

from flowsci.benchmarks.core_vs_peers import NFES, format_tables, run


def test_core_vs_peers_tiny_run() -> None:
    results = run(steps=20, batch=64, eval_points=300, chunk=10, lightning=True, repeats=1, log=lambda s: None)
    names = [r.name for r in results]
    assert {"flowsci FM", "flowsci FM + OT coupling", "flowsci FM (Lightning Trainer)"} <= set(names)
    if importlib.util.find_spec("flow_matching") is not None:
        assert "flow_matching CondOT" in names
    if importlib.util.find_spec("torchcfm") is not None:
        assert {"torchcfm I-CFM σ=0", "torchcfm OT-CFM σ=0"} <= set(names)
    floor = results.pop()
    assert floor.library == "data" and floor.steps_per_s is None
    assert all(v > 0 for v in floor.sliced_w2.values())  # two finite draws never coincide
    for r in results:
        assert r.error is None, (r.name, r.error)
        assert r.steps == 20 and r.steps_per_s > 0
        # each library's Euler solver made exactly NFE network calls, counted by the wrapper
        assert all(r.nfe[str(n)] == n for n in NFES)
        assert r.nfe["dopri5"] >= 6  # at least one accepted dopri5 step
        assert all(v >= 0 for v in r.sliced_w2.values()) and len(r.mmd2) == len(NFES) + 1
    text = format_tables([*results, floor], steps=20, batch=64, eval_points=300, threads=1)
    assert "| held-out data (noise floor) |" in text
    assert text.count("| flowsci FM |") == 3  # one row in each of the three tables
