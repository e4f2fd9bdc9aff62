"""``flowsci bench`` spec of the PDE domain: 1D controlled Burgers, simulation and control (WDNO-lite).

Data: trajectories of the torch Burgers solver (:data:`flowsci.domains.pde.solvers.burgers`, nu = 0.01, T = 1),
training seed 0, held-out test trajectories with seed 10,000 (never seen in training); generated on the fly and
cached as netCDF.

Methods (same U-Net, optimiser, batch and number of optimiser steps; every trained row keeps an EMA of its weights,
:data:`EMA_DECAY`, and samples with it):

- ``wdno-sim``: :class:`~flowsci.domains.pde.flow.WaveletFlow` (bior2.4, J = 1, band scales
  :math:`\\sqrt{\\sigma_b\\sigma_F}`) predicting u from (u0, f) of the test trajectories; scored against the solver's
  trajectory for the same (u0, f); ``wdno-sim-2w``: the same at twice the width, i.e. at the physical-space U-Net's
  FLOPs per step (the wavelet image is 4x smaller);
- ``wdno-control-model``: the same weights, control by objective guidance on the model's own u(T) (WDNO; target =
  the test trajectory's u(T)); J is computed by re-simulating the generated control with the solver;
- ``wdno-unguided``: the same weights sampling (u, f) from u0 without guidance (the control baseline the
  guidance must beat by >= 2x in J);
- ``wdno-control-solver``: as ``wdno-control-model`` but u(T) in the guidance objective comes from the differentiable
  torch solver run with the predicted control (the gradient reaches the control channels; beyond WDNO);
- ``phys-sim`` / ``phys-control-model`` / ``phys-control-solver`` (baseline): the same model in physical space
  (``wavelet="none"``, the paper's "DDPM" row);
- ``fno-sim`` (baseline): a Fourier neural operator over (t, x) mapping (u0 tiled, f) to u, relative-L2 loss;
- ``wdno-ddim-sim`` / ``wdno-ddim-control-solver``: WDNO's own recipe for parity, the same wavelet U-Net trained as a
  DDPM (linear betas, K = 1000, v-prediction, clean estimate clipped to the training range) and sampled by
  deterministic DDIM (:class:`~flowsci.domains.pde.ddpm.WaveletDDPM`; cells labelled ``ddim``, one evaluation per
  step); ``phys-ddim-*`` (baseline): the same in physical space (the paper's "DDPM" row);
- ``wdno-advection`` / ``phys-advection`` (baseline): wavelet vs physical-space flow on 1D periodic advection with
  the fixed speed :data:`ADVECTION_BETA` (T = 2, sines plus square pulses: sharp fronts), u from u0, scored against
  the exact solution (trained with their own data module, :func:`fit_advection`);
- ``refine-burgers-4x`` / ``refine-advection-4x`` and ``bilinear-*-4x`` (baseline): trajectories at 4x the base grid
  and steps from their base-resolution block average, by :class:`~flowsci.domains.pde.flow.RefineFlow` (trained on
  2x pairs of base-resolution data only, chained twice: resolutions never seen in training) or bilinear
  upsampling, scored against the fine solver (Burgers) or exact (advection) trajectories (:func:`sample_upsampled`);
- ``chain-burgers-4x`` and ``chain-bilinear-burgers-4x`` (baseline): Burgers at 4x the base grid and steps from the
  *generated* base trajectory: the fine (u0, f) block-averaged to the base grid, a ``wdno-sim``-recipe model
  generates the trajectory there, then a ``refine-burgers-4x``-recipe :class:`RefineFlow` refines it twice
  (:class:`~flowsci.domains.pde.flow.MultiResolutionFlow`; both parts trained by :func:`fit_chain`) or the same
  base trajectory is upsampled bilinearly; scored against the fine solver trajectories (:func:`sample_chain`);
- ``solver-torch`` / ``solver-numpy``: the numerical solver itself on the test (u0, f), torch vs the NumPy
  implementation of the same scheme (seconds per trajectory; rel_l2 = 0 by definition for the torch row).

Numbers are NOT comparable to WDNO's tables (far smaller data, network and training budget; T = 1 and 32
control steps instead of the paper's setup).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch

from flowsci.benchspec import BenchmarkSpec, Method, Metric, ReferenceRow, SampleRequest, trainer_device

__all__ = ["spec", "build_flow", "reference_trajectories", "SIZES"]

SIZES: dict[str, dict[str, Any]] = {
    # seconds: a plumbing check on a coarse grid
    "smoke": {
        "grid": 32,
        "steps": 8,
        "num_train": 64,
        "train_steps": 8,
        "num_samples": 4,
        "nfe_grid": (2,),
        "width": 8,
        "mults": (1, 2),
        "batch_size": 16,
        "guidance": 10.0,
        "guidance_solver": 30.0,
    },
    # minutes on 2 CPU cores: a 64 x 16 grid (WDNO's base grid 128 x 32 is the full suite's)
    "quick": {
        "grid": 64,
        "steps": 16,
        "num_train": 1024,
        "train_steps": 800,
        "num_samples": 64,
        "nfe_grid": (5, 10, 20, 50),
        "width": 16,
        "mults": (1, 2),
        "batch_size": 32,
        "guidance": 10.0,
        "guidance_solver": 30.0,
    },
    # paper-like network and data (2,000 trajectories, width 64, 3 levels); hours on CPU, use a GPU
    "full": {
        "grid": 128,
        "steps": 32,
        "num_train": 2000,
        "train_steps": 20_000,
        "num_samples": 200,
        "nfe_grid": (5, 10, 20, 50),
        "width": 64,
        "mults": (1, 2, 4),
        "batch_size": 64,
        "guidance": 10.0,
        "guidance_solver": 30.0,
    },
}

TEST_SEED = 10_000

REFERENCES: tuple[ReferenceRow, ...] = (
    ReferenceRow(
        "WDNO (paper)",
        {},
        "Hu et al., Wavelet Diffusion Neural Operator, ICLR 2025 (Burgers control, Table 3)",
        "paper setup: T = 8 (WDNO generator), 81 x 120 grid; numbers not re-checked here",
        note="the WDNO tables were not retrievable when this spec was written; no value is quoted",
    ),
)


WAVELET = "bior2.4"
"""The wavelet of the ``wdno-*`` rows (WDNO's Burgers choice), one level."""

SCALE_POWER = 0.5
"""Band scales :math:`s_b = \\sigma_b^{1/2}\\sigma_F^{1/2}` of the ``wdno-*`` rows (``WaveletFlow(scale_power)``):
full per-band standardisation lifts the tiny detail bands to the prior noise's variance, and what the model has
not learnt of them is then generated as noise at full amplitude (measured: the high-band error doubled)."""

EMA_DECAY = 0.995
"""Every trained row keeps an exponential moving average of its weights (:class:`flowsci.callbacks.EMA`, with
warm-up) and samples with it: one training recipe for all rows (spec version 3)."""

ADVECTION_BETA = 0.4
"""Advection speed of the advection rows (fixed, as in one PDEBench advection file: u0 then determines u)."""


def ema_callbacks() -> list[Any]:
    """The trainer callbacks of every trained row: an EMA of the weights with decay :data:`EMA_DECAY`."""
    from flowsci.callbacks import EMA

    return [EMA(EMA_DECAY)]


def custom_fit_trainer(max_steps: int, device: Any) -> Any:
    """The trainer of the suite's custom fits, as the default rows': ``max_steps`` on ``device``, gradient clipping
    1.0, :func:`ema_callbacks`, no logs or checkpoints.
    """
    import pytorch_lightning as pl

    from flowsci.module import QUIET_TRAINER

    return pl.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        gradient_clip_val=1.0,
        callbacks=ema_callbacks(),
        **trainer_device(device),
        **QUIET_TRAINER,
    )


