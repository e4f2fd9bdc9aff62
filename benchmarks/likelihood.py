"""Likelihood and inversion benchmark: toy2d NLL vs Meta flow_matching, exact vs Hutchinson cost, round trips.

Run: ``nice python -m flowsci.benchmarks.likelihood`` (CPU, a few minutes). Prints markdown tables:

1. toy2d (8 Gaussians) NLL in bits/dim of one trained MLP flow, by flowsci and by ``flow_matching``'s
   ``ODESolver.compute_likelihood`` on the same network (skipped when ``flow_matching`` is not installed: the
   ``[bench]`` extra);
2. wall time per sample of the log-likelihood with the exact divergence and with Hutchinson (1 probe) at
   dimension 2, 64 and 1024 (an untrained MLP, 4 Euler steps);
3. invert-then-generate reconstruction error per solver at equal NFE, on toy2d and on the shipped ReQFlow
   protein-backbone model (``ReQFlow.pretrained()``, its velocity without self-conditioning).
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import torch
from torch import Tensor

from flowsci.inversion import INVERSION_SOLVERS, round_trip
from flowsci.likelihood import log_prob
from flowsci.module import FlowMatching
from flowsci.nets import MLP


def eight_gaussians(n: int, generator: torch.Generator) -> Tensor:
    """Points ``[n, 2]`` from 8 Gaussians (std 0.2) on a circle of radius 2."""
    k = torch.randint(0, 8, (n,), generator=generator)
    ang = k.float() * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    return centres + 0.2 * torch.randn(n, 2, generator=generator)


def train_toy2d(steps: int = 1500, seed: int = 0) -> FlowMatching:
    """A small CondOT flow on 8 Gaussians (MLP 2x128), trained with Adam for ``steps`` batches of 256."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = FlowMatching(MLP(dim=2, hidden=128, depth=3, time_dim=32), data_shape=[2])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in range(steps):
        loss, _ = model.compute_loss(eight_gaussians(256, g), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def nll_table(model: FlowMatching, n: int = 500, steps: int = 50) -> list[str]:
    """Bits/dim of flowsci and flow_matching on held-out toy2d points (RK4, exact and Hutchinson)."""
    x = eight_gaussians(n, torch.Generator().manual_seed(123))
    rows = ["| implementation | estimator | solver | bits/dim | NLL (nats) | time (s) |", "|---|---|---|---|---|---|"]
    for est in ("exact", "hutchinson"):
        t0 = time.perf_counter()
        res = log_prob(model.velocity, x, steps=steps, method="rk4", estimator=est, num_probes=1, seed=0)
        dt = time.perf_counter() - t0
        rows.append(
            f"| flowsci | {est} | rk4 x{steps} | {res.bits_per_dim.mean():.4f} | {res.nll.mean():.4f} | {dt:.2f} |"
        )
    try:
        from flow_matching.solver import ODESolver
        from flow_matching.utils import ModelWrapper
    except ImportError:
        rows.append("| flow_matching | - | - | not installed (pip install flow_matching) | - | - |")
        return rows

    class Wrapped(ModelWrapper):
        def forward(self, x: Tensor, t: Tensor, **extras: Any) -> Tensor:
            return self.model.velocity(x, t.expand(x.shape[0]).to(x))

    solver = ODESolver(velocity_model=Wrapped(model))

    def log_p0(x0: Tensor) -> Tensor:
        return -0.5 * (x0**2).sum(1) - math.log(2 * math.pi)

    for exact in (True, False):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        _, lp = solver.compute_likelihood(
            x_1=x,
            log_p0=log_p0,
            step_size=1.0 / steps,
            method="rk4",
            exact_divergence=exact,
            time_grid=torch.tensor([1.0, 0.0]),
        )
        dt = time.perf_counter() - t0
        name = "exact" if exact else "hutchinson"
        rows.append(
            f"| flow_matching 1.0.10 | {name} | rk4 x{steps} | {(-lp / (2 * math.log(2))).mean():.4f} | "
            f"{(-lp).mean():.4f} | {dt:.2f} |"
        )
    return rows


def cost_table(dims: tuple[int, ...] = (2, 64, 1024), batch: int = 4, steps: int = 4) -> list[str]:
    """Wall time per sample of exact vs Hutchinson divergence (untrained MLP of width 256, Euler steps)."""
    rows = ["| dim | exact (s/sample) | hutchinson, 1 probe (s/sample) | ratio |", "|---|---|---|---|"]
    for d in dims:
        torch.manual_seed(0)
        net = MLP(dim=d, hidden=256, depth=3)
        model = FlowMatching(net, data_shape=[d]).eval()
        x = torch.randn(batch, d)
        times = {}
        for est in ("exact", "hutchinson"):
            t0 = time.perf_counter()
            log_prob(model.velocity, x, steps=steps, method="euler", estimator=est, seed=0)
            times[est] = (time.perf_counter() - t0) / batch
        rows.append(
            f"| {d} | {times['exact']:.4f} | {times['hutchinson']:.4f} | {times['exact'] / times['hutchinson']:.0f} |"
        )
    return rows


SOLVERS = ("euler", "midpoint", "rf_solver", "taylor2_fd", "rk4")


def toy2d_inversion_table(model: FlowMatching, n: int = 500, nfes: tuple[int, ...] = (8, 16, 32)) -> list[str]:
    """Round-trip RMS error on toy2d data per solver and NFE (each direction)."""
    x = eight_gaussians(n, torch.Generator().manual_seed(7))
    rows = ["| NFE per direction | " + " | ".join(SOLVERS) + " |", "|---" * (len(SOLVERS) + 1) + "|"]
    with torch.no_grad():
        for nfe in nfes:
            errs = [
                round_trip(model.velocity, x, steps=nfe // INVERSION_SOLVERS[s], solver=s)["error"].mean()
                for s in SOLVERS
            ]
            rows.append(f"| {nfe} | " + " | ".join(f"{e:.2e}" for e in errs) + " |")
    return rows


def protein_inversion_table(lengths: tuple[int, ...] = (40, 60), nfes: tuple[int, ...] = (10, 20)) -> list[str]:
    """Round trips on ReQFlow backbones generated by the shipped model (translation RMSD in Å, rotation in deg)."""
    from flowsci.domains.proteins import ReQFlow
    from flowsci.domains.proteins.flow import ANG_PER_NM

    model = ReQFlow.pretrained().eval()
    lmax = max(lengths)
    mask = (torch.arange(lmax)[None] < torch.tensor(lengths)[:, None]).float()
    res_idx = torch.arange(lmax).expand(len(lengths), lmax)
    with torch.no_grad():
        x0 = model.sample_prior(torch.empty(()), {"mask": mask}, generator=torch.Generator().manual_seed(0))
        from flowsci.inversion import reconstruct

        x1 = reconstruct(
            model.velocity, x0, steps=100, solver="euler", manifold=model.manifold, t_min=model.t_min,
            mask=mask.bool(), res_idx=res_idx,
        ).x  # fmt: skip
    rows = ["| NFE per direction | solver | trans. RMSD (Å) | rot. error (deg) |", "|---|---|---|---|"]
    mb = mask.bool()
    with torch.no_grad():
        for nfe in nfes:
            for s in SOLVERS:
                out = round_trip(
                    model.velocity, x1, steps=nfe // INVERSION_SOLVERS[s], solver=s, manifold=model.manifold,
                    t_min=model.t_min, mask=mb, res_idx=res_idx,
                )  # fmt: skip
                xh = out["x1_hat"]
                tr = ((xh[..., :3] - x1[..., :3]) ** 2).sum(-1)[mb].mean().sqrt() * ANG_PER_NM
                rot = model.so3.dist(xh[..., 3:], x1[..., 3:])[mb].mean() * 180 / math.pi
                rows.append(f"| {nfe} | {s} | {tr:.3f} | {rot:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=1500)
    p.add_argument("--skip-protein", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    t0 = time.perf_counter()
    model = train_toy2d(a.train_steps)
    print(f"trained toy2d flow in {time.perf_counter() - t0:.1f} s\n")
    print("\n".join(nll_table(model)) + "\n")
    print("\n".join(cost_table()) + "\n")
    print("\n".join(toy2d_inversion_table(model)) + "\n")
    if not a.skip_protein:
        print("\n".join(protein_inversion_table()) + "\n")


if __name__ == "__main__":
    main()
