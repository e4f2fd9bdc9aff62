"""The ``toy2d`` benchmark: N(0, I) -> two moons with the core :class:`~flowsci.module.FlowMatching`.

Two methods share the network (MLP 3x256 SiLU on ``cat[x, t]``), optimiser (Adam 1e-3), batch (256), gradient
clipping (1.0) and training budget, and differ only in the coupling:

- ``fm-ot``: minibatch optimal-transport coupling (:class:`~flowsci.couplings.MinibatchOTCoupling`);
- ``fm-indep`` (baseline): independent coupling (rectified flow / I-CFM with sigma = 0).

Each is sampled with Euler, midpoint and RK4 at matched NFE and with dopri5, and scored against fresh
held-out moons (a draw with its own seed, independent of the train/val/test splits) by sliced W2, RBF-MMD² and
the exact W2 (POT). Reference rows: none, since no published number uses this exact task and budget.
"""

from __future__ import annotations

from typing import Any

import torch

from flowsci.benchspec import BenchmarkSpec, Method, Metric
from flowsci.metrics import mmd2_rbf, sliced_wasserstein2, wasserstein2_exact

__all__ = ["REFERENCE_SEED_OFFSET", "build_flow_matching", "reference_moons", "spec"]

REFERENCE_SEED_OFFSET = 10_000
"""The held-out reference is drawn with seed ``spec.seed + REFERENCE_SEED_OFFSET`` (train/val/test use 0, 1, 2)."""

_SIZES: dict[str, dict[str, Any]] = {
    # ~10 s on one core: 2 methods x (euler 2,8 + midpoint 2,8) = 8 cells
    "smoke": {
        "train_steps": 60,
        "num_samples": 500,
        "solvers": ("euler", "midpoint"),
        "nfe_grid": (2, 8),
        "num_train": 4096,
        "ema": False,
    },
    # ~5 min on one core: 2 methods x 16 cells
    "quick": {
        "train_steps": 3000,
        "num_samples": 4000,
        "solvers": ("euler", "midpoint", "rk4", "dopri5"),
        "nfe_grid": (1, 2, 4, 8, 16, 32),
        "num_train": 20_000,
        "ema": True,
    },
    "full": {
        "train_steps": 20_000,
        "num_samples": 10_000,
        "solvers": ("euler", "midpoint", "rk4", "dopri5"),
        "nfe_grid": (1, 2, 4, 8, 16, 32, 64, 128),
        "num_train": 100_000,
        "ema": True,
    },
}
_METRIC_POINTS = 2000  # MMD and exact W2 are computed on the first 2000 points (O(n^2) / O(n^3))


def build_flow_matching(coupling: str) -> Any:
    """The benchmarked model: FlowMatching(MLP 3x256 SiLU, CondOT path, uniform t, ``coupling``, Adam 1e-3).

    Args:
        coupling: ``"ot"`` (minibatch OT) or ``"independent"``.

    """
    from functools import partial

    from flowsci.couplings import IndependentCoupling, MinibatchOTCoupling
    from flowsci.module import FlowMatching
    from flowsci.nets import MLP
    from flowsci.paths import CondOTPath

    couplings = {"ot": MinibatchOTCoupling, "independent": IndependentCoupling}
    return FlowMatching(
        net=MLP(dim=2, hidden=256, depth=3, activation="silu"),
        path=CondOTPath(),
        coupling=couplings[coupling](),
        optimizer=partial(torch.optim.Adam, lr=1e-3),
        data_shape=[2],
    )


def reference_moons(datamodule: Any, num: int, seed: int) -> torch.Tensor:
    """Held-out reference: ``num`` fresh points of the data module's distribution ``[num, 2]``."""
    from flowsci.data import sample_toy

    return sample_toy(datamodule.dataset, num, seed=seed + REFERENCE_SEED_OFFSET)


def _sliced_w2(x: torch.Tensor, y: torch.Tensor) -> float:
    return sliced_wasserstein2(x, y, num_projections=512, seed=0)


def _mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    return mmd2_rbf(x[:_METRIC_POINTS], y[:_METRIC_POINTS])


def _w2(x: torch.Tensor, y: torch.Tensor) -> float:
    return wasserstein2_exact(x[:_METRIC_POINTS], y[:_METRIC_POINTS])


def spec(suite: str) -> BenchmarkSpec:
    """The toy2d benchmark sized for ``suite`` (``"smoke"``, ``"quick"`` or ``"full"``)."""
    if suite not in _SIZES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(_SIZES)}")
    size = _SIZES[suite]

    def datamodule() -> Any:
        from flowsci.data import Toy2DDataModule

        return Toy2DDataModule(dataset="moons", num_train=size["num_train"], num_val=512, batch_size=256, seed=0)

    def callbacks() -> list[Any]:
        if not size["ema"]:
            return []
        from flowsci.callbacks import EMA

        return [EMA(decay=0.999)]

    return BenchmarkSpec(
        name="toy2d",
        description=(
            "N(0, I) → two moons (noise 0.2, ×3 − 1) in 2-D; FlowMatching with an MLP 3×256 SiLU on cat[x, t], "
            "Adam 1e-3, batch 256, gradient clip 1.0"
            + (", EMA 0.999" if size["ema"] else "")
            + "; minibatch-OT coupling vs the independent coupling (baseline)."
        ),
        datamodule=datamodule,
        reference_data=reference_moons,
        methods=[
            Method(
                "fm-ot",
                build=lambda dm: build_flow_matching("ot"),
                callbacks=callbacks,
                description="CondOT path + minibatch OT coupling (OT-CFM)",
            ),
            Method(
                "fm-indep",
                build=lambda dm: build_flow_matching("independent"),
                baseline=True,
                callbacks=callbacks,
                description="CondOT path + independent coupling (rectified flow / I-CFM)",
            ),
        ],
        metrics=[
            Metric("sliced_w2", _sliced_w2, description="sliced W2, 512 projections, all samples"),
            Metric("mmd2", _mmd2, description=f"RBF MMD² (bandwidths 0.1–5) on the first {_METRIC_POINTS} points"),
            Metric("w2", _w2, description=f"exact W2 (POT emd) on the first {_METRIC_POINTS} points"),
        ],
        num_samples=size["num_samples"],
        nfe_grid=size["nfe_grid"],
        solvers=size["solvers"],
        train_steps=size["train_steps"],
        seed=0,
        trainer_kwargs={"gradient_clip_val": 1.0},
        primary_metric="sliced_w2",
        noise_floor=True,
    )
