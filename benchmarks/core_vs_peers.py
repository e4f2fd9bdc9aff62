"""flowsci vs Meta's ``flow_matching`` and ``torchcfm`` on the same 2-D task, in one run.

``python -m flowsci.benchmarks.core_vs_peers [--steps 5000] [--threads 1] [--json out.json]``

Protocol (identical for every library):

- Task: N(0, I) -> two moons (``flowsci.data.sample_toy("moons")``: noise 0.2, ``x3 - 1``). The training
  batches are drawn once (``steps x batch`` points, one seed) and every library sees the same batches in the same
  order; each library draws its own noise ``x0`` and times ``t`` with its own code.
- Model: the same MLP (``flowsci.nets.MLP``: 3 x 256 SiLU on ``cat[x, t]``), the same initial weights (one
  network deep-copied), Adam 1e-3, no EMA, no gradient clipping, ``torch.set_num_threads(k)``.
- Training loops use each library's public API for the loss: flow_matching ``AffineProbPath(CondOTScheduler())``,
  torchcfm ``ConditionalFlowMatcher(sigma=0)`` (I-CFM) and ``ExactOptimalTransportConditionalFlowMatcher(sigma=0)``
  (OT-CFM), flowsci ``FlowMatching.compute_loss`` with the independent or minibatch-OT coupling, and flowsci through
  the Lightning ``Trainer`` (the user path: ``FlowMatching`` + ``Trainer.fit``, fed the same pre-drawn batches
  through a ``DataLoader`` that yields whole batches).
- Interleaving: libraries train round-robin in chunks of ``--chunk`` steps, in an order rotated every round (the
  manual loops run inside a callback of the Lightning run, whose clock is paused meanwhile), so load changes on a
  shared machine hit all of them alike.
  Training steps/s = steps / time spent in that library's steps.
- Sampling: from one fixed ``x0`` batch (``--eval`` points), with each library's own solver (flow_matching
  ``ODESolver``; torchcfm has none, so ``torchdiffeq.odeint`` as in its examples; flowsci ``solve_ode``), Euler at
  NFE 1, 2, 4, 8, 32 plus dopri5 (atol = rtol = 1e-5). NFE is counted by a wrapper around the network.
- Metrics against ``--eval`` fresh held-out moons: sliced W2 (512 projections) and RBF-MMD² (2000 points).

The peers are a benchmark-only extra (never runtime dependencies): ``pip install -c constraints.txt
flow_matching`` (CC-BY-NC) and ``pip install --no-deps torchcfm`` (its torchdyn -> torchvision dependency breaks
``import pytorch_lightning`` here). A missing peer is reported and skipped.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from flowsci.metrics import mmd2_rbf, sliced_wasserstein2

__all__ = ["NFES", "ROWS", "PeerResult", "format_tables", "main", "run"]

NFES = (1, 2, 4, 8, 32)


@dataclass
class PeerResult:
    """Measurements of one library/method."""

    name: str
    library: str
    coupling: str
    steps: int = 0
    train_time_s: float = 0.0
    final_loss: float | None = None
    sample_time_s: dict[str, float] = field(default_factory=dict)
    nfe: dict[str, int] = field(default_factory=dict)
    sliced_w2: dict[str, float] = field(default_factory=dict)
    mmd2: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def steps_per_s(self) -> float | None:
        """Training throughput."""
        return self.steps / self.train_time_s if self.train_time_s > 0 else None


class _Counted(nn.Module):
    """Wraps the MLP ``net(x, t)`` and counts forward calls (the NFE)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        return self.net(x, t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t)


# ------------------------------------------------------------------------------------------- training loops
class _ManualLoop:
    """A training loop stepping through the shared batches; ``run(n)`` does ``n`` steps and times them."""

    def __init__(
        self, result: PeerResult, net: nn.Module, loss_fn: Callable[[Tensor], Tensor], batches: Tensor
    ) -> None:
        self.result, self.net, self.loss_fn, self.batches = result, net, loss_fn, batches
        self.opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def run(self, n: int) -> None:
        r = self.result
        if r.error is not None:
            return
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                loss = self.loss_fn(self.batches[r.steps])
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                r.steps += 1
            r.train_time_s += time.perf_counter() - t0
            r.final_loss = float(loss.detach())
        except Exception as e:  # a broken peer must not stop the comparison
            r.error = f"training: {type(e).__name__}: {e}"


