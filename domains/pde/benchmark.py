"""``flowsci bench`` spec of the PDE domain: 1D controlled Burgers, simulation and control (WDNO-lite).

Data: trajectories of the torch Burgers solver (:data:`flowsci.domains.pde.solvers.burgers`, nu = 0.01, T = 1),
training seed 0, held-out test trajectories with seed 10,000 (never seen in training); generated on the fly and
cached as netCDF.

Methods (same U-Net, optimiser, batch and number of optimiser steps):

- ``wdno-sim``: :class:`~flowsci.domains.pde.flow.WaveletFlow` (Haar, J = 1) predicting u from (u0, f) of the
  test trajectories; scored against the solver's trajectory for the same (u0, f);
- ``wdno-control-model``: the same weights, control by objective guidance on the model's own u(T) (WDNO; target =
  the test trajectory's u(T)); J is computed by re-simulating the generated control with the solver;
- ``wdno-unguided``: the same weights sampling (u, f) from u0 without guidance (the control baseline the
  guidance must beat by >= 2x in J);
- ``wdno-control-solver``: as ``wdno-control-model`` but u(T) in the guidance objective comes from the differentiable
  torch solver run with the predicted control (the gradient reaches the control channels; beyond WDNO);
- ``phys-sim`` / ``phys-control-model`` / ``phys-control-solver`` (baseline): the same model in physical space
  (``wavelet="none"``, the paper's "DDPM" row);
- ``fno-sim`` (baseline): a Fourier neural operator over (t, x) mapping (u0 tiled, f) to u, relative-L2 loss;
- ``solver-torch`` / ``solver-numpy``: the numerical solver itself on the test (u0, f), torch vs the NumPy
  implementation of the same scheme (seconds per trajectory; rel_l2 = 0 by definition for the torch row).

Numbers are NOT comparable to WDNO's tables (far smaller data, network and training budget; T = 1 and 32
control steps instead of the paper's setup).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch

from flowsci.benchspec import BenchmarkSpec, Method, Metric, ReferenceRow, SampleRequest

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


def build_flow(dm: Any, wavelet: str, size: dict[str, Any]) -> Any:
    """A fresh :class:`WaveletFlow` (``wavelet="none"``: physical space) sized by ``size``; AdamW 1e-3."""
    from flowsci.domains.pde.flow import WaveletFlow
    from flowsci.domains.pde.model import UNet

    bands = 1 if wavelet == "none" else 4
    net = UNet(
        in_channels=2 * bands,
        cond_channels=bands + 2,
        width=size["width"],
        mults=tuple(size["mults"]),
        time_dim=32,
    )
    return WaveletFlow(
        net,
        wavelet=wavelet,
        levels=1,
        grid=size["grid"],
        steps=size["steps"],
        guidance_scale=size["guidance"],
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
    """Simulate every test trajectory from its (u0, f)."""
    from flowsci.domains.pde.flow import PDESolution

    u0, f, _ = _u0_f(request.reference, request.num)
    ds = model.simulate(u0, f, steps=request.steps, solver=request.solver, seed=request.seed)
    return PDESolution(x=torch.as_tensor(ds.u.values), nfe=int(ds.attrs["nfe"]), times=torch.zeros(1), dataset=ds)


def sample_control(model: Any, request: SampleRequest, guidance: float | None = None, objective: str = "model") -> Any:
    """Control every test u0 towards the test trajectory's final state (``guidance=0``: unguided)."""
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


class SolverRow(torch.nn.Module):
    """The numerical solver as a benchmark row (nothing to train): ``backend`` is ``"torch"`` or ``"numpy"``."""

    def __init__(self, backend: str) -> None:
        super().__init__()
        self.backend = backend
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def compute_loss(self, batch: Any, generator: Any = None) -> Any:
        """No training (train_steps = 0)."""
        return self.dummy.sum(), {}


def sample_solver(model: SolverRow, request: SampleRequest) -> Any:
    """Run the solver on the test (u0, f); the dataset's ``u_solver`` is the torch solver's trajectory."""
    from flowsci.domains.pde.data import make_dataset
    from flowsci.domains.pde.flow import PDESolution
    from flowsci.domains.pde.solvers import burgers, solve_burgers_numpy

    u0, f, _ = _u0_f(request.reference, request.num)
    if model.backend == "torch":
        u = burgers.solve(u0.double(), f.double()).numpy()
    else:
        u = solve_burgers_numpy(u0.double().numpy(), f.double().numpy(), nu=burgers.nu, horizon=burgers.horizon)
    ref = request.reference.isel(sample=slice(0, request.num))
    ds = make_dataset("burgers", u, f.numpy(), ref["x"].values, burgers.horizon, attrs={"task": "solver", "nfe": 1})
    ds["u_solver"] = (("sample", "time", "x"), ref["u"].values, {"units": "1"})
    return PDESolution(x=torch.as_tensor(u), nfe=1, times=torch.zeros(1), dataset=ds)


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

    def datamodule() -> Any:
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

    wdno = partial(build_flow, wavelet="haar", size=size)
    phys = partial(build_flow, wavelet="none", size=size)
    guided = partial(sample_control, guidance=size["guidance"])
    methods = [
        Method("wdno-sim", wdno, sample=sample_simulate, description="wavelet flow (Haar J=1), simulation"),
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
    if suite != "smoke":
        for backend in ("torch", "numpy"):
            methods.append(
                Method(
                    f"solver-{backend}",
                    lambda dm, b=backend: SolverRow(b),
                    baseline=True,
                    train_steps=0,
                    sample=sample_solver,
                    nfe_grid=(1,),
                    description=f"numerical Burgers solver ({backend}), explicit Euler + centred differences",
                )
            )
    return BenchmarkSpec(
        name="pde",
        datamodule=datamodule,
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
    )


def resolution_generalisation(
    train_steps: int = 600, num_train: int = 512, num_test: int = 16, steps: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Train :class:`~flowsci.domains.pde.flow.RefineFlow` on 2x pairs at 128 x 32 and compare it with bilinear
    upsampling at 2x and (chained) 4x on solver trajectories at 512 x 128 (resolutions never seen in training).

    The coarse input is the 4x4 block average of the 512 x 128 truth; errors are relative L2 and high-band fRMSE of
    u (and relative L2 of f) against the block-averaged truth at each resolution. Returns a JSON-able dict.
    """
    import time

    import pytorch_lightning as pl

    from flowsci.domains.pde.data import PDEDataModule
    from flowsci.domains.pde.flow import RefineFlow
    from flowsci.domains.pde.metrics import frmse, rel_l2
    from flowsci.domains.pde.model import UNet
    from flowsci.domains.pde.solvers import burgers
    from flowsci.module import QUIET_TRAINER

    pl.seed_everything(seed, verbose=False)
    dm = PDEDataModule(problem="burgers", num_train=num_train, num_val=16, grid=128, steps=32, seed=0, batch_size=16)
    model = RefineFlow(
        UNet(in_channels=6, cond_channels=2, width=16, mults=(1, 2), time_dim=32),
        optimizer=partial(torch.optim.AdamW, lr=1e-3),
    )
    t0 = time.perf_counter()
    trainer = pl.Trainer(
        max_steps=train_steps, max_epochs=-1, accelerator="cpu", gradient_clip_val=1.0, **QUIET_TRAINER
    )
    trainer.fit(model, datamodule=dm)
    out: dict[str, Any] = {"train_s": time.perf_counter() - t0}
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
