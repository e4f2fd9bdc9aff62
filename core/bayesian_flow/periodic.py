r"""Periodic (von Mises) Bayesian flow of CrysBFN (Wu et al., ICLR 2025, "A Periodic Bayesian Flow for
Material Generation", arXiv:2502.02016), built on Graves et al. (2023), "Bayesian Flow Networks".

Data are periodic coordinates ``x ∈ [0, P)`` (fractional coordinates: ``P = 1``), handled as angles
``φ = 2π x / P``.  The belief about each coordinate is a von Mises distribution ``vM(m, c)`` with mean
direction ``m`` and concentration ``c``; the prior is uniform (``c_0 = 0``; its mean direction is irrelevant
and drawn uniformly).  The sender distribution is ``p_S(y | x; α) = vM(y | φ, α)``.  Because the von Mises
likelihood is conjugate for a mean direction with known concentration, the Bayesian update adds *resultant
vectors*:

.. math::

    c_i e^{\mathrm{i} m_i} = c_{i-1} e^{\mathrm{i} m_{i-1}} + α_i e^{\mathrm{i} y_i}, \qquad
    c_i = \sqrt{c_{i-1}^2 + α_i^2 + 2 c_{i-1} α_i \cos(y_i - m_{i-1})},

so from the uniform prior ``c_i e^{i m_i} = Σ_{k ≤ i} α_k e^{i y_k}``.  Unlike the Gaussian flow the accuracy
is *not additive*: ``c_i ≤ Σ_k α_k`` is a random variable, it can *decrease* when an observation disagrees
with the belief, so the entropy of the belief along one trajectory is non-monotonic.  There is no closed-form
Bayesian flow distribution; training simulates it exactly with tensor operations (draw ``y_1..y_k`` and sum
the resultant, :meth:`PeriodicBayesianFlow.sample_flow_at_step`).

Accuracy schedule (CrysBFN's "linear entropy" schedule, :func:`linear_entropy_schedule`): with the von Mises
entropy ``H(κ) = ln(2π I_0(κ)) - κ I_1(κ)/I_0(κ)``, targets ``c̄_k`` solve
``H(c̄_k) = (1 - k/n) H(0) + (k/n) H(β_1)`` (``β_1 = 10^3``), and each ``α_k`` is found by root finding so
that the *expected* concentration of the simulated flow reaches the target, ``E[c_k] = c̄_k``, which accounts
for the non-additive accuracy.  CrysBFN solves ``E|c̄_{k-1} + α e^{iy}| = c̄_k`` with a deterministic previous
concentration; here the previous step's full distribution is carried by a population of simulated resultants
and the expectation over the new observation is taken by quadrature, so the simulated flow meets the target up
to Monte-Carlo error.

Entropy conditioning (CrysBFN): because ``c`` varies widely at fixed ``t``, the network also receives, per
coordinate, ``(ln c - ln c_min) / (ln β_1 - ln c_min)`` clipped to ``[0, 1]``
(:meth:`PeriodicBayesianFlow.entropy_conditioning`, ``c_min = 10^{-7}``).

Loss (``n`` steps, Graves et al. Eq. for ``L^n`` with a point-mass output ``x̂``): the receiver is
``vM(x̂, α)`` and ``KL(vM(φ, α) ‖ vM(φ̂, α)) = α A(α) (1 - cos(φ - φ̂))`` with ``A = I_1 / I_0``, so
``L^n = n E_k α_{k+1} A(α_{k+1}) (1 - cos(φ - φ̂))``; for small errors ``2(1 - cos d) ≈ d²`` gives CrysBFN's
minimum-image squared-error form.  Bessel functions use the exponentially scaled ``i0e``/``i1e`` so that
concentrations of ``10^3`` and far beyond are stable.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy.optimize import brentq
from scipy.special import i0e as np_i0e
from scipy.special import i1e as np_i1e
from torch import Tensor

from flowsci.bayesian_flow.base import BayesianFlow, as_element_tensor, check_steps
from flowsci.io import atomic_write

__all__ = [
    "PeriodicBayesianFlow",
    "VonMisesBelief",
    "bessel_ratio",
    "linear_entropy_schedule",
    "sample_von_mises",
    "von_mises_entropy",
    "von_mises_log_prob",
]

_TWO_PI = 2.0 * math.pi


def bessel_ratio(kappa: Tensor) -> Tensor:
    """Mean resultant length ``A(κ) = I_1(κ) / I_0(κ)`` of ``vM(·, κ)``, computed as ``i1e(κ) / i0e(κ)``."""
    return torch.special.i1e(kappa) / torch.special.i0e(kappa)


def von_mises_entropy(kappa: Tensor) -> Tensor:
    """Differential entropy ``H(κ) = ln(2π I_0(κ)) - κ A(κ)`` of a von Mises distribution (nats).

    Uses ``ln I_0(κ) = ln i0e(κ) + κ``; ``H(0) = ln 2π`` and ``H(κ) ≈ ½ ln(2π e / κ)`` for large ``κ``.
    """
    return math.log(_TWO_PI) + torch.log(torch.special.i0e(kappa)) + kappa - kappa * bessel_ratio(kappa)


def von_mises_log_prob(angle: Tensor, loc: Tensor, kappa: Tensor) -> Tensor:
    """Log-density of ``vM(loc, κ)`` at ``angle`` (radians): ``κ cos(φ - loc) - ln(2π I_0(κ))``."""
    return kappa * (torch.cos(angle - loc) - 1.0) - math.log(_TWO_PI) - torch.log(torch.special.i0e(kappa))


def sample_von_mises(loc: Tensor, concentration: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Draw angles from ``vM(loc, κ)`` with the Best & Fisher (1979) rejection sampler, in float64.

    Vectorised; works from ``κ = 0`` (uniform) to ``κ ≫ 10^3``.  Seeded through ``generator``.

    Args:
        loc: Mean directions (radians).
        concentration: Concentrations ``κ ≥ 0``, broadcastable with ``loc``.
        generator: Random generator on the tensors' device.

    Returns:
        Angles in ``[-π, π)``, float64, with the broadcast shape of ``loc`` and ``concentration``.

    """
    loc, kappa = torch.broadcast_tensors(loc.double(), concentration.double())
    kappa = kappa.clamp_min(1e-12)
    tau = 1.0 + torch.sqrt(1.0 + 4.0 * kappa.square())
    rho = (tau - torch.sqrt(2.0 * tau)) / (2.0 * kappa)
    r = torch.where(kappa < 1e-5, 1.0 / kappa + kappa, (1.0 + rho.square()) / (2.0 * rho))
    flat_kappa, flat_r = kappa.reshape(-1), r.reshape(-1)
    f = torch.empty_like(flat_kappa)
    pending = torch.arange(flat_kappa.numel(), device=kappa.device)
    while pending.numel():  # each round accepts ≥ 65% of the pending draws; only those are redrawn
        u1, u2 = torch.rand((2, pending.numel()), generator=generator, device=kappa.device, dtype=kappa.dtype)
        k, rr = flat_kappa[pending], flat_r[pending]
        z = torch.cos(math.pi * u1)
        f_new = (1.0 + rr * z) / (rr + z)
        c = k * (rr - f_new)
        accept = (c * (2.0 - c) - u2 > 0) | (torch.log(c / u2) + 1.0 - c >= 0)
        f[pending[accept]] = f_new[accept]
        pending = pending[~accept]
    f = f.reshape(kappa.shape)
    sign = torch.rand(kappa.shape, generator=generator, device=kappa.device, dtype=kappa.dtype) < 0.5
    theta = torch.acos(f.clamp(-1.0, 1.0)) * torch.where(sign, -1.0, 1.0)
    return torch.remainder(theta + loc + math.pi, _TWO_PI) - math.pi


