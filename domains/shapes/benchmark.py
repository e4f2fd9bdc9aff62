"""``flowsci bench`` spec of the shapes domain: class-conditional generation of the procedural family.

Rows: the Mosaic-SDF flow (``msdf``), the dense truncated-SDF grid flow (``grid-sdf``) and the point-cloud flow
(``pointcloud``), all with the same transformer, path, optimiser and training budget, each sampled at CFG
:math:`w = 1` and (``-cfg2`` rows, same weights) :math:`w = 2`; ``msdf-fit`` decodes the mosaics fitted to the
reference meshes (the representation's own floor, and its fitting speed); ``msdf-reflow`` (quick, full) is the
``msdf`` flow after one reflow (:func:`flowsci.reflow.rectify`), sampled at 1 and 2 NFE. Metrics: MMD-CD, COV-CD,
1-NNA-CD overall and 1-NNA-CD per class, validity, seconds per shape split into sampling and meshing. The noise
floor is a second seeded draw of reference shapes (data-vs-data).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch

from flowsci.benchspec import BenchmarkSpec, Method, Metric, SampleRequest, trainer_device
from flowsci.callbacks import EMA
from flowsci.domains.shapes.data import CLASSES, ShapesDataModule, ShapeSet
from flowsci.domains.shapes.flow import GridSDFFlow, MosaicFlow, PointCloudFlow, ShapeSolution
from flowsci.domains.shapes.metrics import evaluate
from flowsci.domains.shapes.model import SetTransformer
from flowsci.domains.shapes.mosaic import MosaicSDF
from flowsci.guidance import ConditionDropout
from flowsci.module import QUIET_TRAINER
from flowsci.optim import WarmupCosineAdamW

__all__ = ["SIZES", "spec"]

SIZES: dict[str, dict[str, Any]] = {
    "smoke": dict(classes=["ellipsoid", "rounded_box"], per_class=2, n=32, k=3, width=32, depth=1, steps=4, num=4,
                  nfe=(2,), points=128, grid=8, patch=4, cloud=64, res=24, batch=16, lr=5e-4, baselines=False,
                  reflow=0, pairs=0),
    "quick": dict(classes=["rounded_box", "cylinder", "torus", "dumbbell"], per_class=48, n=64, k=4, width=96,
                  depth=3, steps=1200, num=40, nfe=(5, 10, 20, 50), points=128, grid=20, patch=4, cloud=128, res=40,
                  batch=32, lr=1e-3, baselines=True, reflow=400, pairs=768),
    "full": dict(classes=list(CLASSES), per_class=200, n=128, k=5, width=192, depth=6, steps=1500, num=100,
                 nfe=(5, 10, 20, 50), points=2048, grid=32, patch=4, cloud=2048, res=96, batch=32, lr=5e-4,
                 baselines=True, reflow=1000, pairs=4096),
}  # fmt: skip
"""Per-suite sizes (classes, shapes per class, mosaic n/k, network, training steps, samples, NFE, points...).

