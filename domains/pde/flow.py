r"""WaveletFlow: flow matching over the wavelet coefficients of whole (state, control) trajectories (WDNO).

Following the Wavelet Diffusion Neural Operator (Hu et al., ICLR 2025), a trajectory of the state
:math:`u_{1..N_t}` and the control :math:`f_{0..N_t-1}` is one image :math:`X \in \mathbb R^{F \times N_t \times
N_x}` (:math:`F = 2` fields; 1 without control). A separable periodised DWT over (t, x) with :math:`J` packet
levels (:class:`~flowsci.domains.pde.wavelets.WaveletTransform`) gives :math:`F\,4^J` sub-band channels of size
:math:`N_t/2^J \times N_x/2^J`, each standardised with statistics of the training data:
:math:`\tilde c = (c - \mu_b)/s_b` (stored in the checkpoint), the scale :math:`s_b = \sigma_b^p\sigma_F^{1-p}` being
the band's standard deviation for ``scale_power`` :math:`p = 1`; :math:`p = 1/2` leaves the small detail bands below
the prior noise's unit variance, as WDNO's hand-set constants do. A U-Net learns the rectified-flow velocity
:math:`x_t = (1-t)\,\varepsilon + t\,x_1`, :math:`v = x_1 - \varepsilon` on these channels, where WDNO uses DDPM
(:mod:`~flowsci.domains.pde.ddpm` has that variant).

Conditioning (WDNO's in-painting, adapted to flow matching):

* the initial state :math:`u_0` enters as a condition image: :math:`u_0` tiled over time, transformed and
  standardised like the state's bands (:math:`4^J` channels);
* known fields are *replaced*: in simulation the control :math:`f` is given, so its channels of :math:`x_t` are
  set to their clean values at every step (their velocity is zero) and a per-field mask channel tells the
  network which fields are known. In training, each trajectory is a simulation example (``f`` known) with
  probability ``sim_prob`` and a joint (control) example otherwise; the loss is averaged over the unknown
  channels only.

Control (:meth:`WaveletFlow.control`): sample :math:`(u, f)` jointly from :math:`u_0` with the core's
:class:`~flowsci.guidance.ObjectiveGuidance` on
:math:`\mathcal J(\hat x_1) = \frac{1}{N_x}\lVert u(T) - u_T^*\rVert^2 + w_f\,\sum f^2\,\Delta t\,\Delta x`, the
gradient taken through the differentiable inverse wavelet transform and the de-standardisation of the predicted
clean sample :math:`\hat x_1 = x_t + (1-t)\,v`; the generated control is always re-simulated with the numerical
solver, and both the model's and the solver's :math:`\mathcal J` are returned.

``wavelet="none"`` gives the same model in physical space (the paper's "DDPM" row, our baseline).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from flowsci.contract import GenerativeModule, check_sample_args, outside_cli
from flowsci.domains.pde.solvers import NS2D, Advection, Burgers, Problem, solve_ns2d
from flowsci.domains.pde.wavelets import WaveletTransform
from flowsci.errors import InputError, NonFiniteError
from flowsci.guidance import GUIDANCE_SCHEDULES, ObjectiveGuidance
from flowsci.module import FlowMatching, masked_mean
from flowsci.paths import CondOTPath
from flowsci.solvers import FIXED_STEP_METHODS, Solution, solve_ode
from flowsci.timesteps import TimeSampler, UniformTime

__all__ = ["FNOSurrogate", "MultiResolutionFlow", "PDESolution", "RefineFlow", "WaveletFlow", "TASKS"]


LOSS_WEIGHTS = ("uniform", "std", "variance")
"""Per-band loss weightings of :class:`WaveletFlow` (see its ``loss_weight`` argument)."""

TASKS = ("simulate", "control", "joint")
"""Sampling tasks: simulate (u given u0 and f), control (u and f given u0 and a target), joint (u and f given u0)."""


@dataclass
class PDESolution(Solution):
    """A :class:`~flowsci.solvers.Solution` whose native object is an :class:`xarray.Dataset` (``dataset``)."""

    dataset: Any = None


def make_problem(problem: str, nu: float, horizon: float) -> Problem:
    """The solver problem named ``problem`` with the model's parameters."""
    if problem == "burgers":
        return Burgers(nu=nu, horizon=horizon)
    if problem == "advection":
        return Advection(horizon=horizon)
    if problem == "ns2d":
        return NS2D(nu=nu, horizon=horizon)
    raise InputError("problem", f"WaveletFlow supports 'burgers', 'advection' and 'ns2d', got {problem!r}")


def _as_tensor(value: Any, name: str, dtype: torch.dtype = torch.float32) -> Tensor:
    if hasattr(value, "values") and not isinstance(value, Tensor):  # xarray.DataArray
        value = value.values
    try:
        t = torch.as_tensor(np.asarray(value, dtype=np.float64) if not isinstance(value, Tensor) else value)
    except (TypeError, ValueError) as err:
        raise InputError(name, f"must be an array of numbers ({err})") from err
    if not bool(torch.isfinite(t).all()):
        raise InputError(name, "holds NaN or Inf")
    return t.to(dtype)