# --------------------------------------------------------------------------------------- accuracy schedule
def _np_entropy(kappa: float) -> float:
    return math.log(_TWO_PI) + math.log(np_i0e(kappa)) + kappa * (1.0 - np_i1e(kappa) / np_i0e(kappa))


def _expected_resultant(rx: Tensor, ry: Tensor, alpha: float, quadrature: int) -> float:
    """``mean_j E_{y ~ vM(0, α)} |R_j + α e^{iy}|`` for particles ``R_j``, by quadrature over ``y``."""
    half_width = min(math.pi, 12.0 / math.sqrt(alpha))
    if half_width == math.pi:  # periodic trapezoid rule on the whole circle
        y = torch.linspace(-math.pi, math.pi, quadrature + 1, dtype=torch.float64)[:-1]
    else:  # the weight is negligible outside ±12 standard deviations
        y = torch.linspace(-half_width, half_width, quadrature, dtype=torch.float64)
    w = torch.exp(alpha * (torch.cos(y) - 1.0))
    w = w / w.sum()
    sq = (
        (rx.square() + ry.square())[:, None]
        + alpha**2
        + 2.0 * alpha * (rx[:, None] * torch.cos(y) + ry[:, None] * torch.sin(y))
    )
    return float((sq.clamp_min(0.0).sqrt() @ w).mean())


