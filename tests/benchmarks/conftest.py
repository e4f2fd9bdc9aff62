r"""Fixtures of the benchmark tests: a tiny, exactly solvable flow and its BenchmarkSpec.

The data are :math:`x_1 \sim N(m, I)` in 2-D with :math:`m = (2, -1)`; the model's velocity is a learned
constant :math:`v_\theta(x, t) = b` and the prior is :math:`N(0, I)`. The flow-matching optimum under the
independent coupling is :math:`b^\star = E[x_1 - x_0] = m`, and Euler with any number of steps maps
:math:`x_0 \mapsto x_0 + b`, so a trained model samples :math:`N(m, I)` at every NFE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from flowsci.benchspec import EVALS_PER_STEP, BenchmarkSpec, Method, Metric, ReferenceRow, SampleRequest
from flowsci.metrics import sliced_wasserstein2

MEAN = torch.tensor([2.0, -1.0])


class ConstantVelocity(nn.Module):
    """:math:`v(x, t) = b` (a learned bias), shaped like ``x``."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(2))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.b.expand_as(x)


@dataclass
class FakeSolution:
    x: torch.Tensor
    nfe: int


class ShiftFlow(pl.LightningModule):
    """Flow matching with a constant velocity: loss :math:`|b - (x_1 - x_0)|^2`."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ConstantVelocity()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x1,) = batch
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0])
        return ((self.net(x1, t) - (x1 - x0)) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.05)

    @torch.no_grad()
    def sample(self, num: int, steps: int | None = None, solver: str | None = None, seed: int | None = None):
        gen = torch.Generator().manual_seed(seed or 0)
        x = torch.randn(num, 2, generator=gen)
        n_steps = steps if steps is not None else 5  # "adaptive": 5 evaluations
        per = EVALS_PER_STEP.get(solver or "euler", 1)
        nfe = 0
        for i in range(n_steps):
            v = None
            for _ in range(per):
                v = self.net(x, torch.full((num,), i / n_steps))
                nfe += 1
            x = x + v / n_steps
        return FakeSolution(x=x, nfe=nfe)


class GaussianDataModule(pl.LightningDataModule):
    def __init__(self, n: int = 512) -> None:
        super().__init__()
        self.n = n

    def setup(self, stage: str | None = None) -> None:
        g = torch.Generator().manual_seed(1)
        self.train_set = TensorDataset(MEAN + torch.randn(self.n, 2, generator=g))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=128, shuffle=True, drop_last=True)


def closed_form_fit(model: ShiftFlow, dm: GaussianDataModule, steps: int, device: torch.device) -> None:
    r"""Set :math:`b` to its optimum :math:`E[x_1] - E[x_0] = \bar x_1` (no optimiser: instant)."""
    dm.setup("fit")
    with torch.no_grad():
        model.net.b.copy_(dm.train_set.tensors[0].mean(0))


def reference(dm: Any, num: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 123)
    return MEAN + torch.randn(num, 2, generator=g)


def mean_error(x: torch.Tensor, y: torch.Tensor) -> float:
    return float((x.mean(0) - y.mean(0)).norm())


class Counters:
    """Counts builds and sampler calls, to check what resume reruns."""

    def __init__(self) -> None:
        self.builds: dict[str, int] = {}
        self.samples: dict[str, int] = {}


def make_spec(
    counters: Counters | None = None,
    fail: Callable[[SampleRequest], bool] | None = None,
    fail_training: bool = False,
    **overrides: Any,
) -> BenchmarkSpec:
    """A two-method spec on the shift flow; ``fail(request)`` makes the "shift" method's sampler raise."""
    counters = counters or Counters()

    def build(name: str) -> Callable[[Any], ShiftFlow]:
        def _build(dm: Any) -> ShiftFlow:
            counters.builds[name] = counters.builds.get(name, 0) + 1
            return ShiftFlow()

        return _build

    def sampler(name: str) -> Callable[[Any, SampleRequest], Any]:
        def _sample(model: ShiftFlow, req: SampleRequest) -> Any:
            counters.samples[name] = counters.samples.get(name, 0) + 1
            if fail is not None and name == "shift" and fail(req):
                raise RuntimeError(f"injected failure at nfe={req.nfe}")
            return model.sample(req.num, steps=req.steps, solver=req.solver, seed=req.seed)

        return _sample

    def broken_fit(model: Any, dm: Any, steps: int, device: torch.device) -> None:
        raise ValueError("injected training failure")

    kwargs: dict[str, Any] = dict(
        name="fake",
        description="N(0, I) -> N(m, I) with a constant velocity",
        datamodule=GaussianDataModule,
        reference_data=reference,
        methods=[
            Method(
                "shift",
                build=build("shift"),
                fit=broken_fit if fail_training else closed_form_fit,
                sample=sampler("shift"),
                description="closed-form optimum",
            ),
            Method(
                "untrained",
                build=build("untrained"),
                baseline=True,
                train_steps=0,
                sample=sampler("untrained"),
                description="b = 0 (samples the prior)",
            ),
        ],
        metrics=[
            Metric("mean_error", mean_error, description="|mean(x) - mean(y)|"),
            Metric("sliced_w2", lambda x, y: sliced_wasserstein2(x, y, num_projections=64)),
        ],
        num_samples=400,
        nfe_grid=(1, 2, 4),
        solvers=("euler", "midpoint"),
        train_steps=10,
        references=[ReferenceRow("oracle", {"mean_error": 0.0}, source="closed form", scale="any n")],
        warmup_samples=0,
    )
    kwargs.update(overrides)
    return BenchmarkSpec(**kwargs)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def fakes() -> Any:
    """The helpers above, as a namespace (test modules must not import ``conftest`` by name)."""
    import types

    return types.SimpleNamespace(
        make_spec=make_spec,
        Counters=Counters,
        MEAN=MEAN,
        ShiftFlow=ShiftFlow,
        GaussianDataModule=GaussianDataModule,
        reference=reference,
        closed_form_fit=closed_form_fit,
    )
