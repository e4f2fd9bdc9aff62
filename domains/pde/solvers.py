r"""Numerical PDE solvers in torch (batched, deterministic by seed) and the problems built on them.

Three problems, each a :class:`Problem` with ``sample_params`` (random initial states and controls drawn per
trajectory from ``numpy.random.default_rng([seed, i])``, so a trajectory does not depend on the chunking),
``solve`` and ``generate(n, ...) -> xarray.Dataset``:

* :data:`burgers` -- 1D viscous Burgers with control forcing (DiffPhyCon / WDNO recipe):
  :math:`u_t + (u^2/2)_x = \nu u_{xx} + f(t, x)` on :math:`x \in (0, 1)`, :math:`u(t, 0) = u(t, 1) = 0`,
  :math:`\nu = 0.01`, :math:`T = 1`; ``grid`` interior points :math:`x_i = i/(\text{grid}+1)`; central differences
  (flux form) and explicit Euler with a stable step (:func:`burgers_substeps`) dividing :math:`T/N_t` exactly; the
  control :math:`f` is piecewise constant on the :math:`N_t` recording intervals. Second order in space; since
  :math:`\Delta t \propto \Delta x^2` the total error is :math:`O(\Delta x^2)` (tested).
* :data:`advection` -- 1D periodic advection :math:`u_t + \beta u_x = 0` on :math:`[0, 1)`, solved exactly by a
  Fourier phase shift (:func:`advect_spectral`), with sharp square pulses represented by exact cell averages
  (:func:`square_pulse_cell_average`, no Gibbs ringing).
* :data:`ns2d` -- 2D incompressible Navier--Stokes in vorticity form on :math:`[0, 2\pi)^2`,
  :math:`\omega_t + u\cdot\nabla\omega = \nu\Delta\omega + F_0(x) + \sum_m c_m(t)\phi_m(x)`,
  :math:`u = \nabla^\perp\psi`, :math:`-\Delta\psi = \omega`; pseudo-spectral with 2/3 de-aliasing and
  semi-implicit Euler (diffusion implicit), first order in time (tested on the Taylor--Green vortex); 8 low-mode
  Fourier actuators :math:`\phi_m` as control.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowsci.errors import InputError

__all__ = [
    "Advection",
    "Burgers",
    "NS2D",
    "Problem",
    "advect_spectral",
    "advection",
    "burgers",
    "burgers_substeps",
    "ns2d",
    "solve_burgers",
    "solve_burgers_numpy",
    "solve_ns2d",
    "square_pulse_cell_average",
]


# ----------------------------------------------------------------------------------------------- Burgers
def burgers_substeps(grid: int, nu: float, interval: float, cfl: float = 0.4, umax: float = 3.0) -> int:
    r"""Euler sub-steps per recording interval for a stable explicit step of the centred scheme.

    :math:`\Delta t \le \min(\text{cfl}\,\Delta x^2/\nu,\; 1.5\,\nu/u_{max}^2,\; 0.5\,\Delta x/u_{max})`: the
    diffusive limit, the von Neumann limit :math:`2\nu/u^2` of forward-time centred-space advection--diffusion
    (with margin) and an advective CFL number of 1/2, for states up to ``umax``.

    Args:
        grid: Interior points (:math:`\Delta x = 1/(\text{grid}+1)`).
        nu: Viscosity.
        interval: Length of one recording interval :math:`T/N_t`.
        cfl: Diffusive stability factor (explicit Euler needs < 0.5).
        umax: Bound on :math:`|u|` the step must be stable for.

    """
    dx = 1.0 / (grid + 1)
    dt = min(cfl * dx * dx / nu, 1.5 * nu / umax**2, 0.5 * dx / umax)
    return max(1, math.ceil(interval / dt - 1e-9))


def solve_burgers(
    u0: Tensor,
    f: Tensor,
    nu: float = 0.01,
    horizon: float = 1.0,
    substeps: int | None = None,
) -> Tensor:
    """Integrate the controlled Burgers equation; returns the state at the ``Nt + 1`` recording times.

    Args:
        u0: Initial state ``[B, Nx]`` at the interior points :math:`x_i = i/(N_x+1)`.
        f: Control ``[B, Nt, Nx]``, constant on each of the ``Nt`` intervals of length ``horizon / Nt``.
        nu: Viscosity :math:`\\nu`.
        horizon: Final time :math:`T`.
        substeps: Euler steps per interval (default :func:`burgers_substeps`).

    Returns:
        ``u`` of shape ``[B, Nt + 1, Nx]`` (``u[:, 0] = u0``); differentiable in ``u0`` and ``f``.

    """
    if u0.dim() != 2 or f.dim() != 3 or f.shape[0] != u0.shape[0] or f.shape[2] != u0.shape[1]:
        raise InputError("u0/f", f"need u0 [B, Nx] and f [B, Nt, Nx], got {tuple(u0.shape)} and {tuple(f.shape)}")
    nx, nt = u0.shape[1], f.shape[1]
    dx = 1.0 / (nx + 1)
    k = substeps or burgers_substeps(nx, nu, horizon / nt)
    dt = horizon / nt / k
    if not (torch.is_grad_enabled() and (u0.requires_grad or f.requires_grad)):
        return _solve_burgers_inplace(u0, f, nu, dt, dx, k)
    u = u0
    out = [u]
    for j in range(nt):
        fj = f[:, j]
        for _ in range(k):
            up = torch.nn.functional.pad(u, (1, 1))  # Dirichlet u = 0 at x = 0 and x = 1
            flux = 0.5 * up * up
            dflux = (flux[:, 2:] - flux[:, :-2]) / (2 * dx)
            lap = (up[:, 2:] - 2 * u + up[:, :-2]) / (dx * dx)
            u = u + dt * (nu * lap - dflux + fj)
        out.append(u)
    return torch.stack(out, dim=1)


@torch.no_grad()
def _solve_burgers_inplace(u0: Tensor, f: Tensor, nu: float, dt: float, dx: float, k: int) -> Tensor:
    """The same scheme with preallocated buffers and in-place updates (no autograd: ~2x fewer allocations)."""
    b, nx = u0.shape
    nt = f.shape[1]
    out = torch.empty(b, nt + 1, nx, dtype=u0.dtype, device=u0.device)
    out[:, 0] = u0
    up = torch.zeros(b, nx + 2, dtype=u0.dtype, device=u0.device)  # ghost zeros: Dirichlet walls
    up[:, 1:-1] = u0
    u = up[:, 1:-1]
    flux = torch.empty_like(up)
    rhs = torch.empty_like(u)
    a, c = nu * dt / (dx * dx), dt / (4 * dx)  # flux derivative (u^2/2)_x = (u_{i+1}^2 - u_{i-1}^2) / (4 dx)
    for j in range(nt):
        fdt = f[:, j] * dt
        for _ in range(k):
            torch.mul(up, up, out=flux)
            torch.sub(up[:, 2:], up[:, 1:-1], out=rhs)
            rhs.sub_(up[:, 1:-1]).add_(up[:, :-2]).mul_(a)
            rhs.sub_(flux[:, 2:], alpha=c).add_(flux[:, :-2], alpha=c).add_(fdt)
            u.add_(rhs)
        out[:, j + 1] = u
    return out


def solve_burgers_numpy(u0: np.ndarray, f: np.ndarray, nu: float = 0.01, horizon: float = 1.0) -> np.ndarray:
    """The same scheme as :func:`solve_burgers` in NumPy (the speed reference of the benchmark's solver row).

    Args:
        u0: ``[B, Nx]``.
        f: ``[B, Nt, Nx]``.
        nu: Viscosity.
        horizon: Final time.

    Returns:
        ``[B, Nt + 1, Nx]``.

    """
    nx, nt = u0.shape[1], f.shape[1]
    dx = 1.0 / (nx + 1)
    k = burgers_substeps(nx, nu, horizon / nt)
    dt = horizon / nt / k
    u = np.array(u0, dtype=np.float64)
    out = [u.copy()]
    up = np.zeros((u.shape[0], nx + 2))
    for j in range(nt):
        fj = f[:, j]
        for _ in range(k):
            up[:, 1:-1] = u
            flux = 0.5 * up * up
            u = u + dt * (
                nu * (up[:, 2:] - 2 * u + up[:, :-2]) / (dx * dx) - (flux[:, 2:] - flux[:, :-2]) / (2 * dx) + fj
            )
        out.append(u.copy())
    return np.stack(out, axis=1)


# ----------------------------------------------------------------------------------------------- advection
def advect_spectral(u0: Tensor, beta: Tensor, times: Tensor) -> Tensor:
    """Exact periodic advection of a band-limited grid function by a Fourier phase shift.

    :math:`\\hat u_k(t) = \\hat u_k(0)\\,e^{-2\\pi i k \\beta t}` on :math:`[0, 1)` (exact for the trigonometric
    interpolant of ``u0``; the Nyquist mode is treated as real).

    Args:
        u0: ``[B, Nx]`` on the grid :math:`x_j = j/N_x`.
        beta: Speeds ``[B]``.
        times: ``[Nt]``.

    Returns:
        ``[B, Nt, Nx]``.

    """
    nx = u0.shape[-1]
    k = torch.fft.rfftfreq(nx, d=1.0 / nx).to(u0.dtype)
    uh = torch.fft.rfft(u0, dim=-1)[:, None, :]
    phase = torch.exp(-2j * math.pi * k[None, None, :] * beta[:, None, None] * times[None, :, None])
    if nx % 2 == 0:  # the Nyquist mode of a real signal: keep the real part of its shift (cos)
        phase[..., -1] = phase[..., -1].real.to(phase.dtype)
    return torch.fft.irfft(uh * phase, n=nx, dim=-1)


def square_pulse_cell_average(left: Tensor, width: Tensor, height: Tensor, nx: int) -> Tensor:
    """Exact cell averages of periodic square pulses on :math:`[0, 1)` (no Gibbs ringing at the fronts).

    Cell :math:`j` is :math:`[j/N_x, (j+1)/N_x)`; the pulse is ``height`` on ``[left, left + width)`` mod 1.

    Args:
        left: Left edges ``[...]`` (any real; taken mod 1).
        width: Widths in ``(0, 1)``, ``[...]``.
        height: Heights ``[...]``.
        nx: Number of cells.

    Returns:
        ``[..., nx]``.

    """
    edges = torch.arange(nx, dtype=left.dtype, device=left.device) / nx
    a = torch.remainder(left, 1.0)[..., None]
    b = a + width[..., None]
    overlap = torch.zeros(*left.shape, nx, dtype=left.dtype, device=left.device)
    for shift in (-1.0, 0.0, 1.0):  # the pulse may wrap around x = 1
        lo = torch.maximum(edges, a + shift)
        hi = torch.minimum(edges + 1.0 / nx, b + shift)
        overlap = overlap + (hi - lo).clamp_min(0)
    return height[..., None] * overlap * nx


# ----------------------------------------------------------------------------------------------- NS 2D
def _ns_operators(n: int, dtype: torch.dtype) -> dict[str, Tensor]:
    k = torch.fft.fftfreq(n, d=1.0 / n).to(dtype)
    kr = torch.fft.rfftfreq(n, d=1.0 / n).to(dtype)
    ky, kx = torch.meshgrid(k, kr, indexing="ij")
    k2 = kx**2 + ky**2
    k2_inv = torch.where(k2 > 0, 1.0 / k2.clamp_min(1e-30), torch.zeros_like(k2))
    dealias = ((kx.abs() <= n / 3) & (ky.abs() <= n / 3)).to(dtype)
    return {"kx": kx, "ky": ky, "k2": k2, "k2_inv": k2_inv, "dealias": dealias}


def ns_actuators(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The 8 control actuators :math:`\\phi_m`: sin and cos of the wave vectors (1,0), (0,1), (1,1), (1,-1).

    Returns:
        ``[8, n, n]`` on the grid :math:`(y_i, x_j) = 2\\pi (i, j)/n`.

    """
    g = torch.arange(n, dtype=dtype) * (2 * math.pi / n)
    y, x = torch.meshgrid(g, g, indexing="ij")
    out = []
    for kx, ky in ((1, 0), (0, 1), (1, 1), (1, -1)):
        out += [torch.sin(kx * x + ky * y), torch.cos(kx * x + ky * y)]
    return torch.stack(out)


def solve_ns2d(
    w0: Tensor,
    forcing: Tensor,
    nu: float = 1e-3,
    horizon: float = 10.0,
    dt: float = 2.5e-3,
    drag: float = 0.0,
) -> Tensor:
    """Pseudo-spectral vorticity solver, semi-implicit Euler (nonlinear explicit, diffusion implicit).

    :math:`\\hat\\omega^{n+1} = (\\hat\\omega^n + \\Delta t(-\\widehat{u\\cdot\\nabla\\omega} + \\hat F))/(1 +
    \\Delta t(\\nu|k|^2 + \\alpha))`, with 2/3-rule de-aliasing of the product.

    Args:
        w0: Initial vorticity ``[B, n, n]`` (rows y, columns x).
        forcing: ``[B, Nt, n, n]``, constant on each of the ``Nt`` recording intervals.
        nu: Viscosity.
        horizon: Final time.
        dt: Time step (rounded down so that it divides ``horizon / Nt``).
        drag: Linear drag :math:`\\alpha`.

    Returns:
        Vorticity at the ``Nt + 1`` recording times, ``[B, Nt + 1, n, n]``.

    """
    n, nt = w0.shape[-1], forcing.shape[1]
    op = _ns_operators(n, w0.dtype)
    k = max(1, math.ceil(horizon / nt / dt))
    h = horizon / nt / k
    wh = torch.fft.rfft2(w0)
    out = [w0]
    denom = 1 + h * (nu * op["k2"] + drag)
    for j in range(nt):
        fh = torch.fft.rfft2(forcing[:, j])
        for _ in range(k):
            psih = wh * op["k2_inv"]
            ux = torch.fft.irfft2(1j * op["ky"] * psih, s=(n, n))  # u = dpsi/dy
            uy = torch.fft.irfft2(-1j * op["kx"] * psih, s=(n, n))  # v = -dpsi/dx
            wx = torch.fft.irfft2(1j * op["kx"] * wh, s=(n, n))
            wy = torch.fft.irfft2(1j * op["ky"] * wh, s=(n, n))
            nl = torch.fft.rfft2(ux * wx + uy * wy) * op["dealias"]
            wh = (wh + h * (fh - nl)) / denom
        out.append(torch.fft.irfft2(wh, s=(n, n)))
    return torch.stack(out, dim=1)


def gaussian_random_field(n: int, rng: np.random.Generator, alpha: float = 2.0, tau: float = 3.0) -> np.ndarray:
    """A zero-mean periodic Gaussian random field with spectrum :math:`\\propto (|k|^2 + \\tau^2)^{-\\alpha}` (FNO's
    initial vorticity), scaled to unit standard deviation. Returns ``[n, n]``.
    """
    k = np.fft.fftfreq(n, d=1.0 / n)
    ky, kx = np.meshgrid(k, k, indexing="ij")
    amp = (kx**2 + ky**2 + tau**2) ** (-alpha / 2)
    amp[0, 0] = 0.0
    noise = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    w = np.real(np.fft.ifft2(amp * noise))
    return w / max(float(w.std()), 1e-12)


# ----------------------------------------------------------------------------------------------- problems
@dataclass
class Problem:
    """A PDE problem: parameter distribution, solver and CF metadata; ``generate`` returns an xarray.Dataset."""

    name: str = ""

    def rngs(self, n: int, seed: int, start: int = 0) -> list[np.random.Generator]:
        """One generator per trajectory, ``default_rng([seed, start + i])`` (independent of chunking)."""
        return [np.random.default_rng([int(seed), int(start + i)]) for i in range(n)]

    def generate(self, n: int, *args: Any, seed: int = 0, start: int = 0, **kwargs: Any) -> Any:
        """``n`` trajectories as a CF-annotated :class:`xarray.Dataset` (implemented per problem)."""
        raise NotImplementedError


def _check_grid(grid: int, steps: int) -> None:
    for name, v in (("grid", grid), ("steps", steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2 or v > 1 << 14:
            raise InputError(name, f"must be a whole number in [2, 16384], got {v!r}")


@dataclass
class Burgers(Problem):
    """1D controlled Burgers (DiffPhyCon/WDNO distributions, :math:`T = 1`).

    Attributes:
        nu: Viscosity.
        horizon: Final time :math:`T`.
        num_bumps: Gaussian bumps of the forcing.
        force_amplitude: Bump amplitudes :math:`\\sim U[-a, a]` (all but the first switched on with prob. 1/2).
        width_scale: Multiplier of the bump widths :math:`U[0.1, 0.4]` (DiffPhyCon 0.5, WDNO 1).

    """

    name: str = "burgers"
    nu: float = 0.01
    horizon: float = 1.0
    num_bumps: int = 8
    force_amplitude: float = 1.5
    width_scale: float = 0.5

    def grid(self, nx: int) -> np.ndarray:
        """Interior points :math:`x_i = i/(N_x+1)`, ``[Nx]``."""
        return np.arange(1, nx + 1) / (nx + 1)

    def initial_state(self, rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
        """Two Gaussians: centre U[0.2,0.4], amplitude U[0,2]; centre U[0.6,0.8], amplitude U[-2,0]; widths
        U[0.05,0.15].
        """
        c1, c2 = rng.uniform(0.2, 0.4), rng.uniform(0.6, 0.8)
        a1, a2 = rng.uniform(0, 2), rng.uniform(-2, 0)
        s1, s2 = rng.uniform(0.05, 0.15, size=2)
        return a1 * np.exp(-0.5 * ((x - c1) / s1) ** 2) + a2 * np.exp(-0.5 * ((x - c2) / s2) ** 2)

    def forcing(self, rng: np.random.Generator, x: np.ndarray, steps: int) -> np.ndarray:
        """Sum of ``num_bumps`` space-time Gaussian bumps at the interval midpoints, ``[steps, Nx]``."""
        tm = (np.arange(steps) + 0.5) / steps  # time normalised to (0, 1)
        f = np.zeros((steps, x.size))
        for b in range(self.num_bumps):
            cx, ct = rng.uniform(0, 1, size=2)
            wx, wt = rng.uniform(0.1, 0.4, size=2) * self.width_scale
            amp = rng.uniform(-self.force_amplitude, self.force_amplitude)
            on = 1.0 if b == 0 else float(rng.uniform() < 0.5)
            f += on * amp * np.exp(-0.5 * ((tm[:, None] - ct) / wt) ** 2 - 0.5 * ((x[None, :] - cx) / wx) ** 2)
        return f

    def sample_params(
        self, n: int, grid: int = 128, steps: int = 32, seed: int = 0, start: int = 0
    ) -> dict[str, Tensor]:
        """Initial states ``u0 [n, grid]`` and controls ``f [n, steps, grid]`` (float64), seeded per trajectory."""
        _check_grid(grid, steps)
        x = self.grid(grid)
        u0, f = [], []
        for rng in self.rngs(n, seed, start):
            u0.append(self.initial_state(rng, x))
            f.append(self.forcing(rng, x, steps))
        return {"u0": torch.as_tensor(np.stack(u0)), "f": torch.as_tensor(np.stack(f))}

    def solve(self, u0: Tensor, f: Tensor, substeps: int | None = None) -> Tensor:
        """:func:`solve_burgers` with this problem's ``nu`` and ``horizon``; ``[B, Nt+1, Nx]``."""
        return solve_burgers(u0, f, nu=self.nu, horizon=self.horizon, substeps=substeps)

    def generate(
        self, n: int, grid: int = 128, steps: int = 32, *, seed: int = 0, start: int = 0, refine: int = 1
    ) -> Any:
        """``n`` trajectories as a CF-annotated :class:`xarray.Dataset` with ``u (sample, time, x)`` and
        ``f (sample, time_f, x)``.

        Args:
            n: Number of trajectories.
            grid: Interior points (a power of two for the wavelet models).
            steps: Recording intervals :math:`N_t` over :math:`[0, T]`.
            seed: Seed (trajectory ``start + i`` uses ``default_rng([seed, start + i])``).
            start: Index of the first trajectory (chunked or resumed generation).
            refine: Solve on a grid ``refine`` times finer (``(grid+1)*refine - 1`` points, nested) and keep the
                points of the coarse grid (more accurate data; 1 = solve on ``grid``).

        """
        from flowsci.domains.pde.data import make_dataset

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError("n", f"must be a whole number >= 1, got {n!r}")
        params = self.sample_params(n, grid, steps, seed, start)
        if refine > 1:
            fine = (grid + 1) * refine - 1
            p_fine = self.sample_params(n, fine, steps, seed, start)
            u = self.solve(p_fine["u0"], p_fine["f"])[:, :, refine - 1 :: refine]
        else:
            u = self.solve(params["u0"], params["f"])
        if not bool(torch.isfinite(u).all()):
            raise FloatingPointError("Burgers solver diverged (non-finite state); lower the time step")
        return make_dataset(
            self.name,
            u=u.numpy(),
            f=params["f"].numpy(),
            x=self.grid(grid),
            horizon=self.horizon,
            attrs={"nu": self.nu, "boundary": "Dirichlet u=0 at x=0 and x=1", "seed": seed, "start": start},
            sample_start=start,
        )


@dataclass
class Advection(Problem):
    """1D periodic advection with sums of sines, plus a sharp square pulse in a fraction of the trajectories.

    Attributes:
        horizon: Final time (default 2).
        beta_range: Speeds :math:`\\beta \\sim U[\\beta_0, \\beta_1]`.
        pulse_fraction: Fraction of trajectories with a square pulse added.

    """

    name: str = "advection"
    horizon: float = 2.0
    beta_range: tuple[float, float] = (0.1, 1.0)
    pulse_fraction: float = 0.5

    def grid(self, nx: int) -> np.ndarray:
        """Cell centres :math:`(j + 1/2)/N_x`, ``[Nx]``."""
        return (np.arange(nx) + 0.5) / nx

    def generate(self, n: int, grid: int = 128, steps: int = 32, *, seed: int = 0, start: int = 0) -> Any:
        """``n`` trajectories, ``u (sample, time, x)`` with ``steps + 1`` times on ``[0, horizon]`` (no control;
        ``f`` is zero so the data layout matches Burgers).
        """
        from flowsci.domains.pde.data import make_dataset

        _check_grid(grid, steps)
        x = torch.as_tensor(self.grid(grid))
        times = torch.linspace(0, self.horizon, steps + 1, dtype=torch.float64)
        u = np.zeros((n, steps + 1, grid))
        betas = np.zeros(n)
        for i, rng in enumerate(self.rngs(n, seed, start)):
            a = rng.uniform(-1, 1, size=4)
            phi = rng.uniform(0, 2 * math.pi, size=4)
            beta = rng.uniform(*self.beta_range)
            betas[i] = beta
            # sines are advected analytically at the cell centres
            arg = x[None, :] - beta * times[:, None]
            ui = sum(a[k] * torch.sin(2 * math.pi * (k + 1) * arg + phi[k]) for k in range(4))
            if rng.uniform() < self.pulse_fraction:
                left, width, height = rng.uniform(0, 1), rng.uniform(0.1, 0.3), rng.uniform(-1, 1)
                ui = ui + square_pulse_cell_average(
                    torch.as_tensor(left - beta * times.numpy()),
                    torch.full((steps + 1,), width, dtype=torch.float64),
                    torch.full((steps + 1,), height, dtype=torch.float64),
                    grid,
                )
            u[i] = ui.numpy()
        return make_dataset(
            self.name,
            u=u,
            f=np.zeros((n, steps, grid)),
            x=self.grid(grid),
            horizon=self.horizon,
            attrs={"boundary": "periodic", "seed": seed, "start": start},
            sample_start=start,
            extra={"beta": (("sample",), betas, {"long_name": "advection speed", "units": "1"})},
        )


@dataclass
class NS2D(Problem):
    """2D incompressible Navier--Stokes (vorticity) with 8 low-mode actuators as control.

    Attributes:
        nu: Viscosity.
        horizon: Final time.
        dt: Solver time step (the nonlinear term is explicit Euler, unstable for advection-dominated flow at
            large steps: at 32² and T = 10, 1e-2 blew up half of the trajectories; 2.5e-3 keeps them bounded).
        control_std: Standard deviation of the actuator amplitudes :math:`c_m`.

    """

    name: str = "ns2d"
    nu: float = 1e-3
    horizon: float = 10.0
    dt: float = 2.5e-3
    control_std: float = 0.1

    def base_forcing(self, n: int) -> Tensor:
        """:math:`F_0 = 0.1(\\sin(x+y) + \\cos(x+y))`, ``[n, n]``."""
        g = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
        y, x = torch.meshgrid(g, g, indexing="ij")
        return 0.1 * (torch.sin(x + y) + torch.cos(x + y))

    def generate(self, n: int, grid: int = 32, steps: int = 32, *, seed: int = 0, start: int = 0) -> Any:
        """``n`` trajectories, ``omega (sample, time, y, x)``, ``f (sample, time_f, y, x)`` and actuator amplitudes
        ``c (sample, time_f, actuator)``; controls are constant on 8 equal intervals.
        """
        from flowsci.domains.pde.data import make_dataset

        _check_grid(grid, steps)
        w0, c = [], []
        for rng in self.rngs(n, seed, start):
            w0.append(gaussian_random_field(grid, rng))
            ci = rng.normal(0.0, self.control_std, size=(8, 8))
            c.append(np.repeat(ci, int(math.ceil(steps / 8)), axis=0)[:steps])
        w0_t = torch.as_tensor(np.stack(w0))
        c_t = torch.as_tensor(np.stack(c))
        forcing = self.base_forcing(grid) + torch.einsum("btm,myx->btyx", c_t, ns_actuators(grid))
        w = solve_ns2d(w0_t, forcing, nu=self.nu, horizon=self.horizon, dt=self.dt)
        g = np.arange(grid) * (2 * math.pi / grid)
        return make_dataset(
            self.name,
            u=w.numpy(),
            f=forcing.numpy(),
            x=g,
            y=g,
            horizon=self.horizon,
            attrs={"nu": self.nu, "boundary": "periodic", "seed": seed, "start": start},
            sample_start=start,
            extra={"c": (("sample", "time_f", "actuator"), c_t.numpy(), {"long_name": "actuator amplitude"})},
        )


burgers = Burgers()
"""The default controlled Burgers problem (:math:`\\nu = 0.01`, :math:`T = 1`): ``burgers.generate(n, grid=128,
steps=32)``."""
advection = Advection()
"""The default periodic advection problem (:math:`T = 2`, :math:`\\beta \\sim U[0.1, 1]`)."""
ns2d = NS2D()
"""The default 2D Navier--Stokes control problem (:math:`\\nu = 10^{-3}`, :math:`T = 10`, 32² grid)."""

PROBLEMS: dict[str, Problem] = {"burgers": burgers, "advection": advection, "ns2d": ns2d}
ObjectiveFn = Callable[..., Tensor]