class WaveletFlow(FlowMatching):
    """WDNO-style flow matching over wavelet coefficients of (u, f) trajectories (see the module docstring).

    Args:
        net: :class:`~flowsci.domains.pde.model.UNet` with ``in_channels = fields * 4**levels`` and
            ``cond_channels = 4**levels + fields``.
        wavelet: PyWavelets wavelet name (``"haar"``, ``"bior2.4"``, ``"db4"``...) or ``"none"`` (physical space).
        levels: Packet levels :math:`J`.
        problem: ``"burgers"`` (u and control f), ``"advection"`` (u only) or ``"ns2d"`` (2D vorticity and forcing
            on an ``grid x grid`` torus; a 3D transform over (t, y, x) and a ``dims=3`` U-Net; simulation only).
        grid: Grid points :math:`N_x` per spatial axis (power of two).
        steps: Recording intervals :math:`N_t` (power of two).
        horizon: Final time :math:`T`.
        nu: Viscosity (Burgers, Navier--Stokes), for re-simulation.
        sim_prob: Probability that a training trajectory is a simulation example (control channels known).
        control_weight: :math:`w_f` of the control objective.
        guidance_scale: Default :class:`~flowsci.guidance.ObjectiveGuidance` scale of :meth:`control`.
        guidance_schedule: Default guidance schedule (``constant``, ``increasing``, ``decreasing``).
        time_sampler: Training-time sampler (default uniform).
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.
        sample_steps: Default ODE steps.
        sample_solver: Default ODE solver.
        stats_samples: Training trajectories used for the per-band statistics.
        loss_weight: Weight :math:`w_b` of band :math:`b` in the loss on standardised coefficients: ``"uniform"``
            (1), ``"std"`` (:math:`\\propto\\sigma_b`, WDNO's choice: its normalising constants are also its loss
            weights) or ``"variance"`` (:math:`\\propto\\sigma_b^2`: the physical-space MSE for an orthonormal
            wavelet); normalised to mean 1 per field.
        scale_power: Exponent :math:`p` of the band scale :math:`s_b = \\sigma_b^p\\,\\sigma_F^{1-p}` that divides band
            :math:`b` (:math:`\\sigma_b` its training std, :math:`\\sigma_F` the RMS of its field's :math:`\\sigma_b`):
            1 standardises every band to unit variance; below 1 the small detail bands keep a variance below the
            prior noise's, as with WDNO's constant scales.

    """

    solvers: tuple[str, ...] = tuple(FIXED_STEP_METHODS)

    def __init__(
        self,
        net: nn.Module,
        wavelet: str = "haar",
        levels: int = 1,
        problem: str = "burgers",
        grid: int = 128,
        steps: int = 32,
        horizon: float = 1.0,
        nu: float = 0.01,
        sim_prob: float = 0.5,
        control_weight: float = 1e-3,
        guidance_scale: float = 1.0,
        guidance_schedule: str = "constant",
        time_sampler: TimeSampler | None = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 20,
        sample_solver: str = "euler",
        stats_samples: int = 512,
        loss_weight: str = "uniform",
        scale_power: float = 1.0,
    ) -> None:
        for name, v in (("grid", grid), ("steps", steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 2 or v & (v - 1):
                raise InputError(name, f"must be a power of two >= 2 (the wavelet transform halves it), got {v!r}")
        space = 2 if problem == "ns2d" else 1
        transform = WaveletTransform(wavelet, levels, ndim=1 + space)
        transform.check_shape((steps, *[grid] * space), "grid/steps")
        fields = 1 if problem == "advection" else 2
        factor = 2**transform.level
        super().__init__(
            net=net,
            path=CondOTPath(),
            time_sampler=time_sampler or UniformTime(),
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            sample_steps=sample_steps,
            sample_solver=sample_solver,
            data_shape=[fields * transform.bands, steps // factor, *[grid // factor] * space],
        )
        self.save_hyperparameters(
            ignore=["net", "optimizer", "lr_scheduler", "time_sampler"] if outside_cli() else None
        )
        if not 0.0 <= sim_prob <= 1.0:
            raise ValueError(f"sim_prob must be in [0, 1], got {sim_prob}")
        if guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {guidance_schedule!r}")
        if loss_weight not in LOSS_WEIGHTS:
            raise ValueError(f"loss_weight must be one of {LOSS_WEIGHTS}, got {loss_weight!r}")
        self.loss_weight = loss_weight
        if not 0.0 <= scale_power <= 1.0:
            raise ValueError(f"scale_power must be in [0, 1], got {scale_power}")
        self.scale_power = float(scale_power)
        self.fields, self.space = fields, space
        cfg = getattr(net, "config", {}) or {}
        if cfg and cfg.get("dims", 1 + space) != 1 + space:
            raise ValueError(f"problem {problem!r} needs a U-Net with dims={1 + space}, got {cfg.get('dims')}")
        want_in, want_cond = self.fields * transform.bands, transform.bands + self.fields
        if cfg and (cfg.get("in_channels") != want_in or cfg.get("cond_channels") != want_cond):
            raise ValueError(
                f"net must have in_channels={want_in} and cond_channels={want_cond} for wavelet={wavelet!r}, "
                f"levels={levels}, problem={problem!r}; got {cfg.get('in_channels')} and {cfg.get('cond_channels')}"
            )
        self.transform = transform
        self.problem_name, self.grid, self.steps = problem, grid, steps
        self.horizon, self.nu = float(horizon), float(nu)
        self.problem = make_problem(problem, self.nu, self.horizon)
        self.sim_prob, self.control_weight = float(sim_prob), float(control_weight)
        self.guidance_scale, self.guidance_schedule = float(guidance_scale), guidance_schedule
        self.stats_samples = stats_samples
        # plain attributes (not buffers): EMA must neither average nor swap data statistics; they travel in
        # state_dict() through get_extra_state / set_extra_state
        self.band_mean: Tensor | None = None
        self.band_std: Tensor | None = None

    # ------------------------------------------------------------------------------------------- statistics
    def get_extra_state(self) -> Tensor:
        """Per-band statistics ``[2, C]`` (mean, std; float64), or an empty tensor before fitting."""
        if self.band_mean is None:
            return torch.zeros(0, dtype=torch.float64)
        return torch.stack([self.band_mean, self.band_std]).to(torch.float64).cpu()

    def set_extra_state(self, state: Any) -> None:
        """Restore the statistics of :meth:`get_extra_state`."""
        s = torch.as_tensor(state, dtype=torch.float64)
        if s.numel() == 0:
            self.band_mean = self.band_std = None
        else:
            self.band_mean, self.band_std = s[0].clone(), s[1].clone()

    def fit_statistics(self, u: Tensor, f: Tensor) -> None:
        """Set the per-band mean and standard deviation from trajectories ``u [n, Nt+1, Nx]``, ``f [n, Nt, Nx]``."""
        with torch.no_grad():
            c = self.transform(self._stack(u.double(), f.double()))
            axes = (0, *range(2, c.dim()))
            self.band_mean = c.mean(dim=axes)
            sigma = c.std(dim=axes).clamp_min(1e-6).reshape(self.fields, -1)
            field = sigma.pow(2).mean(dim=1, keepdim=True).sqrt()  # RMS over a field's bands
            self.band_std = (sigma**self.scale_power * field ** (1 - self.scale_power)).reshape(-1)

    def on_fit_start(self) -> None:
        """Per-band statistics from ``trainer.datamodule`` (the first ``stats_samples`` training trajectories)."""
        if self.band_mean is not None:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "statistics_sample"):
            data = dm.statistics_sample(self.stats_samples)
            self.fit_statistics(data["u"], data["f"])

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.band_mean is None:
            raise RuntimeError(
                f"{type(self).__name__} has no per-band statistics: fit it with a PDEDataModule or call "
                "fit_statistics(u, f) first"
            )
        return self._per_channel(self.band_mean.to(x))[None], self._per_channel(self.band_std.to(x))[None]

    def _per_channel(self, v: Tensor) -> Tensor:
        """``[..., C]`` -> ``[..., C, 1, ...]``, broadcastable over the coefficient image's (t, space) axes."""
        return v.reshape(*v.shape, *([1] * (1 + self.space)))

    # ------------------------------------------------------------------------------------------- encoding
    def _stack(self, u: Tensor, f: Tensor | None) -> Tensor:
        fields = [u[:, 1:]]
        if self.fields == 2:
            fields.append(f if f is not None else torch.zeros_like(u[:, 1:]))  # [B, Nt, *space] each
        return torch.stack(fields, dim=1)

    def encode(self, u: Tensor, f: Tensor | None) -> Tensor:
        """Standardised coefficients ``[B, C, h, w]`` of ``u [B, Nt+1, Nx]`` (from step 1) and ``f [B, Nt, Nx]``."""
        c = self.transform(self._stack(u, f))
        mean, std = self._stats(c)
        return (c - mean) / std

    def decode(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Fields ``u_{1..Nt} [B, Nt, Nx]`` and ``f [B, Nt, Nx]`` (``None`` without control) from coefficients."""
        mean, std = self._stats(x)
        phys = self.transform.inverse(x * std + mean)
        return phys[:, 0], (phys[:, 1] if self.fields == 2 else None)

    def condition(self, u0: Tensor, known: Tensor) -> Tensor:
        """Condition image ``[B, 4**J + F, h, w]``: standardised coefficients of ``u0`` tiled over time, and the
        known-field mask ``known [B, F]`` as constant channels.
        """
        b = u0.shape[0]
        tiled = u0[:, None, None].expand(b, 1, self.steps, *u0.shape[1:])
        c = self.transform(tiled)
        nb = self.transform.bands
        mean, std = self._stats(c)
        c = (c - mean[:, :nb]) / std[:, :nb]
        mask = self._per_channel(known.to(c.dtype)).expand(b, self.fields, *c.shape[2:])
        return torch.cat([c, mask], dim=1)

    def band_weights(self) -> Tensor:
        """Loss weight per coefficient channel ``[C]`` (``loss_weight``; mean 1 over each field's bands)."""
        if self.band_std is None:
            raise RuntimeError(f"{type(self).__name__} has no per-band statistics")
        power = {"uniform": 0, "std": 1, "variance": 2}[self.loss_weight]
        w = self.band_std.reshape(self.fields, -1) ** power
        return (w / w.mean(dim=1, keepdim=True)).reshape(-1)

    def _known_channels(self, known: Tensor) -> Tensor:
        """Per-channel mask ``[B, C]`` from the per-field mask ``known [B, F]`` (channels are field-major)."""
        return known.repeat_interleave(self.transform.bands, dim=1)

    # ------------------------------------------------------------------------------------------- training
    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Masked flow-matching loss on the channels that are not given (see the module docstring)."""
        x1, kc, cond = self._training_example(batch, generator)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = self.time_sampler.sample(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        ps = self.path.sample(x0, x1, t)
        out = self.net(torch.where(kc, x1, ps.x_t), t, cond=cond)
        loss = self.masked_loss(out, ps.dx_t, kc)
        return loss, {"loss": loss.detach()}

    def _training_example(self, batch: Any, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        """Clean coefficients ``[B, C, h, w]``, the known-channel mask ``[B, C, 1, 1]`` (f known with probability
        ``sim_prob``) and the condition image of a training batch.
        """
        if self.band_mean is None:  # fitted without a PDEDataModule: use the first batch
            self.fit_statistics(batch["u"], batch.get("f"))
        u, f = batch["u"], batch.get("f")
        x1 = self.encode(u, f)
        b = x1.shape[0]
        known = torch.zeros(b, self.fields, dtype=torch.bool, device=x1.device)
        if self.fields == 2:
            known[:, 1] = torch.rand(b, generator=generator, device=x1.device) < self.sim_prob
        return x1, self._per_channel(self._known_channels(known)), self.condition(u[:, 0], known)

    def masked_loss(self, pred: Tensor, target: Tensor, known: Tensor) -> Tensor:
        """Band-weighted (``loss_weight``) squared error averaged over the unknown channels (``known [B, C, 1, 1]``)."""
        w = self._per_channel(self.band_weights().to(pred))
        return masked_mean(w * (pred - target) ** 2, ~known.expand_as(pred))

    def num_examples(self, batch: Any) -> int:
        """Trajectories in a batch."""
        return int(batch["u"].shape[0])

    # ------------------------------------------------------------------------------------------- generation
    def control_objective(self, target: Tensor, control_weight: float | None = None, u0: Tensor | None = None) -> Any:
        """:math:`N_x\\,\\mathcal J(\\hat x_1)`, :math:`\\mathcal J = \\mathrm{mean}_x (u(T) - u_T^*)^2 + w_f \\sum f^2
        \\Delta t \\Delta x`, as a function of standardised coefficients ``[B, C, h, w]`` (differentiable; ``[B]``).

        :math:`u(T)` is the model's own predicted final state (WDNO; gradient through the inverse wavelet transform
        only) or, when ``u0`` is given, the final state of the differentiable torch solver run from ``u0`` with the
        predicted control :math:`\\hat f` ("physics" guidance: the gradient reaches the control channels through the
        solver; one solver pass with autograd per step). The factor :math:`N_x` makes the guidance scale independent
        of the grid (the Hessian of the sum over x in standardised coefficients is about :math:`2\\sigma_b^2`, so
        scales of order 1 are stable for Euler steps).
        """
        w_f = self.control_weight if control_weight is None else float(control_weight)
        dt, dx = self.horizon / self.steps, self._dx()
        nx = float(self.grid)

        def objective(x1_hat: Tensor, **_: Any) -> Tensor:
            u, f = self.decode(x1_hat)
            if u0 is not None and f is not None:
                u_end = self.problem.solve(u0.to(f).detach(), f)[:, -1]
            else:
                u_end = u[:, -1]
            j = ((u_end - target.to(u)) ** 2).mean(-1)
            if f is not None and w_f:
                j = j + w_f * (f**2).sum(dim=(-2, -1)) * dt * dx
            # scaled by N_x (a sum over x): the guidance scale then does not depend on the grid
            return nx * j

        return objective

    def _dx(self) -> float:
        return 1.0 / (self.grid + 1) if self.problem_name == "burgers" else 1.0 / self.grid

    def generate(
        self,
        u0: Tensor,
        f: Tensor | None = None,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        guidance: Any = None,
        progress: bool | None = False,
    ) -> tuple[Tensor, Tensor | None, int, Tensor]:
        """Core sampler: trajectories from ``u0 [B, Nx]`` (and the control ``f [B, Nt, Nx]`` when given).

        Returns:
            ``u [B, Nt+1, Nx]`` (``u[:, 0] = u0``), ``f [B, Nt, Nx]`` (given or generated; ``None`` without
            control), the NFE and the final coefficients ``[B, C, h, w]``.

        """
        b = u0.shape[0]
        dev, dtype = self.device, torch.float32
        u0 = u0.to(dev, dtype)
        known = torch.zeros(b, self.fields, dtype=torch.bool, device=dev)
        u_dummy = torch.zeros(b, self.steps + 1, *u0.shape[1:], device=dev, dtype=dtype)
        if f is not None and self.fields == 2:
            known[:, 1] = True
            x_known = self.encode(u_dummy, f.to(dev, dtype))
        else:
            x_known = torch.zeros(b, *self.data_shape, device=dev, dtype=dtype)
        kc = self._per_channel(self._known_channels(known)).expand(b, *self.data_shape)
        cond = self.condition(u0, known)
        gen = torch.Generator(device=dev).manual_seed(seed) if seed is not None else None
        x0 = torch.randn((b, *self.data_shape), generator=gen, device=dev, dtype=dtype)
        x0 = torch.where(kc, x_known, x0)
        n_steps = steps if steps is not None else self.sample_steps
        x, nfe = self._integrate(x0, cond, kc, x_known, n_steps, solver, guidance, progress, gen)
        x = torch.where(kc, x_known, x)
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{type(self).__name__}: sampling produced non-finite values (NFE {nfe})")
        u_gen, f_gen = self.decode(x)
        u = torch.cat([u0[:, None], u_gen], dim=1)
        if f is not None and self.fields == 2:
            f_gen = f.to(dev, dtype)
        return u, f_gen, nfe, x

    def _integrate(
        self,
        x0: Tensor,
        cond: Tensor,
        known: Tensor,
        x_known: Tensor,
        steps: int,
        solver: str | None,
        guidance: ObjectiveGuidance | None,
        progress: bool | None,
        generator: torch.Generator | None,
    ) -> tuple[Tensor, int]:
        """Integrate the (guided) velocity from the prior draw ``x0`` to t = 1; known channels stay fixed.

        Returns the final coefficients ``[B, C, h, w]`` and the NFE.
        """

        def velocity(x: Tensor, t: Tensor, **c: Any) -> Tensor:
            return self.net(x, t, cond=c["cond"]).masked_fill(known, 0.0)

        guided = velocity if guidance is None else guidance.guide(velocity, self.path)

        def final(x: Tensor, t: Tensor, **c: Any) -> Tensor:
            return guided(x, t, **c).masked_fill(known, 0.0)

        sol = solve_ode(final, x0, method=solver or self.sample_solver, steps=steps, progress=progress, cond=cond)
        return sol.x, sol.nfe * (guidance.network_evals if guidance is not None else 1)

    def _inputs(self, u0: Any, f: Any = None) -> tuple[Tensor, Tensor | None]:
        space = (self.grid,) * self.space
        u0 = _as_tensor(u0, "u0")
        if u0.dim() == self.space:
            u0 = u0[None]
        if tuple(u0.shape[1:]) != space:
            shape = ", ".join(map(str, space))
            raise InputError("u0", f"must be [B, {shape}] (the model's grid), got {tuple(u0.shape)}")
        if f is None:
            return u0, None
        f = _as_tensor(f, "f")
        if f.dim() == 1 + self.space:
            f = f[None]
        want = (u0.shape[0], self.steps, *space)
        if tuple(f.shape) != want:
            raise InputError("f", f"must be {list(want)}, got {tuple(f.shape)}")
        return u0, f

    @torch.no_grad()
    def simulate(
        self,
        u0: Any,
        f: Any = None,
        steps: int = 10,
        solver: str | None = None,
        seed: int | None = 0,
        resimulate: bool = True,
    ) -> Any:
        """Predict the trajectory from ``u0`` (``[B, Nx]`` or ``[Nx]``) under the control ``f`` (``[B, Nt, Nx]``).

        Returns:
            An :class:`xarray.Dataset` with ``u`` (generated), ``f`` and, when ``resimulate``, ``u_solver`` (the
            numerical solver's trajectory for the same ``u0`` and ``f``); attributes ``nfe``, ``seed``.

        """
        check_sample_args(1, steps, solver, self.solvers)
        u0_t, f_t = self._inputs(u0, f)
        if self.fields == 2 and f_t is None:
            raise InputError("f", "simulation of a controlled problem needs the control f [B, Nt, Nx]")
        u, f_out, nfe, _ = self.generate(u0_t, f_t, steps=steps, solver=solver, seed=seed)
        truth = self._resimulate(u0_t, f_t) if resimulate else None
        return self._dataset(u, f_out, nfe, seed, task="simulate", u_solver=truth)

    @torch.no_grad()
    def control(
        self,
        u0: Any,
        target: Any,
        steps: int = 20,
        guidance: float | ObjectiveGuidance | None = None,
        control_weight: float | None = None,
        schedule: str | None = None,
        solver: str | None = None,
        seed: int | None = 0,
        objective: str = "model",
    ) -> Any:
        """Find a control steering ``u0`` to ``target`` at :math:`T` by guided sampling, then re-simulate it.

        Args:
            u0: Initial states ``[B, Nx]``.
            target: Target final states :math:`u_T^*` ``[B, Nx]``.
            steps: ODE steps.
            guidance: Guidance scale (float; 0 = unguided sampling from :math:`p(u, f \\mid u_0)`), or a ready
                :class:`~flowsci.guidance.ObjectiveGuidance` acting on standardised coefficients (see
                :meth:`control_objective`); default ``guidance_scale``.
            control_weight: :math:`w_f` (default the model's).
            schedule: Guidance schedule (default the model's).
            solver: ODE solver.
            seed: Seed of the prior draw.
            objective: ``"model"`` (WDNO: :math:`u(T)` of the predicted clean sample) or ``"solver"`` (:math:`u(T)`
                of the differentiable solver run with the predicted control; see :meth:`control_objective`).

        Returns:
            An :class:`xarray.Dataset` with ``u`` (model), ``f`` (generated control), ``u_solver`` (solver run with
            ``f``), ``target``, and per trajectory ``J_model``, ``J_solver``, ``energy``, ``objective`` (``J_solver +
            w_f * energy``).

        """
        if self.fields != 2:
            raise InputError("control", f"problem {self.problem_name!r} has no control field")
        if self.space != 1:
            raise InputError("control", f"guided control is implemented for 1D problems, not {self.problem_name!r}")
        if objective not in ("model", "solver"):
            raise InputError("objective", f"must be 'model' or 'solver', got {objective!r}")
        check_sample_args(1, steps, solver, self.solvers)
        u0_t, _ = self._inputs(u0)
        tgt = _as_tensor(target, "target")
        if tgt.dim() == 1:
            tgt = tgt[None]
        if tgt.shape != u0_t.shape:
            raise InputError("target", f"must be shaped like u0 {tuple(u0_t.shape)}, got {tuple(tgt.shape)}")
        tgt = tgt.to(self.device)
        if isinstance(guidance, ObjectiveGuidance):
            g = guidance
        else:
            scale = self.guidance_scale if guidance is None else float(guidance)
            g = (
                ObjectiveGuidance(
                    self.control_objective(
                        tgt, control_weight, u0_t.to(self.device) if objective == "solver" else None
                    ),
                    scale,
                    schedule or self.guidance_schedule,
                )
                if scale > 0
                else None
            )
        u, f, nfe, _ = self.generate(u0_t, None, steps=steps, solver=solver, seed=seed, guidance=g)
        truth = self._resimulate(u0_t, f)
        w_f = self.control_weight if control_weight is None else float(control_weight)
        ds = self._dataset(u, f, nfe, seed, task="control", u_solver=truth, target=tgt, control_weight=w_f)
        ds.attrs["guidance_objective"] = objective
        return ds

    def _resimulate(self, u0: Tensor, f: Tensor | None) -> Tensor | None:
        if self.problem_name == "ns2d":
            p = self.problem
            return solve_ns2d(u0.double().cpu(), f.double().cpu(), nu=p.nu, horizon=p.horizon, dt=p.dt).float()
        if self.problem_name != "burgers":
            return None
        return self.problem.solve(u0.double().cpu(), f.double().cpu()).float()

    def _dataset(
        self,
        u: Tensor,
        f: Tensor | None,
        nfe: int,
        seed: int | None,
        task: str,
        u_solver: Tensor | None = None,
        target: Tensor | None = None,
        control_weight: float | None = None,
    ) -> Any:
        from flowsci.domains.pde.data import make_dataset
        from flowsci.domains.pde.metrics import control_cost

        if self.space == 2:  # the periodic NS grid on [0, 2 pi)
            x = y = np.arange(self.grid) * (2 * np.pi / self.grid)
        else:
            x, y = self.problem.grid(self.grid), None
        space = ("x",) if y is None else ("y", "x")
        f_np = (f if f is not None else torch.zeros_like(u[:, 1:])).detach().cpu().numpy()
        extra: dict[str, Any] = {}
        if u_solver is not None:
            extra["u_solver"] = (
                ("sample", "time", *space),
                u_solver.detach().cpu().numpy().astype(np.float32),
                {"units": "1", "long_name": "numerical solver trajectory for the same u0 and f"},
            )
        if target is not None:
            tgt = target.detach().cpu()
            extra["target"] = (("sample", "x"), tgt.numpy(), {"units": "1", "long_name": "target final state"})
            w = float(control_weight or 0.0)
            dt, dx = self.horizon / self.steps, self._dx()
            cm = control_cost(u.detach().cpu(), f.detach().cpu(), tgt, dt, dx, w)
            cs = control_cost(u_solver, f.detach().cpu(), tgt, dt, dx, w)
            extra["J_model"] = (("sample",), cm["J"].numpy(), {"long_name": "mean_x (u_model(T) - target)^2"})
            extra["J_solver"] = (("sample",), cs["J"].numpy(), {"long_name": "mean_x (u_solver(T) - target)^2"})
            extra["energy"] = (("sample",), cs["energy"].numpy(), {"long_name": "sum f^2 dt dx"})
            extra["objective"] = (("sample",), cs["objective"].numpy(), {"long_name": "J_solver + w_f * energy"})
        ds = make_dataset(
            self.problem_name,
            u=u.detach().cpu().numpy(),
            f=f_np,
            x=x,
            y=y,
            horizon=self.horizon,
            attrs={
                "task": task,
                "nfe": int(nfe),
                "seed": -1 if seed is None else int(seed),
                "model": f"WaveletFlow(wavelet={self.transform.wavelet}, levels={self.transform.level})",
                **({"control_weight": float(control_weight)} if control_weight is not None else {}),
                **({"nu": self.nu} if self.problem_name in ("burgers", "ns2d") else {}),
            },
            extra=extra,
        )
        ds.attrs["source"] = f"flowsci.domains.pde.flow.WaveletFlow ({ds.attrs['model']})"
        return ds

    @torch.no_grad()
    def sample(
        self,
        num: int,
        *,
        steps: int | None = None,
        solver: str | None = None,
        seed: int | None = None,
        task: str = "simulate",
        guidance_scale: float | None = None,
        objective: str = "model",
        data_seed: int = 10_000,
        progress: bool | None = False,
    ) -> PDESolution:
        """Draw ``num`` initial states and controls from the problem's distribution and run ``task`` on them.

        Args:
            num: Number of trajectories.
            steps: ODE steps (default ``sample_steps``).
            solver: ODE solver.
            seed: Seed of the prior draw (and, plus ``data_seed``, of the drawn conditions).
            task: ``simulate`` (u from u0 and f), ``control`` (f steering u0 to the final state of a solver
                trajectory), or ``joint`` (u and f from u0, unguided).
            guidance_scale: Guidance scale of ``control`` (default the model's).
            objective: Guidance objective of ``control``: ``"model"`` or ``"solver"`` (see :meth:`control`).
            data_seed: Offset of the seed of the drawn conditions (kept apart from training seeds).
            progress: Progress bar.

        Returns:
            A :class:`PDESolution` with ``dataset`` (the xarray.Dataset of :meth:`simulate` / :meth:`control`), the
            final coefficients in ``x``, the NFE and the seed.

        """
        check_sample_args(num, steps, solver, self.solvers)
        if task not in TASKS:
            raise InputError("task", f"must be one of {TASKS}, got {task!r}")
        if self.fields == 1 and task != "simulate":
            raise InputError("task", f"problem {self.problem_name!r} has no control; use task='simulate'")
        s = 0 if seed is None else int(seed)
        with torch.random.fork_rng():
            ref = self.problem.generate(num, self.grid, self.steps, seed=data_seed + s)
        u_ref = torch.as_tensor(ref["u"].values)
        f_ref = torch.as_tensor(ref["f"].values)
        n_steps = steps if steps is not None else self.sample_steps
        if task == "simulate":
            ds = self.simulate(u_ref[:, 0], f_ref if self.fields == 2 else None, n_steps, solver, seed, False)
            dims = ("sample", "time", *(("y", "x") if self.space == 2 else ("x",)))
            ds["u_solver"] = (dims, u_ref.numpy(), {"units": "1", "long_name": "solver trajectory"})
        elif task == "control":
            ds = self.control(
                u_ref[:, 0], u_ref[:, -1], n_steps, guidance_scale, solver=solver, seed=seed, objective=objective
            )
        else:
            ds = self.control(u_ref[:, 0], u_ref[:, -1], n_steps, 0.0, solver=solver, seed=seed)
            ds.attrs["task"] = "joint"
        x = torch.as_tensor(ds["u"].values)
        return PDESolution(
            x=x, nfe=int(ds.attrs["nfe"]), times=torch.linspace(0, 1, n_steps + 1), seed=seed, dataset=ds
        )

    def write_samples(self, solution: PDESolution, out_dir: str | os.PathLike) -> list[Path]:
        """``samples.nc`` (CF netCDF4) and ``samples.png`` (space-time heatmaps, :func:`plot_fields`)."""
        from flowsci.domains.pde.data import write_dataset
        from flowsci.domains.pde.metrics import plot_fields

        out = Path(out_dir)
        ds = solution.dataset
        if ds is None:
            raise InputError("solution", "holds no dataset (sample it with WaveletFlow.sample)")
        written = [write_dataset(ds, out / "samples.nc")]
        written.append(plot_fields(ds, out / "samples.png"))
        return written

    def predict_step(self, batch: Any, batch_idx: int) -> PDESolution:
        """Simulate each trajectory of the batch from its u0 and f (seeded by the batch index)."""
        u, f = batch["u"], batch.get("f")
        uu, ff, nfe, x = self.generate(u[:, 0], f if self.fields == 2 else None, seed=batch_idx)
        return PDESolution(x=uu, nfe=nfe, times=torch.linspace(0, 1, self.sample_steps + 1), seed=batch_idx)


class FNOSurrogate(GenerativeModule):
    """Deterministic FNO simulation baseline (not generative): ``u_{1..Nt} = FNO([u0 tiled, f])`` over (t, x).

    Trained with the relative L2 loss :math:`\\lVert\\hat u - u\\rVert_2/\\lVert u\\rVert_2` per trajectory (the FNO
    papers' ``LpLoss``); fields are scaled by their training standard deviations (stored in the checkpoint).
    :meth:`simulate` returns the same :class:`xarray.Dataset` as :meth:`WaveletFlow.simulate` (NFE = 1).

    Args:
        net: :class:`~flowsci.domains.pde.model.FNO2d` with ``in_channels=2, out_channels=1``.
        grid: Grid points.
        steps: Recording intervals.
        horizon: Final time.
        nu: Viscosity (for re-simulation).
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.

    """

    solvers: tuple[str, ...] = ("euler",)

    def __init__(
        self,
        net: nn.Module,
        grid: int = 128,
        steps: int = 32,
        horizon: float = 1.0,
        nu: float = 0.01,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"] if outside_cli() else None)
        self.net = net
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.grid, self.steps, self.horizon, self.nu = grid, steps, float(horizon), float(nu)
        self.problem = make_problem("burgers", self.nu, self.horizon)
        self.scales: Tensor | None = None  # (u_std, f_std), plain attribute: not averaged by EMA

    def get_extra_state(self) -> Tensor:
        """Field scales ``[2]`` (empty before fitting)."""
        return torch.zeros(0, dtype=torch.float64) if self.scales is None else self.scales.cpu()

    def set_extra_state(self, state: Any) -> None:
        """Restore the field scales."""
        s = torch.as_tensor(state, dtype=torch.float64)
        self.scales = None if s.numel() == 0 else s.clone()

    def fit_statistics(self, u: Tensor, f: Tensor) -> None:
        """Scales from training trajectories ``u [n, Nt+1, Nx]``, ``f [n, Nt, Nx]``."""
        self.scales = torch.stack([u.double().std(), f.double().std()]).clamp_min(1e-6)

    def on_fit_start(self) -> None:
        """Field scales from ``trainer.datamodule``."""
        dm = getattr(self.trainer, "datamodule", None)
        if self.scales is None and dm is not None and hasattr(dm, "statistics_sample"):
            data = dm.statistics_sample(512)
            self.fit_statistics(data["u"], data["f"])

    def predict(self, u0: Tensor, f: Tensor) -> Tensor:
        """``u [B, Nt+1, Nx]`` (``u[:, 0] = u0``) from ``u0 [B, Nx]`` and ``f [B, Nt, Nx]``."""
        if self.scales is None:
            raise RuntimeError("FNOSurrogate has no field scales: fit it or call fit_statistics(u, f)")
        su, sf = (float(v) for v in self.scales)
        x = torch.stack([u0[:, None, :].expand(-1, f.shape[1], -1) / su, f / sf], dim=1)
        u = self.net(x)[:, 0] * su
        return torch.cat([u0[:, None], u], dim=1)

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean relative L2 error of the predicted trajectory."""
        if self.scales is None:
            self.fit_statistics(batch["u"], batch["f"])
        u, f = batch["u"], batch["f"]
        pred = self.predict(u[:, 0], f)[:, 1:]
        true = u[:, 1:]
        loss = ((pred - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1).clamp_min(1e-8)).mean()
        return loss, {"loss": loss.detach()}

    def num_examples(self, batch: Any) -> int:
        """Trajectories in a batch."""
        return int(batch["u"].shape[0])

    @torch.no_grad()
    def simulate(
        self, u0: Any, f: Any, steps: int | None = None, solver: str | None = None, seed: int | None = 0
    ) -> Any:
        """Predict the trajectory (``steps``, ``solver`` and ``seed`` are accepted for a common interface)."""
        from flowsci.domains.pde.data import make_dataset

        u0_t = _as_tensor(u0, "u0")
        f_t = _as_tensor(f, "f")
        if u0_t.dim() == 1:
            u0_t, f_t = u0_t[None], f_t[None] if f_t.dim() == 2 else f_t
        if u0_t.shape[1] != self.grid or f_t.shape != (u0_t.shape[0], self.steps, self.grid):
            raise InputError("u0/f", f"need [B, {self.grid}] and [B, {self.steps}, {self.grid}]")
        u = self.predict(u0_t.to(self.device), f_t.to(self.device)).cpu()
        truth = self.problem.solve(u0_t.double(), f_t.double()).float()
        ds = make_dataset(
            "burgers",
            u.numpy(),
            f_t.numpy(),
            self.problem.grid(self.grid),
            self.horizon,
            attrs={"task": "simulate", "nfe": 1, "seed": -1 if seed is None else int(seed), "model": "FNO2d"},
            extra={"u_solver": (("sample", "time", "x"), truth.numpy(), {"units": "1"})},
        )
        return ds

    @torch.no_grad()
    def sample(
        self, num: int, *, steps: int | None = None, solver: str | None = None, seed: int | None = None
    ) -> PDESolution:
        """Simulate ``num`` trajectories drawn from the problem (seed ``10_000 + seed``); NFE = 1."""
        check_sample_args(num, steps, solver, self.solvers)
        with torch.random.fork_rng():
            ref = self.problem.generate(num, self.grid, self.steps, seed=10_000 + (seed or 0))
        ds = self.simulate(ref["u"].values[:, 0], ref["f"].values, seed=seed)
        return PDESolution(x=torch.as_tensor(ds.u.values), nfe=1, times=torch.zeros(1), seed=seed, dataset=ds)

    def write_samples(self, solution: PDESolution, out_dir: str | os.PathLike) -> list[Path]:
        """``samples.nc`` and ``samples.png``, as :meth:`WaveletFlow.write_samples`."""
        return WaveletFlow.write_samples(self, solution, out_dir)  # type: ignore[arg-type]


class RefineFlow(FlowMatching):
    """Multi-resolution refinement (WDNO's super-resolution step): generate the Haar detail bands of a trajectory
    twice as fine in (t, x) from its approximation band.

    One orthonormal Haar level over (t, x) splits a fine field into the approximation band :math:`aa = 2\\,\\bar X`
    (:math:`\\bar X` = the 2x2 block average, i.e. the trajectory at half the resolution) and three detail bands. The
    model is trained on pairs (block-averaged data, data) and generates the standardised detail bands conditioned
    on the approximation band (the condition image); the fine field is the inverse transform. The U-Net is fully
    convolutional, so :meth:`refine` runs at resolutions never seen in training and chains (base -> 2x -> 4x).

    Args:
        net: :class:`~flowsci.domains.pde.model.UNet` with ``in_channels = 3 * fields`` and ``cond_channels = fields``.
        fields: Fields per trajectory image (2: u and f).
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory.
        sample_steps: Default ODE steps.

    """

    def __init__(
        self,
        net: nn.Module,
        fields: int = 2,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        sample_steps: int = 10,
    ) -> None:
        super().__init__(
            net=net, optimizer=optimizer, lr_scheduler=lr_scheduler, sample_steps=sample_steps, data_shape=None
        )
        self.save_hyperparameters(ignore=["net", "optimizer", "lr_scheduler"] if outside_cli() else None)
        self.fields = fields
        self.transform = WaveletTransform("haar", 1, ndim=2)
        self.detail_std: Tensor | None = None  # [3 * fields], plain attribute (see WaveletFlow)

    def get_extra_state(self) -> Tensor:
        """Standard deviations of the detail bands (empty before fitting)."""
        return torch.zeros(0, dtype=torch.float64) if self.detail_std is None else self.detail_std.cpu()

    def set_extra_state(self, state: Any) -> None:
        """Restore :meth:`get_extra_state`."""
        s = torch.as_tensor(state, dtype=torch.float64)
        self.detail_std = None if s.numel() == 0 else s.clone()

    def num_examples(self, batch: Any) -> int:
        """Trajectories in a batch."""
        return int(batch["u"].shape[0])

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = self.transform(x)  # [B, 4F, T/2, X/2], field-major bands (aa, ad, da, dd)
        c = c.reshape(c.shape[0], self.fields, 4, *c.shape[2:])
        return c[:, :, 0], c[:, :, 1:].flatten(1, 2)

    def _images(self, batch: Any) -> Tensor:
        u, f = batch["u"], batch.get("f")
        fields = [u[:, 1:]] + ([f] if self.fields == 2 else [])
        return torch.stack(fields, dim=1)

    def compute_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """Flow-matching loss on the standardised detail bands given the approximation band."""
        approx, detail = self._split(self._images(batch))
        if self.detail_std is None:
            self.detail_std = detail.double().std(dim=(0, 2, 3)).clamp_min(1e-6)
        x1 = detail / self.detail_std.to(detail).reshape(1, -1, 1, 1)
        x0 = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        t = self.time_sampler.sample(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        ps = self.path.sample(x0, x1, t)
        loss = ((self.net(ps.x_t, t, cond=approx) - ps.dx_t) ** 2).mean()
        return loss, {"loss": loss.detach()}

    @torch.no_grad()
    def refine(self, coarse: Tensor, steps: int | None = None, seed: int | None = 0) -> Tensor:
        """Trajectory images ``[B, F, 2T, 2X]`` from ``coarse [B, F, T, X]`` (a 2x block-averaged trajectory)."""
        return self.refine_with_nfe(coarse, steps, seed)[0]

    @torch.no_grad()
    def refine_with_nfe(self, coarse: Tensor, steps: int | None = None, seed: int | None = 0) -> tuple[Tensor, int]:
        """:meth:`refine` and the number of network evaluations it made."""
        if self.detail_std is None:
            raise RuntimeError("RefineFlow has no detail statistics: train it first")
        if coarse.dim() != 4 or coarse.shape[1] != self.fields:
            raise InputError("coarse", f"must be [B, {self.fields}, T, X], got {tuple(coarse.shape)}")
        coarse = coarse.to(self.device, torch.float32)
        approx = 2.0 * coarse  # orthonormal Haar: aa = (sum of the 2x2 block) / 2
        gen = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        x0 = torch.randn(coarse.shape[0], 3 * self.fields, *coarse.shape[2:], generator=gen, device=self.device)
        sol = solve_ode(
            lambda x, t, **c: self.net(x, t, cond=approx),
            x0,
            method="euler",
            steps=steps if steps is not None else self.sample_steps,
        )
        detail = sol.x * self.detail_std.to(sol.x).reshape(1, -1, 1, 1)
        bands = torch.cat([approx[:, :, None], detail.reshape(coarse.shape[0], self.fields, 3, *coarse.shape[2:])], 2)
        return self.transform.inverse(bands.flatten(1, 2)), int(sol.nfe)

    def sample(self, num: int, *, steps: int | None = None, solver: str | None = None, seed: int | None = None) -> Any:
        """Refine ``num`` block-averaged Burgers trajectories (64 x 16 -> 128 x 32) drawn from the solver."""
        from flowsci.domains.pde.solvers import burgers

        check_sample_args(num, steps, solver, ("euler",))
        with torch.random.fork_rng():
            ref = burgers.generate(num, 128, 32, seed=10_000 + (seed or 0))
        fine = self._images({"u": torch.as_tensor(ref.u.values), "f": torch.as_tensor(ref.f.values)})
        coarse = torch.nn.functional.avg_pool2d(fine, 2)
        out = self.refine(coarse, steps, seed)
        return PDESolution(x=out, nfe=steps or self.sample_steps, times=torch.zeros(1), seed=seed, dataset=None)


class MultiResolutionFlow(pl.LightningModule):
    """WDNO's multi-resolution chain at sampling: a base :class:`WaveletFlow` generates the trajectory on its own
    grid, a :class:`RefineFlow` refines it ``log2(factor)`` times (base -> 2x -> 4x ...).

    Neither part is trained here: train them apart (the base on base-resolution data, the refiner on 2x pairs) and
    join them, e.g. ``MultiResolutionFlow(WaveletFlow.from_checkpoint(a), RefineFlow.from_checkpoint(b))``.

    Args:
        base: The base-resolution model (1D problems: ``burgers`` or ``advection``).
        refiner: The refinement model, with as many fields as ``base``.

    """

    def __init__(self, base: WaveletFlow, refiner: RefineFlow) -> None:
        super().__init__()
        if base.space != 1:
            raise InputError(
                "base", f"the multi-resolution chain is implemented for 1D problems, not {base.problem_name!r}"
            )
        if refiner.fields != base.fields:
            raise InputError("refiner", f"has {refiner.fields} fields, the base model {base.fields}")
        self.base = base
        self.refiner = refiner

    def fine_shape(self, factor: int) -> tuple[int, int]:
        """``(grid, steps)`` of the fine trajectory ``factor`` times finer than the base in x and t."""
        return self.base.grid * factor, self.base.steps * factor

    @torch.no_grad()
    def simulate(
        self,
        u0: Any,
        f: Any = None,
        steps: int = 10,
        factor: int = 4,
        refine_steps: int | None = None,
        seed: int | None = 0,
        resimulate: bool = False,
    ) -> Any:
        """Simulate on a grid ``factor`` times finer than the base model's, in space and time.

        The fine ``u0 [B, factor*Nx]`` and control ``f [B, factor*Nt, factor*Nx]`` are block-averaged to the base
        grid (``u0`` over ``factor`` points, ``f`` over ``factor x factor`` (t, x) blocks); the base model generates
        the trajectory there with ``steps`` ODE steps; each of the ``log2(factor)`` refinements doubles the
        resolution (``refine_steps`` Euler steps each, default ``steps``). Between refinements the control channel
        is replaced by the block average of the given fine control (it is known). Each refinement keeps the 2 x 2
        block means of its input, so the ``factor x factor`` block average of the returned ``u[:, 1:]`` is the
        base model's generated trajectory.

        Args:
            u0: Fine initial states ``[B, factor*Nx]`` (or ``[factor*Nx]``).
            f: Fine controls ``[B, factor*Nt, factor*Nx]`` (``None`` for problems without control).
            steps: ODE steps of the base model.
            factor: Refinement factor, a power of two (1: the base model alone).
            refine_steps: Euler steps per refinement (default ``steps``).
            seed: Seed of the prior draws (base and every refinement).
            resimulate: Also run the numerical solver on the fine (u0, f) (Burgers only): ``u_solver``.

        Returns:
            An :class:`xarray.Dataset` on the fine grid: ``u (sample, time, x)`` (``u[:, 0]`` = the given ``u0``),
            ``f``, optionally ``u_solver``; attributes ``nfe`` (every network evaluation: base plus refinements),
            ``base_nfe``, ``resolution_factor``, ``seed``.

        """
        base = self.base
        if resimulate and base.problem_name != "burgers":
            raise InputError("resimulate", f"no numerical solver run for problem {base.problem_name!r}")
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or factor & (factor - 1):
            raise InputError("factor", f"must be a power of two (1, 2, 4, ...), got {factor!r}")
        grid, nt = self.fine_shape(factor)
        u0_t = _as_tensor(u0, "u0")
        if u0_t.dim() == 1:
            u0_t = u0_t[None]
        if u0_t.dim() != 2 or u0_t.shape[1] != grid:
            raise InputError(
                "u0",
                f"must be [B, {grid}] (the base grid {base.grid} x factor {factor}), got {tuple(u0_t.shape)}",
            )
        b = u0_t.shape[0]
        if base.fields == 2:
            if f is None:
                raise InputError("f", "simulation of a controlled problem needs the fine control f")
            f_t = _as_tensor(f, "f")
            if f_t.dim() == 2:
                f_t = f_t[None]
            if tuple(f_t.shape) != (b, nt, grid):
                raise InputError(
                    "f",
                    f"must be [{b}, {nt}, {grid}] (the base grid and steps x factor {factor}), got {tuple(f_t.shape)}",
                )
        elif f is not None:
            raise InputError("f", f"problem {base.problem_name!r} has no control field")
        else:
            f_t = None
        pool = torch.nn.functional.avg_pool2d
        u0_c = torch.nn.functional.avg_pool1d(u0_t[:, None], factor)[:, 0]
        f_c = pool(f_t[:, None], factor)[:, 0] if f_t is not None else None
        u_c, _, base_nfe, _ = base.generate(u0_c, f_c, steps=steps, seed=seed)
        x = u_c[:, None, 1:] if f_t is None else torch.stack([u_c[:, 1:], f_c.to(u_c)], 1)
        nfe = base_nfe
        level = factor
        while level > 1:
            x, n = self.refiner.refine_with_nfe(x, refine_steps if refine_steps is not None else steps, seed)
            nfe += n
            level //= 2
            if f_t is not None:  # the control is known: put its block average at this resolution back
                f_l = f_t.to(x) if level == 1 else pool(f_t[:, None].to(x), level)[:, 0]
                x = torch.stack([x[:, 0], f_l], 1)
        u = torch.cat([u0_t.to(x)[:, None], x[:, 0]], 1).cpu()
        truth = base.problem.solve(u0_t.double(), f_t.double()).float() if resimulate and f_t is not None else None
        extra: dict[str, Any] = {}
        if truth is not None:
            extra["u_solver"] = (
                ("sample", "time", "x"),
                truth.numpy(),
                {"units": "1", "long_name": "numerical solver trajectory for the same u0 and f"},
            )
        from flowsci.domains.pde.data import make_dataset

        model = (
            f"MultiResolutionFlow(WaveletFlow(wavelet={base.transform.wavelet}, levels={base.transform.level}) "
            f"on {base.grid} x {base.steps}, RefineFlow x{factor})"
        )
        ds = make_dataset(
            base.problem_name,
            u=u.numpy(),
            f=(f_t if f_t is not None else torch.zeros(b, nt, grid)).numpy(),
            x=base.problem.grid(grid),
            horizon=base.horizon,
            attrs={
                "task": "simulate",
                "nfe": int(nfe),
                "base_nfe": int(base_nfe),
                "resolution_factor": int(factor),
                "seed": -1 if seed is None else int(seed),
                "model": model,
                **({"nu": base.nu} if base.problem_name == "burgers" else {}),
            },
            extra=extra,
        )
        ds.attrs["source"] = f"flowsci.domains.pde.flow.MultiResolutionFlow ({model})"
        return ds