def _flow_matching_loop(net: nn.Module, batches: Tensor) -> _ManualLoop:
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())

    def loss_fn(x1: Tensor) -> Tensor:
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0])
        ps = path.sample(x_0=x0, x_1=x1, t=t)
        return torch.mean((net(ps.x_t, ps.t) - ps.dx_t) ** 2)

    return _ManualLoop(PeerResult("flow_matching CondOT", "flow_matching", "independent"), net, loss_fn, batches)


def _torchcfm_loop(net: nn.Module, batches: Tensor, ot: bool) -> _ManualLoop:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    fm = ExactOptimalTransportConditionalFlowMatcher(sigma=0.0) if ot else ConditionalFlowMatcher(sigma=0.0)

    def loss_fn(x1: Tensor) -> Tensor:
        x0 = torch.randn_like(x1)
        t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
        return torch.mean((net(xt, t) - ut) ** 2)

    name = "torchcfm OT-CFM σ=0" if ot else "torchcfm I-CFM σ=0"
    return _ManualLoop(PeerResult(name, "torchcfm", "minibatch OT" if ot else "independent"), net, loss_fn, batches)


def _flowsci_model(net: nn.Module, ot: bool) -> Any:
    from functools import partial

    from flowsci.couplings import IndependentCoupling, MinibatchOTCoupling
    from flowsci.module import FlowMatching
    from flowsci.paths import CondOTPath

    return FlowMatching(
        net=net,
        path=CondOTPath(),
        coupling=MinibatchOTCoupling() if ot else IndependentCoupling(),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        data_shape=[2],
    )


def _flowsci_loop(net: nn.Module, batches: Tensor, ot: bool) -> _ManualLoop:
    model = _flowsci_model(net, ot)

    def loss_fn(x1: Tensor) -> Tensor:
        return model.compute_loss(x1)[0]

    name = "flowsci FM + OT coupling" if ot else "flowsci FM"
    loop = _ManualLoop(
        PeerResult(name, "flowsci (compute_loss loop)", "minibatch OT" if ot else "independent"), net, loss_fn, batches
    )
    loop.model = model  # type: ignore[attr-defined]
    return loop


# ---------------------------------------------------------------------------------------------- sampling
def _sample(lib: str, counted: _Counted, x0: Tensor, nfe: int | None) -> Tensor:
    """Euler with ``nfe`` steps (or dopri5 if ``nfe`` is None) with the library's own solver."""
    method = "dopri5" if nfe is None else "euler"
    if lib == "flow_matching":
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper

        class _W(ModelWrapper):
            def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
                return self.model(x, t)

        solver = ODESolver(velocity_model=_W(counted))
        return solver.sample(
            x_init=x0,
            step_size=None if nfe is None else 1.0 / nfe,
            method=method,
            atol=1e-5,
            rtol=1e-5,
            time_grid=torch.tensor([0.0, 1.0]),
        )
    if lib == "torchcfm":
        from torchdiffeq import odeint

        grid = torch.tensor([0.0, 1.0]) if nfe is None else torch.linspace(0, 1, nfe + 1)
        return odeint(lambda t, x: counted(x, t), x0, grid, method=method, atol=1e-5, rtol=1e-5)[-1]
    from flowsci.solvers import solve_ode

    return solve_ode(lambda x, t: counted(x, t), x0, method=method, steps=nfe, atol=1e-5, rtol=1e-5).x


def _evaluate(r: PeerResult, net: nn.Module, x0: Tensor, ref: Tensor, repeats: int) -> None:
    lib = "flowsci" if r.library.startswith("flowsci") else r.library
    counted = _Counted(net).eval()
    try:
        with torch.no_grad():
            for nfe in (*NFES, None):
                key = "dopri5" if nfe is None else str(nfe)
                best = float("inf")
                for _ in range(repeats):
                    counted.calls = 0
                    t0 = time.perf_counter()
                    x = _sample(lib, counted, x0, nfe)
                    best = min(best, time.perf_counter() - t0)
                r.sample_time_s[key] = best
                r.nfe[key] = counted.calls
                r.sliced_w2[key] = sliced_wasserstein2(x, ref, num_projections=512, seed=0)
                r.mmd2[key] = mmd2_rbf(x[:2000], ref[:2000])
    except Exception as e:
        r.error = f"sampling: {type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------------ driver