``quick`` is sized for ~15 minutes on 2 CPU cores: four procedural classes whose refits are valid at ``n = 64``
(no thin legs or walls); ``k = 4`` so that a mosaic row (``d = 68``) is narrower than the transformer (width 96:
at ``k = 5``, ``d = 129`` rows through a width-96 embedding gave noisy patch values and no valid sample); grid
tokens are ``4^3`` patches of a ``20^3`` grid (64 values, 125 tokens), point clouds 128 points; 1,200 steps of
batch 32 with warm-up + cosine learning rate and an EMA of the weights, 40 samples (10 per class).
"""


def _net(size: dict[str, Any], dim: int, positions: int = 0) -> SetTransformer:
    return SetTransformer(dim, size["width"], size["depth"], 4, num_classes=len(CLASSES), num_positions=positions)


def _build(size: dict[str, Any], rep: str, total: int | None = None, lr: float | None = None) -> Any:
    drop = ConditionDropout(0.1, keys=["y"], null_label=len(CLASSES))
    steps = size["steps"] if total is None else total
    peak = size["lr"] if lr is None else lr

    def opt(p: Any) -> torch.optim.Optimizer:
        return WarmupCosineAdamW(p, lr=peak, total=steps, warmup=min(50, max(steps // 10, 1)))

    common = dict(cond_dropout=drop, optimizer=opt, resolution=size["res"])
    tokens = (size["grid"] // size["patch"]) ** 3

    def build(dm: Any) -> Any:
        del dm
        if rep == "mosaic":
            model, shape = MosaicFlow(_net(size, 4 + size["k"] ** 3), **common), [size["n"], 4 + size["k"] ** 3]
        elif rep == "grid":
            net = _net(size, size["patch"] ** 3, tokens)
            model = GridSDFFlow(net, grid=size["grid"], patch=size["patch"], **common)
            shape = [tokens, size["patch"] ** 3]
        else:
            model, shape = PointCloudFlow(_net(size, 3), **common), [size["cloud"], 3]
        model.data_shape = shape  # rows that reuse weights (weights_of) sample without seeing data
        return model

    return build


def _trainer(steps: int, ema: bool, device: torch.device) -> pl.Trainer:
    callbacks = [EMA(0.995)] if ema else []
    return pl.Trainer(
        max_steps=steps, max_epochs=-1, gradient_clip_val=1.0, callbacks=callbacks, **trainer_device(device),
        **QUIET_TRAINER,
    )  # fmt: skip


def _fit_on(rep: str, ema: bool = True) -> Any:
    """A ``Method.fit`` that trains on the same shapes in representation ``rep`` (EMA of the weights if ``ema``).

    The standardisation statistics are set before training, so the EMA copy carries the right ones.
    """

    def fit(model: Any, dm: ShapesDataModule, steps: int, device: torch.device) -> None:
        other = ShapesDataModule(**{**dm.hparams, "representation": rep})
        model.set_statistics(*other.statistics())
        _trainer(steps, ema, device).fit(model, datamodule=other)

    return fit


def _reflow_fit(size: dict[str, Any]) -> Any:
    """A ``Method.fit`` for ``init_from="msdf"``: one reflow (Liu et al., 2023) of the trained mosaic flow.

    The teacher (the weights ``init_from`` loaded) maps ``size["pairs"]`` prior draws to mosaics with 20 Euler
    steps at CFG ``w = 1``, labels round-robin over the trained classes; :func:`flowsci.reflow.rectify` then
    fine-tunes a copy on those pairs, and its weights are copied back into ``model``.
    """

    def fit(model: Any, dm: ShapesDataModule, steps: int, device: torch.device) -> None:
        from flowsci.module import FlowMatching
        from flowsci.reflow import ReflowPairs, rectify

        model.set_statistics(*dm.statistics())
        model.class_names, model.trained_classes = list(dm.class_names), list(dm.class_ids)
        model.eval()
        labels = torch.as_tensor([dm.class_ids[i % len(dm.class_ids)] for i in range(size["pairs"])])
        x0s, x1s = [], []
        with torch.no_grad():
            for i, start in enumerate(range(0, size["pairs"], 256)):
                y = labels[start : start + 256]
                sol = FlowMatching.sample(model, len(y), steps=20, solver="euler", cond={"y": y}, seed=10_000 + i)
                x0s.append(sol.x0)
                x1s.append(sol.x * model.x_std + model.x_mean)  # batches are standardised again when unpacked
        pairs = ReflowPairs(torch.cat(x0s), torch.cat(x1s), {"y": labels}, {"steps": 20, "solver": "euler"})
        trainer_kwargs = {"gradient_clip_val": 1.0, "max_epochs": -1, **trainer_device(device)}
        student = rectify(model, pairs, max_steps=steps, batch_size=size["batch"], trainer_kwargs=trainer_kwargs)
        model.load_state_dict(student.state_dict())
        model.train()

    return fit


def _sampler(guidance: float) -> Any:
    def sample(model: Any, request: SampleRequest) -> ShapeSolution:
        labels = list(request.reference.labels[: request.num])
        return model.sample(
            request.num, steps=request.steps, solver=request.solver, seed=request.seed, class_label=labels,
            guidance=guidance,
        )  # fmt: skip

    return sample


def _refit_sampler(size: dict[str, Any]) -> Any:
    """Mesh -> mosaic -> mesh of the reference shapes (times the fitting as 'sampling')."""

    def sample(model: Any, request: SampleRequest) -> ShapeSolution:
        del model
        ref: ShapeSet = request.reference
        t0 = time.perf_counter()
        mosaics = [MosaicSDF.fit(m, size["n"], size["k"]) for m in ref.meshes[: request.num]]
        t1 = time.perf_counter()
        meshes = [m.to_mesh(size["res"]) for m in mosaics]
        sol = ShapeSolution(x=torch.zeros(1), nfe=0, times=torch.zeros(1), seed=request.seed, meshes=meshes)
        sol.labels, sol.class_names, sol.mosaics = list(ref.labels[: request.num]), list(CLASSES), mosaics
        sol.timings = {"sample_s": t1 - t0, "mesh_s": time.perf_counter() - t1}
        return sol

    return sample


def _postprocess(solution: Any) -> ShapeSet:
    return solution.to_shapeset() if hasattr(solution, "to_shapeset") else solution


def _metric(points: int) -> Any:
    def fn(samples: ShapeSet, reference: ShapeSet) -> Mapping[str, float]:
        table = evaluate(samples, reference, num_points=points)
        out = {k: float(table.loc["all", k]) for k in ("1nna_cd", "mmd_cd", "cov_cd", "validity")}
        for name in table.index[1:]:
            out[f"1nna_cd/{name}"] = float(table.loc[name, "1nna_cd"])
        n = max(len(samples), 1)
        timings = samples.extras or {}
        if "sample_s" in timings:
            out["sample_s_per_shape"] = timings["sample_s"] / n
            out["mesh_s_per_shape"] = timings["mesh_s"] / n
        return out

    return fn


def spec(suite: str = "quick") -> BenchmarkSpec:
    """The shapes benchmark sized for ``suite`` (``smoke``, ``quick`` or ``full``)."""
    if suite not in SIZES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SIZES)}")
    size = SIZES[suite]

    def datamodule() -> ShapesDataModule:
        return ShapesDataModule(
            source="procedural", n=size["n"], k=size["k"], classes=size["classes"], train_per_class=size["per_class"],
            val_per_class=1, batch_size=size["batch"], grid=size["grid"], patch=size["patch"], points=size["cloud"],
            progress=False,
        )  # fmt: skip

    def reference(dm: ShapesDataModule, num: int, seed: int) -> ShapeSet:
        return dm.reference(num, seed=seed, resolution=size["res"])

    methods = [
        Method("msdf", _build(size, "mosaic"), description="Mosaic-SDF flow, CFG w=1", sample=_sampler(1.0),
               fit=_fit_on("mosaic")),
        Method("msdf-cfg2", _build(size, "mosaic"), description="same weights, CFG w=2", sample=_sampler(2.0),
               weights_of="msdf"),
        Method("msdf-fit", _build(size, "mosaic"), description="reference meshes fitted to mosaics and decoded "
               "(representation floor; sample time = fitting time)", train_steps=0, sample=_refit_sampler(size),
               nfe_grid=(1,)),
    ]  # fmt: skip
    if size["reflow"]:
        methods.append(
            Method("msdf-reflow", _build(size, "mosaic", size["reflow"], size["lr"] / 3), init_from="msdf",
                   train_steps=size["reflow"], fit=_reflow_fit(size), sample=_sampler(1.0), nfe_grid=(1, 2),
                   description=f"msdf after one reflow ({size['pairs']} teacher pairs at 20 NFE, {size['reflow']} "
                   "steps), CFG w=1"),
        )  # fmt: skip
    if size["baselines"]:
        methods += [
            Method("grid-sdf", _build(size, "grid"), baseline=True, fit=_fit_on("grid"), sample=_sampler(1.0),
                   description=f"dense {size['grid']}^3 truncated-SDF grid flow, CFG w=1"),
            Method("grid-sdf-cfg2", _build(size, "grid"), baseline=True, sample=_sampler(2.0), weights_of="grid-sdf",
                   description="same weights, CFG w=2"),
            Method("pointcloud", _build(size, "points"), baseline=True, fit=_fit_on("points"), sample=_sampler(1.0),
                   description=f"{size['cloud']}-point surface cloud flow, CFG w=1"),
            Method("pointcloud-cfg2", _build(size, "points"), baseline=True, sample=_sampler(2.0),
                   weights_of="pointcloud", description="same weights, CFG w=2"),
        ]  # fmt: skip
    lower = {"1nna_cd": False, "mmd_cd": False, "cov_cd": True, "validity": True}
    return BenchmarkSpec(
        name="shapes",
        datamodule=datamodule,
        reference_data=reference,
        methods=methods,
        metrics=[Metric("shape", _metric(size["points"]), higher_is_better=lower, description="MMD/COV/1-NNA-CD")],
        num_samples=size["num"],
        nfe_grid=size["nfe"],
        solvers=("euler",),
        train_steps=size["steps"],
        trainer_kwargs={"gradient_clip_val": 1.0},
        postprocess=_postprocess,
        primary_metric="1nna_cd",
        description=__doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        packages=("trimesh", "scikit-image", "point-cloud-utils"),
        warmup_samples=0,
        version="4",
        noise_floor=True,
    )