def _linear_entropy_schedule(
    n_steps: int, beta1: float, num_particles: int, seed: int, quadrature: int
) -> tuple[Tensor, Tensor]:
    h0, h1 = math.log(_TWO_PI), _np_entropy(beta1)
    targets = [0.0]
    for k in range(1, n_steps):
        h_k = (1.0 - k / n_steps) * h0 + (k / n_steps) * h1
        targets.append(brentq(lambda kappa, h=h_k: _np_entropy(kappa) - h, 0.0, beta1, xtol=1e-14, rtol=1e-13))
    targets.append(beta1)
    generator = torch.Generator().manual_seed(seed)
    rx = torch.zeros(num_particles, dtype=torch.float64)
    ry = torch.zeros(num_particles, dtype=torch.float64)
    alphas = []
    for k in range(1, n_steps + 1):
        mean_c = float(torch.hypot(rx, ry).mean())
        if k == 1:  # from the uniform prior the first update is deterministic: c_1 = α_1
            alpha = targets[1]
        else:
            # triangle inequality: α - E|R| ≤ E|R + α e^{iy}| ≤ α + E|R| brackets the root
            alpha = brentq(
                lambda a, tgt=targets[k], px=rx, py=ry: _expected_resultant(px, py, a, quadrature) - tgt,
                max(targets[k] - mean_c, 1e-12),
                targets[k] + mean_c,
                xtol=1e-12,
                rtol=1e-8,
            )
        alphas.append(alpha)
        y = sample_von_mises(torch.zeros(num_particles, dtype=torch.float64), torch.tensor(alpha), generator=generator)
        rx = rx + alpha * torch.cos(y)
        ry = ry + alpha * torch.sin(y)
    return torch.tensor(alphas, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64)