def build_flow(
    dm: Any,
    wavelet: str,
    size: dict[str, Any],
    problem: str = "burgers",
    diffusion: bool = False,
    width: int | None = None,
) -> Any:
    """A fresh :class:`WaveletFlow` (``wavelet="none"``: physical space; ``diffusion``: the DDPM/DDIM variant
    :class:`~flowsci.domains.pde.ddpm.WaveletDDPM`) sized by ``size``; AdamW 1e-3; ``scale_power=SCALE_POWER``.
    """
    from flowsci.domains.pde.ddpm import WaveletDDPM
    from flowsci.domains.pde.flow import WaveletFlow
    from flowsci.domains.pde.model import UNet

    bands = 1 if wavelet == "none" else 4
    fields = 2 if problem == "burgers" else 1
    net = UNet(
        in_channels=fields * bands,
        cond_channels=bands + fields,
        width=width or size["width"],
        mults=tuple(size["mults"]),
        time_dim=32,
    )
    return (WaveletDDPM if diffusion else WaveletFlow)(
        net,
        wavelet=wavelet,
        levels=1,
        problem=problem,
        grid=size["grid"],
        steps=size["steps"],
        horizon=1.0 if problem == "burgers" else 2.0,
        guidance_scale=size["guidance"],
        scale_power=SCALE_POWER,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )


def build_fno(dm: Any, size: dict[str, Any]) -> Any:
    """The FNO simulation baseline (modes (8, 16), width 32, 4 layers), AdamW 1e-3."""
    from flowsci.domains.pde.flow import FNOSurrogate
    from flowsci.domains.pde.model import FNO2d

    modes = (min(8, size["steps"] // 2), min(16, size["grid"] // 2))
    return FNOSurrogate(
        FNO2d(in_channels=2, out_channels=1, width=32, modes=modes, layers=4),
        grid=size["grid"],
        steps=size["steps"],
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )


def reference_trajectories(size: dict[str, Any], dm: Any, num: int, seed: int) -> Any:
    """``num`` held-out solver trajectories (seed ``TEST_SEED + seed``) as an xarray.Dataset."""
    from flowsci.domains.pde.solvers import burgers

    return burgers.generate(num, size["grid"], size["steps"], seed=TEST_SEED + seed)


def _u0_f(reference: Any, num: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    u = torch.as_tensor(reference["u"].values[:num])
    f = torch.as_tensor(reference["f"].values[:num])
    return u[:, 0], f, u[:, -1]


def sample_simulate(model: Any, request: SampleRequest) -> Any:
    """Simulate every test trajectory from its (u0, f) with the cell's solver (``"ddim"`` for the DDPM rows)."""
    from flowsci.domains.pde.flow import PDESolution

    u0, f, _ = _u0_f(request.reference, request.num)
    ds = model.simulate(u0, f, steps=request.steps, solver=request.solver, seed=request.seed)
    return PDESolution(x=torch.as_tensor(ds.u.values), nfe=int(ds.attrs["nfe"]), times=torch.zeros(1), dataset=ds)


def sample_control(
    model: Any,
    request: SampleRequest,
    guidance: float | None = None,
    objective: str = "model",
) -> Any:
    """Control every test u0 towards the test trajectory's final state (``guidance=0``: unguided), with the
    cell's solver.
    """
    from flowsci.domains.pde.flow import PDESolution

    u0, _, target = _u0_f(request.reference, request.num)
    ds = model.control(
        u0,
        target,
        steps=request.steps,
        guidance=guidance,
        solver=request.solver,
        seed=request.seed,
        objective=objective,
    )
    return PDESolution(x=torch.as_tensor(ds.u.values), nfe=int(ds.attrs["nfe"]), times=torch.zeros(1), dataset=ds)


def advection_problem() -> Any:
    """Periodic advection with the fixed speed :data:`ADVECTION_BETA` (T = 2; sines plus square pulses)."""
    from flowsci.domains.pde.solvers import Advection

    return Advection(beta_range=(ADVECTION_BETA, ADVECTION_BETA))


def advection_file(size: dict[str, Any], num: int, seed: int) -> Any:
    """Path of ``num`` exact advection trajectories (seed ``seed``) on the suite's grid, cached as netCDF."""
    from flowsci.domains.pde.data import default_cache_dir, write_dataset

    path = default_cache_dir() / (
        f"advection_beta{ADVECTION_BETA}_n{num}_g{size['grid']}_s{size['steps']}_seed{seed}.nc"
    )
    if not path.exists():
        with torch.random.fork_rng():
            write_dataset(advection_problem().generate(num, size["grid"], size["steps"], seed=seed), path)
    return path


def fit_advection(model: Any, dm: Any, max_steps: int, device: Any, size: dict[str, Any]) -> None:
    """Train ``model`` on advection data (``dm``, the spec's Burgers data, is not used); same trainer settings
    (gradient clipping, EMA of the weights) as the other rows.
    """
    from flowsci.domains.pde.data import PDEDataModule

    adm = PDEDataModule(
        train=str(advection_file(size, size["num_train"], 0)),
        val=str(advection_file(size, 16, 1)),
        problem="advection",
        grid=size["grid"],
        steps=size["steps"],
        batch_size=size["batch_size"],
    )
    custom_fit_trainer(max_steps, device).fit(model, datamodule=adm)


def sample_advection(model: Any, request: SampleRequest) -> Any:
    """Simulate held-out advection trajectories (seed ``TEST_SEED``) from their u0; truth = the exact solution."""
    from flowsci.domains.pde.flow import PDESolution

    ref = advection_problem().generate(request.num, model.grid, model.steps, seed=TEST_SEED)
    u0 = torch.as_tensor(ref["u"].values[:, 0])
    ds = model.simulate(u0, None, steps=request.steps, solver=request.solver, seed=request.seed, resimulate=False)
    ds["u_solver"] = (("sample", "time", "x"), ref["u"].values, {"units": "1", "long_name": "exact solution"})
    return PDESolution(x=torch.as_tensor(ds.u.values), nfe=int(ds.attrs["nfe"]), times=torch.zeros(1), dataset=ds)


class UntrainedRow(torch.nn.Module):
    """A row with nothing to train (train_steps = 0): ``kind`` is the solver backend (``"torch"``, ``"numpy"``) or
    the interpolation (``"bilinear"``) it stands for.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def compute_loss(self, batch: Any, generator: Any = None) -> Any:
        """No training."""
        return self.dummy.sum(), {}


def sample_solver(model: UntrainedRow, request: SampleRequest) -> Any:
    """Run the solver on the test (u0, f); the dataset's ``u_solver`` is the torch solver's trajectory."""
    from flowsci.domains.pde.data import make_dataset
    from flowsci.domains.pde.flow import PDESolution
    from flowsci.domains.pde.solvers import burgers, solve_burgers_numpy

    u0, f, _ = _u0_f(request.reference, request.num)
    if model.kind == "torch":
        u = burgers.solve(u0.double(), f.double()).numpy()
    else:
        u = solve_burgers_numpy(u0.double().numpy(), f.double().numpy(), nu=burgers.nu, horizon=burgers.horizon)
    ref = request.reference.isel(sample=slice(0, request.num))
    ds = make_dataset("burgers", u, f.numpy(), ref["x"].values, burgers.horizon, attrs={"task": "solver", "nfe": 1})
    ds["u_solver"] = (("sample", "time", "x"), ref["u"].values, {"units": "1"})
    return PDESolution(x=torch.as_tensor(u), nfe=1, times=torch.zeros(1), dataset=ds)


RESOLUTION_FACTOR = 4
"""The resolution rows predict trajectories on a grid and time axis this many times finer than the base (two chained
2x refinements)."""


def build_refine(dm: Any, size: dict[str, Any], fields: int = 2) -> Any:
    """:class:`~flowsci.domains.pde.flow.RefineFlow` (WDNO's super-resolution step) with the suite's U-Net size,
    AdamW 1e-3; trained on 2x pairs of the base-resolution data only (half resolution -> base).
    """
    from flowsci.domains.pde.flow import RefineFlow
    from flowsci.domains.pde.model import UNet

    net = UNet(in_channels=3 * fields, cond_channels=fields, width=size["width"], mults=tuple(size["mults"]))
    return RefineFlow(net, fields=fields, optimizer=partial(torch.optim.AdamW, lr=1e-3))


def sample_upsampled(model: Any, request: SampleRequest, size: dict[str, Any], problem: str = "burgers") -> Any:
    """Trajectories at :data:`RESOLUTION_FACTOR` x the base grid and steps from their base-resolution version.

    Truth: ``request.num`` held-out trajectories (seed ``TEST_SEED``) of the solver (Burgers; same u0 and f
    functions as the base test set) or the exact solution (advection) on the fine grid; input: its
    ``RESOLUTION_FACTOR`` x ``RESOLUTION_FACTOR`` block average over (t, x), i.e. the base resolution. ``model`` is
    a :class:`RefineFlow` (chained 2x refinements, ``request.steps`` Euler steps each: NFE = 2 x steps) or the
    ``"bilinear"`` :class:`UntrainedRow` (bilinear upsampling of the same input). ``u`` is scored against the truth.
    """
    from flowsci.domains.pde.data import make_dataset
    from flowsci.domains.pde.flow import PDESolution
    from flowsci.domains.pde.solvers import burgers

    k = RESOLUTION_FACTOR
    grid, steps = size["grid"] * k, size["steps"] * k
    if problem == "burgers":
        ref = burgers.generate(request.num, grid, steps, seed=TEST_SEED)
        horizon = burgers.horizon
    else:
        ref = advection_problem().generate(request.num, grid, steps, seed=TEST_SEED)
        horizon = advection_problem().horizon
    u = torch.as_tensor(ref["u"].values).float()
    f = torch.as_tensor(ref["f"].values).float()
    fine = torch.stack([u[:, 1:], f], 1) if problem == "burgers" else u[:, None, 1:]
    coarse = torch.nn.functional.avg_pool2d(fine, k)
    if isinstance(model, UntrainedRow):
        out = torch.nn.functional.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        nfe = 1
    else:
        out = coarse
        for _ in range(k.bit_length() - 1):  # log2(k) chained 2x refinements
            out = model.refine(out, steps=request.steps, seed=request.seed)
        nfe = (k.bit_length() - 1) * request.steps
    u_out = torch.cat([u[:, :1], out[:, 0].to(u)], 1).numpy()
    attrs = {"task": "simulate", "nfe": nfe, "resolution_factor": k}
    ds = make_dataset(problem, u_out, ref["f"].values, ref["x"].values, horizon, attrs=attrs)
    ds["u_solver"] = (("sample", "time", "x"), ref["u"].values, {"units": "1", "long_name": "fine-grid truth"})
    return PDESolution(x=torch.as_tensor(u_out), nfe=nfe, times=torch.zeros(1), dataset=ds)


def build_chain(dm: Any, size: dict[str, Any]) -> Any:
    """:class:`~flowsci.domains.pde.flow.MultiResolutionFlow` of a ``wdno-sim``-recipe base model and a
    ``refine-burgers-4x``-recipe refiner (both untrained; :func:`fit_chain` trains them).
    """
    from flowsci.domains.pde.flow import MultiResolutionFlow

    return MultiResolutionFlow(build_flow(dm, WAVELET, size), build_refine(dm, size))


def fit_chain(model: Any, dm: Any, max_steps: int, device: Any) -> None:
    """Train both parts of a :func:`build_chain` model on ``dm``, one after the other, each with the recipe of its
    own row (``max_steps`` optimiser steps, gradient clipping 1.0, EMA of the weights): the base as ``wdno-sim``,
    the refiner on 2x pairs of the base-resolution data as ``refine-burgers-4x``.
    """
    for part in (model.base, model.refiner):
        custom_fit_trainer(max_steps, device).fit(part, datamodule=dm)


def sample_chain(model: Any, request: SampleRequest, size: dict[str, Any], upsample: str = "refine") -> Any:
    """Burgers simulation at :data:`RESOLUTION_FACTOR` x the base grid and steps from the *generated* base trajectory.

    Test set and truth as :func:`sample_upsampled` (fine solver trajectories, seed ``TEST_SEED``). ``upsample =
    "refine"``: :meth:`MultiResolutionFlow.simulate` (fine (u0, f) block-averaged to the base grid, base model with
    ``request.steps`` steps, then two chained refinements of ``request.steps`` Euler steps each: NFE = 3 x steps);
    ``"bilinear"``: the same base trajectory (the base model alone, same seed) upsampled bilinearly (NFE = steps).
    """
    from flowsci.domains.pde.data import make_dataset
    from flowsci.domains.pde.flow import PDESolution
    from flowsci.domains.pde.solvers import burgers

    k = RESOLUTION_FACTOR
    ref = burgers.generate(request.num, size["grid"] * k, size["steps"] * k, seed=TEST_SEED)
    u0 = torch.as_tensor(ref["u"].values[:, 0])
    f = torch.as_tensor(ref["f"].values)
    if upsample == "refine":
        ds = model.simulate(u0, f, steps=request.steps, factor=k, seed=request.seed)
    elif upsample == "bilinear":
        u0_c = torch.nn.functional.avg_pool1d(u0[:, None].float(), k)[:, 0]
        f_c = torch.nn.functional.avg_pool2d(f[:, None].float(), k)[:, 0]
        base = model.simulate(u0_c, f_c, steps=request.steps, factor=1, seed=request.seed)
        coarse = torch.as_tensor(base.u.values[:, None, 1:])
        up = torch.nn.functional.interpolate(coarse, size=f.shape[-2:], mode="bilinear", align_corners=False)
        u = torch.cat([u0[:, None].float(), up[:, 0]], 1).numpy()
        attrs = {**base.attrs, "resolution_factor": k, "upsampling": "bilinear"}
        ds = make_dataset("burgers", u, ref["f"].values, ref["x"].values, burgers.horizon, attrs=attrs)
    else:
        raise ValueError(f"upsample must be 'refine' or 'bilinear', got {upsample!r}")
    ds["u_solver"] = (("sample", "time", "x"), ref["u"].values, {"units": "1", "long_name": "fine-grid truth"})
    return PDESolution(x=torch.as_tensor(ds.u.values), nfe=int(ds.attrs["nfe"]), times=torch.zeros(1), dataset=ds)


def _postprocess(solution: Any) -> Any:
    return solution.dataset


def pde_metrics(samples: Any, reference: Any) -> dict[str, float]:
    """Simulation metrics against the solver (``u_solver``) and, for control samples, J from re-simulation."""
    from flowsci.domains.pde.metrics import simulation_metrics

    keys = ["rel_l2", "frmse_low", "frmse_mid", "frmse_high", "shock_rmse", "final_rel_l2"]
    keys += ["J_solver", "J_model", "energy", "objective"]
    out = dict.fromkeys(keys, float("nan"))  # not applicable to the row's task: recorded as null
    if samples.attrs.get("task") in ("simulate", "solver"):
        sim = simulation_metrics(samples["u"].values, samples["u_solver"].values)
        out.update({k: v for k, v in sim.items() if k in out})
    else:
        for k in ("J_solver", "J_model", "energy", "objective"):
            out[k] = float(np.mean(samples[k].values))
    return out


def spec(suite: str = "quick") -> BenchmarkSpec:
    """The PDE benchmark sized for ``suite`` (``smoke``, ``quick`` or ``full``)."""
    if suite not in SIZES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {sorted(SIZES)}")
    size = SIZES[suite]

    wdno = partial(build_flow, wavelet=WAVELET, size=size)
    phys = partial(build_flow, wavelet="none", size=size)
    guided = partial(sample_control, guidance=size["guidance"])
    methods = [
        Method("wdno-sim", wdno, sample=sample_simulate, description=f"wavelet flow ({WAVELET}, J=1), simulation"),
        Method(
            "wdno-control-model",
            wdno,
            sample=guided,
            weights_of="wdno-sim",
            description="wavelet flow + guidance on the model's u(T) (WDNO)",
        ),
        Method(
            "wdno-unguided",
            wdno,
            sample=partial(sample_control, guidance=0.0),
            weights_of="wdno-sim",
            description="wavelet flow, (u, f) from u0 without guidance",
        ),
        Method("phys-sim", phys, baseline=True, sample=sample_simulate, description="same U-Net in physical space"),
        Method(
            "phys-control-model",
            phys,
            baseline=True,
            sample=guided,
            weights_of="phys-sim",
            description="physical-space flow + guidance",
        ),
    ]
    solver_guided = partial(sample_control, guidance=size["guidance_solver"], objective="solver")
    methods += [
        Method(
            "wdno-control-solver",
            wdno,
            sample=solver_guided,
            weights_of="wdno-sim",
            description="wavelet flow + guidance with u(T) from the differentiable solver",
        ),
        Method(
            "phys-control-solver",
            phys,
            baseline=True,
            sample=solver_guided,
            weights_of="phys-sim",
            description="physical-space flow + solver guidance",
        ),
    ]
    methods.append(
        Method(
            "fno-sim",
            partial(build_fno, size=size),
            baseline=True,
            sample=sample_simulate,
            nfe_grid=(1,),
            description="FNO over (t, x) mapping (u0, f) to u (deterministic, one evaluation)",
        )
    )
    methods.append(
        Method(
            "wdno-sim-2w",
            partial(build_flow, wavelet=WAVELET, size=size, width=2 * size["width"]),
            sample=sample_simulate,
            description="wavelet flow at the physical U-Net's compute: twice the width on the 4x smaller coefficient "
            "image (same FLOPs per step, 1.01x measured)",
        )
    )
    ddpm = partial(build_flow, wavelet=WAVELET, size=size, diffusion=True)
    methods += [
        Method(
            "wdno-ddim-sim",
            ddpm,
            sample=sample_simulate,
            solvers=("ddim",),
            description="the same wavelet U-Net trained as a DDPM (linear betas, K = 1000), DDIM sampling (WDNO)",
        ),
        Method(
            "wdno-ddim-control-solver",
            ddpm,
            sample=solver_guided,
            solvers=("ddim",),
            weights_of="wdno-ddim-sim",
            description="wavelet DDPM + DDIM with solver-objective guidance",
        ),
        Method(
            "phys-ddim-sim",
            partial(build_flow, wavelet="none", size=size, diffusion=True),
            baseline=True,
            sample=sample_simulate,
            solvers=("ddim",),
            description="the same U-Net as a DDPM in physical space, DDIM sampling (the paper's DDPM baseline)",
        ),
        Method(
            "phys-ddim-control-solver",
            partial(build_flow, wavelet="none", size=size, diffusion=True),
            baseline=True,
            sample=solver_guided,
            solvers=("ddim",),
            weights_of="phys-ddim-sim",
            description="physical-space DDPM + DDIM with solver-objective guidance",
        ),
    ]
    fit_adv = partial(fit_advection, size=size)
    methods += [
        Method(
            "wdno-advection",
            partial(build_flow, wavelet=WAVELET, size=size, problem="advection"),
            fit=fit_adv,
            sample=sample_advection,
            description=f"wavelet flow, 1D advection (beta = {ADVECTION_BETA}, T = 2), u from u0",
        ),
        Method(
            "phys-advection",
            partial(build_flow, wavelet="none", size=size, problem="advection"),
            baseline=True,
            fit=fit_adv,
            sample=sample_advection,
            description="physical-space flow, 1D advection",
        ),
    ]
    res = f"{RESOLUTION_FACTOR}x"
    for problem, fields, fit in (("burgers", 2, None), ("advection", 1, fit_adv)):
        upsampled = partial(sample_upsampled, size=size, problem=problem)
        methods += [
            Method(
                f"refine-{problem}-{res}",
                partial(build_refine, size=size, fields=fields),
                fit=fit,
                sample=upsampled,
                description=f"{problem} at {res} the base grid and steps: base-resolution trajectory refined by "
                "RefineFlow (trained on 2x pairs of base-resolution data only), chained 2x steps",
            ),
            Method(
                f"bilinear-{problem}-{res}",
                lambda dm: UntrainedRow("bilinear"),
                baseline=True,
                train_steps=0,
                sample=upsampled,
                nfe_grid=(1,),
                description=f"{problem} at {res}: bilinear upsampling of the same base-resolution trajectory",
            ),
        ]
    chained = partial(sample_chain, size=size)
    methods += [
        Method(
            f"chain-burgers-{res}",
            partial(build_chain, size=size),
            fit=fit_chain,
            sample=chained,
            description=f"burgers at {res}: the wdno-sim-recipe model's generated base trajectory refined by a "
            "refine-burgers-4x-recipe RefineFlow, chained 2x steps (NFE = base + 2 refinements, 3 x steps)",
        ),
        Method(
            f"chain-bilinear-burgers-{res}",
            partial(build_chain, size=size),
            baseline=True,
            sample=partial(chained, upsample="bilinear"),
            weights_of=f"chain-burgers-{res}",
            description=f"burgers at {res}: bilinear upsampling of the same generated base trajectory",
        ),
    ]
    if suite != "smoke":
        for backend in ("torch", "numpy"):
            methods.append(
                Method(
                    f"solver-{backend}",
                    lambda dm, b=backend: UntrainedRow(b),
                    baseline=True,
                    train_steps=0,
                    sample=sample_solver,
                    nfe_grid=(1,),
                    description=f"numerical Burgers solver ({backend}), explicit Euler + centred differences",
                )
            )
    # one recipe for every row the default trainer trains (EMA of the weights); fit_advection adds it itself
    methods = [
        m if m.train_steps == 0 or m.weights_of or m.fit else replace(m, callbacks=ema_callbacks) for m in methods
    ]
    return BenchmarkSpec(
        name="pde",
        datamodule=partial(_burgers_datamodule, size),
        reference_data=partial(reference_trajectories, size),
        methods=methods,
        metrics=[
            Metric(
                "pde",
                pde_metrics,
                higher_is_better=False,
                description="rel_l2 / fRMSE bands / shock RMSE vs the solver (simulation); J re-simulated (control)",
            )
        ],
        num_samples=size["num_samples"],
        nfe_grid=size["nfe_grid"],
        solvers=("euler",),
        train_steps=size["train_steps"],
        seed=0,
        trainer_kwargs={"gradient_clip_val": 1.0},
        postprocess=_postprocess,
        primary_metric="rel_l2",
        references=REFERENCES,
        description=__doc__.split("\n\n")[0],
        packages=("PyWavelets", "xarray", "h5py", "h5netcdf", "zarr"),
        warmup_samples=2,
        version="3",
    )


def _burgers_datamodule(size: dict[str, Any]) -> Any:
    """The suite's Burgers data module at ``size`` (seed 0, 16 validation trajectories)."""
    from flowsci.domains.pde.data import PDEDataModule

    return PDEDataModule(
        problem="burgers",
        num_train=size["num_train"],
        num_val=16,
        grid=size["grid"],
        steps=size["steps"],
        seed=0,
        batch_size=size["batch_size"],
    )


def _timed_fit(model: Any, dm: Any, train_steps: int, callbacks: list[Any] | None = None) -> float:
    """Train ``model`` for ``train_steps`` (one device: a GPU when there is one, else the CPU) with ``callbacks``;
    wall seconds.
    """
    import time

    import pytorch_lightning as pl

    from flowsci.module import QUIET_TRAINER

    t0 = time.perf_counter()
    trainer = pl.Trainer(
        max_steps=train_steps,
        max_epochs=-1,
        accelerator="auto",
        devices=1,
        gradient_clip_val=1.0,
        callbacks=callbacks or [],
        **QUIET_TRAINER,
    )
    trainer.fit(model, datamodule=dm)
    return time.perf_counter() - t0


def resolution_generalisation(
    train_steps: int = 600, num_train: int = 512, num_test: int = 16, steps: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Train :class:`~flowsci.domains.pde.flow.RefineFlow` on 2x pairs at 128 x 32 and compare it with bilinear
    upsampling at 2x and (chained) 4x on solver trajectories at 512 x 128 (resolutions never seen in training).

    The coarse input is the 4x4 block average of the 512 x 128 truth; errors are relative L2 and high-band fRMSE of
    u (and relative L2 of f) against the block-averaged truth at each resolution. Returns a JSON-able dict.
    """
    import pytorch_lightning as pl

    from flowsci.domains.pde.data import PDEDataModule
    from flowsci.domains.pde.flow import RefineFlow
    from flowsci.domains.pde.metrics import frmse, rel_l2
    from flowsci.domains.pde.model import UNet
    from flowsci.domains.pde.solvers import burgers

    pl.seed_everything(seed, verbose=False)
    dm = PDEDataModule(problem="burgers", num_train=num_train, num_val=16, grid=128, steps=32, seed=0, batch_size=16)
    model = RefineFlow(
        UNet(in_channels=6, cond_channels=2, width=16, mults=(1, 2), time_dim=32),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    out: dict[str, Any] = {"train_s": _timed_fit(model, dm, train_steps)}
    model.eval()
    truth = burgers.generate(num_test, 512, 128, seed=TEST_SEED + seed)
    fine = torch.stack([torch.as_tensor(truth.u.values[:, 1:]), torch.as_tensor(truth.f.values)], 1).float()
    pool = torch.nn.functional.avg_pool2d
    cases = {
        "2x seen (64x16 -> 128x32)": (pool(fine, 8), pool(fine, 4), 1),
        "2x unseen (128x32 -> 256x64)": (pool(fine, 4), pool(fine, 2), 1),
        "4x unseen (128x32 -> 512x128, chained)": (pool(fine, 4), fine, 2),
    }
    for name, (coarse, target, times) in cases.items():
        x = coarse
        for _ in range(times):
            x = model.refine(x, steps=steps, seed=seed)
        bil = torch.nn.functional.interpolate(coarse, size=target.shape[-2:], mode="bilinear", align_corners=False)
        out[name] = {
            "refine_rel_l2_u": rel_l2(x[:, 0], target[:, 0]),
            "bilinear_rel_l2_u": rel_l2(bil[:, 0], target[:, 0]),
            "refine_frmse_high_u": frmse(x[:, 0], target[:, 0])["frmse_high"],
            "bilinear_frmse_high_u": frmse(bil[:, 0], target[:, 0])["frmse_high"],
            "refine_rel_l2_f": rel_l2(x[:, 1], target[:, 1]),
            "bilinear_rel_l2_f": rel_l2(bil[:, 1], target[:, 1]),
        }
    return out


def ablation(
    wavelet: str = WAVELET,
    levels: int = 1,
    train_steps: int = 800,
    width: int | None = None,
    num_test: int = 32,
    nfe: tuple[int, ...] = (5, 20),
    diffusion: bool = False,
    ema: bool = False,
    test_seed: int = TEST_SEED,
    **model_kwargs: Any,
) -> dict[str, Any]:
    """Train one simulation model on the quick suite's Burgers data and score it (the diagnosis of the docs).

    Same data (1,024 trajectories, 64 x 16), U-Net (width 16 unless ``width``, mults (1, 2)), AdamW 1e-3, batch 32
    and gradient clipping as the quick suite; an EMA of the weights (:data:`EMA_DECAY`) if ``ema``;
    ``model_kwargs`` go to :class:`WaveletFlow` (``loss_weight``, ``scale_power``...) or, with ``diffusion``, to
    :class:`~flowsci.domains.pde.ddpm.WaveletDDPM` (also ``prediction``, ``clip``). Scored on ``num_test``
    held-out trajectories (seed ``test_seed``; 20,000 for validation choices, 10,000 is the benchmark's test set) at
    each NFE; plus, at NFE 10, the RMS error of each u band in the model's coordinates and the fRMSE after zeroing
    the u detail bands.
    """
    import pytorch_lightning as pl

    from flowsci.domains.pde.ddpm import WaveletDDPM
    from flowsci.domains.pde.flow import WaveletFlow
    from flowsci.domains.pde.metrics import frmse, simulation_metrics
    from flowsci.domains.pde.model import UNet
    from flowsci.domains.pde.solvers import burgers

    size = SIZES["quick"]
    pl.seed_everything(0, verbose=False)
    dm = _burgers_datamodule(size)
    bands = 1 if wavelet == "none" else 4**levels
    net = UNet(
        in_channels=2 * bands,
        cond_channels=bands + 2,
        width=width or size["width"],
        mults=tuple(size["mults"]),
        time_dim=32,
    )
    model = (WaveletDDPM if diffusion else WaveletFlow)(
        net,
        wavelet=wavelet,
        levels=levels,
        grid=size["grid"],
        steps=size["steps"],
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
        **model_kwargs,
    )
    out: dict[str, Any] = {"train_s": _timed_fit(model, dm, train_steps, ema_callbacks() if ema else None)}
    model.eval()
    ref = burgers.generate(num_test, size["grid"], size["steps"], seed=test_seed)
    u, f = torch.as_tensor(ref.u.values), torch.as_tensor(ref.f.values)
    for n in nfe:
        ds = model.simulate(u[:, 0], f, steps=n, seed=0)
        m = simulation_metrics(ds.u.values, ds.u_solver.values)
        out[f"nfe{n}"] = {k: m[k] for k in ("rel_l2", "frmse_low", "frmse_mid", "frmse_high")}
    if wavelet != "none":
        ds = model.simulate(u[:, 0], f, steps=10, seed=0)
        gen, truth = torch.as_tensor(ds.u.values).float(), torch.as_tensor(ds.u_solver.values).float()
        with torch.no_grad():
            c, ct = model.encode(gen, f.float()), model.encode(truth, f.float())
            nb = model.transform.bands
            out["band_rms_error"] = (c - ct)[:, :nb].pow(2).mean(dim=(0, 2, 3)).sqrt().tolist()
            c[:, 1:nb] = 0.0
            smooth, _ = model.decode(c)
        out["frmse_nfe10"] = frmse(gen[:, 1:], truth[:, 1:])
        out["frmse_nfe10_details_zeroed"] = frmse(smooth, truth[:, 1:])
    return out


def ns2d_simulation(
    train_steps: int = 600,
    num_train: int = 256,
    num_test: int = 16,
    nfe: tuple[int, ...] = (5, 20),
    grid: int = 32,
    steps: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Train the 2D Navier--Stokes wavelet flow (the tiny config ``configs/pde/wdno_ns2d.yaml``: bior2.4, J = 1 over
    (t, y, x), 3D U-Net width 16, AdamW 1e-3, batch 16, EMA of the weights) and score its simulations.

    ``num_test`` held-out trajectories (seed ``TEST_SEED + seed``): relative L2 of the vorticity against the
    re-simulated solver at each NFE, beside persistence (:math:`\\omega(t) = \\omega_0`) for scale. Returns a
    JSON-able dict.
    """
    import pytorch_lightning as pl

    from flowsci.domains.pde.data import PDEDataModule
    from flowsci.domains.pde.flow import WaveletFlow
    from flowsci.domains.pde.metrics import rel_l2
    from flowsci.domains.pde.model import UNet
    from flowsci.domains.pde.solvers import ns2d

    pl.seed_everything(seed, verbose=False)
    dm = PDEDataModule(problem="ns2d", num_train=num_train, num_val=16, grid=grid, steps=steps, seed=0, batch_size=16)
    net = UNet(in_channels=16, cond_channels=10, width=16, mults=(1, 2), time_dim=32, dims=3)
    model = WaveletFlow(
        net,
        wavelet=WAVELET,
        problem="ns2d",
        grid=grid,
        steps=steps,
        horizon=ns2d.horizon,
        nu=ns2d.nu,
        sim_prob=1.0,
        scale_power=SCALE_POWER,
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    out: dict[str, Any] = {"train_s": _timed_fit(model, dm, train_steps, ema_callbacks())}
    model.eval()
    ref = ns2d.generate(num_test, grid, steps, seed=TEST_SEED + seed)
    w, f = torch.as_tensor(ref.u.values), torch.as_tensor(ref.f.values)
    out["persistence_rel_l2"] = rel_l2(w[:, :1].expand_as(w)[:, 1:], w[:, 1:])
    for n in nfe:
        ds = model.simulate(w[:, 0], f, steps=n, seed=seed)
        out[f"nfe{n}_rel_l2"] = rel_l2(torch.as_tensor(ds.u.values)[:, 1:], torch.as_tensor(ds.u_solver.values)[:, 1:])
    return out