def _lightning_with_interleave(
    net: nn.Module, batches: Tensor, chunk: int, others: Callable[[], None], result: PeerResult
) -> None:
    """Train flowsci through ``pl.Trainer``; every ``chunk`` steps the manual loops run (clock paused)."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Interleave(pl.Callback):
        paused = 0.0
        start = end = 0.0

        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(
            self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if trainer.global_step % chunk == 0:
                t0 = time.perf_counter()
                others()
                self.paused += time.perf_counter() - t0

        def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.end = time.perf_counter()

    model = _flowsci_model(net, ot=False)
    # the same pre-drawn batches as the manual loops, one [batch, 2] tensor per step (no per-sample collate)
    loader = DataLoader(TensorDataset(batches), batch_size=None, shuffle=False)
    cb = Interleave()
    trainer = pl.Trainer(
        max_steps=batches.shape[0],
        max_epochs=-1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, train_dataloaders=loader)
    result.steps = int(trainer.global_step)
    result.train_time_s = cb.end - cb.start - cb.paused
    loss = trainer.callback_metrics.get("train/loss")
    result.final_loss = float(loss) if loss is not None else None


ROWS = ("flow_matching", "torchcfm", "torchcfm-ot", "flowsci", "flowsci-ot", "flowsci-lightning")
"""Row keys accepted by ``--only``."""


def run(
    steps: int = 5000,
    batch: int = 256,
    eval_points: int = 4000,
    seed: int = 0,
    chunk: int = 250,
    lightning: bool = True,
    repeats: int = 3,
    log: Callable[[str], None] = print,
    only: Sequence[str] | None = None,
) -> list[PeerResult]:
    """Train and evaluate every available library on the shared task; returns one result per row.

    ``only`` restricts the rows to a subset of :data:`ROWS`.
    """
    rows = set(ROWS if only is None else only)
    if rows - set(ROWS):
        raise ValueError(f"unknown rows {sorted(rows - set(ROWS))}; choose from {ROWS}")
    lightning = lightning and "flowsci-lightning" in rows
    from flowsci.data import sample_toy
    from flowsci.nets import MLP

    torch.manual_seed(seed)
    batches = sample_toy("moons", steps * batch, seed=seed).reshape(steps, batch, 2)
    ref = sample_toy("moons", eval_points, seed=seed + 10_000)
    x0 = torch.randn(eval_points, 2, generator=torch.Generator().manual_seed(seed + 20_000))
    init = MLP(dim=2, hidden=256, depth=3, time_dim=0, activation="silu")

    loops: list[_ManualLoop] = []
    if importlib.util.find_spec("flow_matching") is None:
        log("flow_matching not installed (pip install flow_matching): skipped")
    elif "flow_matching" in rows:
        loops.append(_flow_matching_loop(copy.deepcopy(init), batches))
    if importlib.util.find_spec("torchcfm") is None:
        log("torchcfm not installed (pip install --no-deps torchcfm): skipped")
    else:
        if "torchcfm" in rows:
            loops.append(_torchcfm_loop(copy.deepcopy(init), batches, ot=False))
        if "torchcfm-ot" in rows:
            loops.append(_torchcfm_loop(copy.deepcopy(init), batches, ot=True))
    if "flowsci" in rows:
        loops.append(_flowsci_loop(copy.deepcopy(init), batches, ot=False))
    if "flowsci-ot" in rows:
        loops.append(_flowsci_loop(copy.deepcopy(init), batches, ot=True))

    rounds = [0]

    def round_robin() -> None:
        # rotate the order every round so no library always runs right after another one (cache/frequency bias)
        k = rounds[0] % max(len(loops), 1)
        rounds[0] += 1
        for loop in loops[k:] + loops[:k]:
            loop.run(min(chunk, steps - loop.result.steps))

    results = [loop.result for loop in loops]
    nets = [loop.net for loop in loops]
    t0 = time.perf_counter()
    if lightning:
        lres = PeerResult("flowsci FM (Lightning Trainer)", "flowsci (pl.Trainer)", "independent")
        lnet = copy.deepcopy(init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import logging

            logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
            try:
                _lightning_with_interleave(lnet, batches, chunk, round_robin, lres)
            except Exception as e:
                lres.error = f"training: {type(e).__name__}: {e}"
        results.append(lres)
        nets.append(lnet)
    while any(loop.result.steps < steps and loop.result.error is None for loop in loops):
        round_robin()
    log(f"trained {len(results)} models x {steps} steps in {time.perf_counter() - t0:.0f} s")
    for r, net in zip(results, nets, strict=True):
        _evaluate(r, net, x0, ref, repeats)
    # what a perfect sampler scores: a second held-out draw of the data against the same reference
    floor = PeerResult("held-out data (noise floor)", "data", "–")
    other = sample_toy("moons", eval_points, seed=seed + 10_001)
    for key in (*map(str, NFES), "dopri5"):
        floor.sliced_w2[key] = sliced_wasserstein2(other, ref, num_projections=512, seed=0)
        floor.mmd2[key] = mmd2_rbf(other[:2000], ref[:2000])
    results.append(floor)
    return results


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "–" if v is None else format(v, fmt)


def format_tables(results: Sequence[PeerResult], steps: int, batch: int, eval_points: int, threads: int) -> str:
    """Markdown tables: throughput/timing, sliced W2 per NFE, MMD² per NFE, and the target verdicts."""
    peers = [r for r in results if r.library not in ("data",) and not r.library.startswith("flowsci") and r.steps_per_s]
    fastest = max((r.steps_per_s for r in peers), default=None)
    lines = [
        f"Task N(0, I) → moons; MLP 3×256 SiLU, Adam 1e-3, batch {batch}, {steps} steps, {threads} torch "
        f"thread(s), {eval_points} evaluation points; Euler at the given NFE, dopri5 at atol = rtol = 1e-5.",
        "",
        "| method | library | coupling | train steps/s | × fastest peer | sampling NFE 32 (ms) | dopri5 NFE | "
        "final loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ratio = r.steps_per_s / fastest if fastest and r.steps_per_s else None
        t32 = r.sample_time_s.get("32")
        lines.append(
            f"| {r.name} | {r.library} | {r.coupling} | {_f(r.steps_per_s, '.1f')} | {_f(ratio, '.2f')} | "
            f"{_f(t32 * 1e3 if t32 is not None else None, '.1f')} | {r.nfe.get('dopri5', '–')} | "
            f"{_f(r.final_loss)} |"
        )
    for metric, title in (("sliced_w2", "sliced W2 ↓"), ("mmd2", "MMD² ↓")):
        lines += [
            "",
            f"| {title} | " + " | ".join(f"NFE {n}" for n in NFES) + " | dopri5 |",
            "|---|" + "---|" * (len(NFES) + 1),
        ]
        for r in results:
            vals = getattr(r, metric)
            fmt = ".3f" if metric == "sliced_w2" else ".5f"
            lines.append(
                f"| {r.name} | " + " | ".join(_f(vals.get(k), fmt) for k in (*map(str, NFES), "dopri5")) + " |"
            )
    errors = [r for r in results if r.error]
    if errors:
        lines += [""] + [f"- {r.name}: {r.error}" for r in errors]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints the tables (and writes ``--json``). Returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m flowsci.benchmarks.core_vs_peers", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5000, help="training steps per library (5000)")
    p.add_argument("--batch", type=int, default=256, help="batch size (256)")
    p.add_argument("--eval", dest="eval_points", type=int, default=4000, help="evaluation points (4000)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=250, help="round-robin chunk in steps (250)")
    p.add_argument("--repeats", type=int, default=3, help="sampling timings: best of N (3)")
    p.add_argument("--no-lightning", dest="lightning", action="store_false", help="skip the pl.Trainer row")
    p.add_argument("--only", default=None, help=f"comma-separated subset of rows: {','.join(ROWS)}")
    p.add_argument("--json", default=None, help="also write the raw results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    only = [k.strip() for k in args.only.split(",") if k.strip()] if args.only else None
    results = run(
        args.steps,
        args.batch,
        args.eval_points,
        args.seed,
        args.chunk,
        args.lightning,
        args.repeats,
        log=lambda s: print(s, file=sys.stderr),
        only=only,
    )
    print(format_tables(results, args.steps, args.batch, args.eval_points, args.threads), end="")
    if args.json:
        from pathlib import Path

        from flowsci.benchmarks.runner import write_json_atomic

        write_json_atomic(
            Path(args.json),
            {
                "args": vars(args),
                "results": [dict(r.__dict__, steps_per_s=r.steps_per_s) for r in results],
            },
        )
    return 0 if not any(r.error for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