def linear_entropy_schedule(
    n_steps: int,
    beta1: float = 1e3,
    *,
    num_particles: int = 4096,
    seed: int = 0,
    quadrature: int = 48,
    cache_dir: str | Path | None = None,
) -> tuple[Tensor, Tensor]:
    """Sender accuracies ``α_1..α_n`` that make the belief entropy fall linearly (CrysBFN's schedule).

    Step 1 solves ``H(c̄_k) = (1 - k/n) ln 2π + (k/n) H(β_1)`` for the target concentrations ``c̄_k`` (Brent's
    method).  Step 2 finds each ``α_k`` (Brent's method) such that ``E[c_k] = c̄_k`` under the simulated flow:
    ``num_particles`` resultants ``R^{(j)}_{k-1}`` represent the distribution of the previous belief and
    ``E_y |R^{(j)}_{k-1} + α e^{iy}|``, ``y ~ vM(0, α)``, is integrated by quadrature; the particles are then
    advanced with fresh von Mises draws.  The result is deterministic (seeded) and cached in memory per
    argument tuple, and on disk under ``cache_dir`` if given (a few seconds for ``n = 100``, about a minute
    for ``n = 1000`` on one CPU core).

    Args:
        n_steps: Number of steps ``n``.
        beta1: Final expected concentration ``β_1`` (CrysBFN: ``10^3``).
        num_particles: Particles carrying the distribution of ``c_{k-1}``.
        seed: Seed of the particle simulation.
        quadrature: Quadrature nodes for the expectation over the new observation.
        cache_dir: Folder for ``.pt`` files of computed schedules (read if present, else written atomically).

    Returns:
        ``(alphas, targets)``: float64 CPU tensors of shapes ``[n]`` and ``[n + 1]`` (``targets[0] = 0``,
        ``targets[n] = β_1``).

    Raises:
        ValueError: For invalid arguments, or a cache file that does not hold a schedule for these arguments.

    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    if beta1 <= 0:
        raise ValueError(f"beta1 must be positive, got {beta1}")
    key = (int(n_steps), float(beta1), int(num_particles), int(seed), int(quadrature))
    alphas, targets = _cached_schedule(key, None if cache_dir is None else str(cache_dir))
    return alphas.clone(), targets.clone()


@functools.lru_cache(maxsize=64)
def _cached_schedule(key: tuple[int, float, int, int, int], cache_dir: str | None) -> tuple[Tensor, Tensor]:
    """Memoised schedule, read from / written to ``cache_dir`` when given."""
    if cache_dir is None:
        return _linear_entropy_schedule(*key)
    path = Path(cache_dir) / "vm_linear_entropy_n{}_b{:g}_p{}_s{}_q{}.pt".format(*key)
    if path.exists():
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            alphas, targets = stored["alphas"].double(), stored["targets"].double()
        except Exception as err:  # any unreadable or foreign file
            raise ValueError(f"{path}: not a readable accuracy-schedule cache file ({err})") from err
        if alphas.shape != (key[0],) or targets.shape != (key[0] + 1,):
            raise ValueError(f"{path}: expected schedules of length {key[0]}, found {tuple(alphas.shape)}")
        return alphas, targets
    alphas, targets = _linear_entropy_schedule(*key)
    atomic_write(path, lambda tmp: torch.save({"alphas": alphas, "targets": targets}, tmp))
    return alphas, targets


# --------------------------------------------------------------------------------------------- the flow
@dataclass
class VonMisesBelief:
    """Parameters of the von Mises input distribution of each periodic coordinate.

    Attributes:
        mean: Mean directions in data units in ``[0, P)`` (fractional coordinates if ``P = 1``), ``[*E, D]``.
        concentration: Concentrations ``c ≥ 0``, shape ``[*E, D]``.

    """

    mean: Tensor
    concentration: Tensor


class PeriodicBayesianFlow(BayesianFlow[VonMisesBelief]):
    """CrysBFN's periodic Bayesian flow on ``[0, P)^D`` with the linear-entropy accuracy schedule.

    Data ``x`` and predictions ``x̂`` have shape ``[*E, D]`` in data units (any real value; they are read
    modulo ``P``).  The schedule for a step count ``n`` is computed on first use and cached.

    Args:
        beta1: Final expected concentration ``β_1`` (CrysBFN: ``10^3``).
        period: Period ``P`` of the coordinates (1 for fractional coordinates, ``2π`` for angles).
        num_particles: Particles used by :func:`linear_entropy_schedule`.
        schedule_seed: Seed of :func:`linear_entropy_schedule`.
        conditioning_floor: ``c_min`` of :meth:`entropy_conditioning`.
        cache_dir: Optional folder where computed schedules are stored and reused across processes.

    """

    def __init__(
        self,
        beta1: float = 1e3,
        period: float = 1.0,
        num_particles: int = 4096,
        schedule_seed: int = 0,
        conditioning_floor: float = 1e-7,
        cache_dir: str | None = None,
    ) -> None:
        if beta1 <= conditioning_floor:
            raise ValueError(f"beta1 must exceed conditioning_floor, got {beta1} <= {conditioning_floor}")
        if period <= 0:
            raise ValueError(f"period must be positive, got {period}")
        self.beta1 = float(beta1)
        self.period = float(period)
        self.num_particles = int(num_particles)
        self.schedule_seed = int(schedule_seed)
        self.conditioning_floor = float(conditioning_floor)
        self.cache_dir = cache_dir

    # ----------------------------------------------------------------------------------------- helpers
    def to_angle(self, x: Tensor) -> Tensor:
        """Data units to radians: ``φ = 2π x / P``."""
        return x * (_TWO_PI / self.period)

    def from_angle(self, angle: Tensor) -> Tensor:
        """Radians to data units, wrapped into ``[0, P)``."""
        return torch.remainder(angle * (self.period / _TWO_PI), self.period)

    def _schedule(self, n_steps: int) -> tuple[Tensor, Tensor]:
        return linear_entropy_schedule(
            n_steps,
            self.beta1,
            num_particles=self.num_particles,
            seed=self.schedule_seed,
            cache_dir=self.cache_dir,
        )

    def accuracy_schedule(self, n_steps: int) -> Tensor:
        """Cached ``α_1..α_n`` (float64, CPU) of :func:`linear_entropy_schedule` for this flow."""
        return self._schedule(n_steps)[0]

    def target_concentrations(self, n_steps: int) -> Tensor:
        """Targets ``c̄_0..c̄_n`` (float64, CPU); their entropies fall linearly from ``ln 2π`` to ``H(β_1)``."""
        return self._schedule(n_steps)[1]

    def step_accuracy(self, step: Tensor | int, n_steps: int) -> Tensor:
        """``α_i`` of the cached schedule for ``i ∈ {1..n}`` (float64, on ``step``'s device if a tensor)."""
        check_steps(step, n_steps, low=1, high=n_steps)
        step = torch.as_tensor(step)
        return self.accuracy_schedule(n_steps).to(step.device)[step.long() - 1]

    def entropy_conditioning(self, belief: VonMisesBelief) -> Tensor:
        """CrysBFN's per-coordinate entropy signal ``clip((ln c - ln c_min) / (ln β_1 - ln c_min), 0, 1)``.

        It is 0 for the uniform prior, 1 at concentration ``β_1``, and monotone in ``c`` (hence in the
        belief's entropy).  Shape ``[*E, D]``.
        """
        log_floor = math.log(self.conditioning_floor)
        log_c = torch.log(belief.concentration.clamp_min(self.conditioning_floor))
        return ((log_c - log_floor) / (math.log(self.beta1) - log_floor)).clamp(0.0, 1.0)

    # ----------------------------------------------------------------------------------------- beliefs
    def prior(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> VonMisesBelief:
        """Uniform prior ``c_0 = 0`` (mean directions drawn uniformly; they carry no information)."""
        mean = torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype) * self.period
        return VonMisesBelief(mean, torch.zeros_like(mean))

    def update(self, belief: VonMisesBelief, y: Tensor, alpha: Tensor | float) -> VonMisesBelief:
        """Bayesian update by adding resultant vectors: ``c' e^{i m'} = c e^{i m} + α e^{i y}`` (CrysBFN).

        Args:
            belief: Prior belief ``vM(m, c)``.
            y: Observation in data units, ``y ~ vM(x, α)`` (as an angle), shape ``[*E, D]``.
            alpha: Sender accuracy, broadcastable to ``y``.

        """
        alpha = as_element_tensor(alpha, y)
        m, ya = self.to_angle(belief.mean), self.to_angle(y)
        cx = belief.concentration * torch.cos(m) + alpha * torch.cos(ya)
        cy = belief.concentration * torch.sin(m) + alpha * torch.sin(ya)
        return VonMisesBelief(self.from_angle(torch.atan2(cy, cx)), torch.hypot(cx, cy))

    def sender_sample(self, x: Tensor, alpha: Tensor | float, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``y ~ vM(2π x / P, α)`` and return it in data units in ``[0, P)`` (``x``'s dtype)."""
        alpha = torch.as_tensor(alpha, device=x.device)
        return self.from_angle(sample_von_mises(self.to_angle(x), alpha, generator=generator)).to(x.dtype)

    def sample_flow_at_step(
        self, x: Tensor, step: Tensor | int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> VonMisesBelief:
        """Simulate ``θ_k ~ p_F(θ | x; k)``: ``c_k e^{i m_k} = Σ_{j≤k} α_j e^{i y_j}``, ``y_j ~ vM(x, α_j)``.

        All ``Σ k`` observations are drawn at once (float64, ragged) and summed per coordinate, so elements
        may sit at different steps (e.g. ``step = k_graph[batch]`` for flat per-atom tensors).  Elements with
        ``k = 0`` get the prior (uniform mean, ``c = 0``), independent of ``x``.

        Args:
            x: Data in ``[0, P)`` (any real value is read modulo ``P``), shape ``[*E, D]``.
            step: Numbers of updates ``k ∈ {0..n}``, broadcastable to ``E``.
            n_steps: Number of steps ``n`` of the schedule.
            generator: Random generator on ``x``'s device.

        """
        check_steps(step, n_steps, low=0, high=n_steps)
        k = torch.broadcast_to(torch.as_tensor(step, device=x.device).long(), x.shape[:-1]).unsqueeze(-1)
        # ragged draw: coordinate e needs exactly k_e observations with accuracies α_1..α_{k_e}
        counts = k.expand(x.shape).reshape(-1)
        owner = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device), counts)
        first = torch.cumsum(counts, 0) - counts
        index = torch.arange(owner.numel(), device=x.device) - first[owner]
        alphas = self.accuracy_schedule(n_steps).to(x.device)[index]
        y = sample_von_mises(torch.zeros_like(alphas), alphas, generator=generator)
        zeros = torch.zeros(counts.numel(), device=x.device, dtype=torch.float64)
        rx = zeros.index_add(0, owner, alphas * torch.cos(y)).reshape(x.shape)
        ry = zeros.index_add(0, owner, alphas * torch.sin(y)).reshape(x.shape)
        mean = self.from_angle(self.to_angle(x.double()) + torch.atan2(ry, rx)).to(x.dtype)
        uniform = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * self.period
        prior = (k == 0).expand_as(x)
        return VonMisesBelief(torch.where(prior, uniform, mean), torch.hypot(rx, ry).to(x.dtype))

    # ----------------------------------------------------------------------------------------- outputs
    def receiver_update(
        self,
        belief: VonMisesBelief,
        prediction: Tensor,
        step: int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> VonMisesBelief:
        """``y ~ vM(x̂, α_i)`` (receiver of a point-mass output), then the resultant-vector update."""
        alpha = self.step_accuracy(step, n_steps).to(prediction.device)
        y = self.sender_sample(prediction, alpha, generator=generator)
        return self.update(belief, y, alpha.to(prediction.dtype))

    def flow_resample(
        self, prediction: Tensor, step: int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> VonMisesBelief:
        """CrysBFN's default ("end_back") step: redraw ``θ_i ~ p_F(θ | x̂; i)`` by simulation."""
        return self.sample_flow_at_step(prediction, step, n_steps, generator=generator)

    def output_to_data(self, prediction: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The point estimate wrapped into ``[0, P)``."""
        return torch.remainder(prediction, self.period)

    # ----------------------------------------------------------------------------------------- losses
    def discrete_time_loss(
        self,
        x: Tensor,
        prediction: Tensor,
        step: Tensor | int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-element ``n · KL(vM(φ, α) ‖ vM(φ̂, α)) = n α A(α) Σ_d (1 - cos(φ_d - φ̂_d))``, ``α = α_{k+1}``.

        Zero iff ``x̂ ≡ x (mod P)`` coordinate-wise; periodic by construction (no minimum-image search).

        Args:
            x: Data, shape ``[*E, D]``.
            prediction: ``x̂`` computed from ``θ_k``, shape ``[*E, D]``.
            step: ``k ∈ {0..n-1}``, broadcastable to ``E``.
            n_steps: Number of steps ``n``.
            generator: Unused (the loss is exact); accepted for interface compatibility.

        Returns:
            Loss per element, shape ``E``.

        """
        check_steps(step, n_steps, low=0, high=n_steps - 1)
        alpha = self.step_accuracy(torch.as_tensor(step, device=x.device) + 1, n_steps)
        weight = (alpha * bessel_ratio(alpha)).to(x.dtype)
        return n_steps * weight * (1.0 - torch.cos(self.to_angle(x - prediction))).sum(-1)
