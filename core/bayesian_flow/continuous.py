r"""Bayesian flow for continuous data (Graves et al., 2023, "Bayesian Flow Networks", Sec. 4).

Input distribution ``p_I(x | θ) = N(x | μ, ρ^{-1} I)`` with ``θ = (μ, ρ)`` and prior ``θ_0 = (0, 1)``; the
data should be standardised.  The sender distribution is ``p_S(y | x; α) = N(y | x, α^{-1} I)`` and the
conjugate Bayesian update (Sec. 4.1) is

.. math::

    ρ_i = ρ_{i-1} + α_i, \qquad μ_i = \frac{ρ_{i-1} μ_{i-1} + α_i y_i}{ρ_i}.

Accuracies add (Sec. 4.3), so with the schedule ``β(t) = σ_1^{-2t} - 1`` (Sec. 4.5; ``α(t) = dβ/dt =
-2 ln σ_1 · σ_1^{-2t}``) the Bayesian flow distribution is closed form (Sec. 4.4):

.. math::

    p_F(μ | x; t) = N\big(μ \mid γ(t) x,\ γ(t)(1 - γ(t)) I\big), \qquad
    γ(t) = \frac{β(t)}{1 + β(t)} = 1 - σ_1^{2t}, \qquad ρ(t) = 1 + β(t) = σ_1^{-2t}.

The network outputs a point estimate ``x̂(θ, t)`` (the output distribution is a point mass, as in CrysBFN for
the lattice); :meth:`GaussianBayesianFlow.x_from_epsilon` converts Graves' ``ε̂`` parameterisation.  Losses:
continuous time (Sec. 4.11) ``L^∞(x) = -ln σ_1 · E_{t ~ U(0,1)} σ_1^{-2t} ‖x - x̂(θ, t)‖²`` and ``n`` steps
(Sec. 4.10) ``L^n(x) = n/2 · E_i α_i ‖x - x̂(θ_{i-1}, t_{i-1})‖²`` with ``α_i = σ_1^{-2i/n}(1 - σ_1^{2/n})``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flowsci.bayesian_flow.base import BayesianFlow, as_element_tensor, check_steps

__all__ = ["GaussianBayesianFlow", "GaussianBelief"]


@dataclass
class GaussianBelief:
    """Parameters of the Gaussian input distribution ``N(μ, ρ^{-1} I)``.

    Attributes:
        mean: Means ``μ``, shape ``[*E, D]``.
        precision: Precisions ``ρ``, broadcastable to ``mean`` (one value per element: shape ``[*E, 1]``).

    """

    mean: Tensor
    precision: Tensor


class GaussianBayesianFlow(BayesianFlow[GaussianBelief]):
    """Bayesian flow for continuous data with schedule ``β(t) = σ_1^{-2t} - 1``.

    Args:
        sigma1: Standard deviation ``σ_1`` of the input distribution at ``t = 1`` (``0 < σ_1 < 1``); the paper
            uses 0.001 for CIFAR-10, CrysBFN ``10^{-1.5}`` for standardised lattices.
        t_min: Below this time the prediction of :meth:`x_from_epsilon` is set to zero (Graves' ``t_min``).

    """

    def __init__(self, sigma1: float = 1e-3, t_min: float = 1e-6) -> None:
        if not 0.0 < sigma1 < 1.0:
            raise ValueError(f"sigma1 must lie in (0, 1), got {sigma1}")
        self.sigma1 = float(sigma1)
        self.t_min = float(t_min)

    # ----------------------------------------------------------------------------------------- schedule
    def beta(self, t: Tensor | float) -> Tensor:
        """Accuracy schedule ``β(t) = σ_1^{-2t} - 1`` (Graves et al., Sec. 4.5)."""
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        return torch.expm1(-2.0 * math.log(self.sigma1) * t)

    def gamma(self, t: Tensor | float) -> Tensor:
        """``γ(t) = β(t) / (1 + β(t)) = 1 - σ_1^{2t}``."""
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        return -torch.expm1(2.0 * math.log(self.sigma1) * t)

    def step_accuracy(self, step: Tensor | int, n_steps: int) -> Tensor:
        """``α_i = β(i/n) - β((i-1)/n) = σ_1^{-2i/n} (1 - σ_1^{2/n})`` for ``i ∈ {1..n}``."""
        check_steps(step, n_steps, low=1, high=n_steps)
        i = torch.as_tensor(step, dtype=torch.get_default_dtype())
        log_s = math.log(self.sigma1)
        return torch.exp(-2.0 * log_s * i / n_steps) * (-math.expm1(2.0 * log_s / n_steps))

    # ----------------------------------------------------------------------------------------- beliefs
    def prior(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> GaussianBelief:
        """Standard-normal prior ``θ_0 = (0, 1)`` for data of shape ``[*E, D]``."""
        mean = torch.zeros(tuple(shape), device=device, dtype=dtype)
        return GaussianBelief(mean, torch.ones((*mean.shape[:-1], 1), device=mean.device, dtype=mean.dtype))

    @staticmethod
    def update(belief: GaussianBelief, y: Tensor, alpha: Tensor | float) -> GaussianBelief:
        """Conjugate update ``ρ' = ρ + α``, ``μ' = (ρ μ + α y) / ρ'`` (Graves et al., Sec. 4.1).

        Args:
            belief: Prior belief ``(μ, ρ)``.
            y: Observation ``y ~ N(x, α^{-1} I)``, shape ``[*E, D]``.
            alpha: Accuracy ``α``, broadcastable to ``[*E, 1]``.

        """
        alpha = as_element_tensor(alpha, y)
        precision = belief.precision + alpha
        return GaussianBelief((belief.precision * belief.mean + alpha * y) / precision, precision)

    def sender_sample(self, x: Tensor, alpha: Tensor | float, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``y ~ p_S(y | x; α) = N(x, α^{-1} I)``; ``alpha`` broadcastable to ``[*E, 1]``."""
        alpha = as_element_tensor(alpha, x)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return x + noise * alpha.rsqrt()

    def sample_flow(self, x: Tensor, t: Tensor | float, *, generator: torch.Generator | None = None) -> GaussianBelief:
        """Draw ``μ ~ p_F(μ | x; t) = N(γ x, γ(1-γ) I)``; ``ρ = 1 + β(t)`` (Graves et al., Sec. 4.4).

        Args:
            x: Data, shape ``[*E, D]``.
            t: Times in ``[0, 1]``, broadcastable to ``E``.
            generator: Random generator.

        """
        t = as_element_tensor(t, x).unsqueeze(-1)
        gamma = self.gamma(t)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        mean = gamma * x + (gamma * (1.0 - gamma)).sqrt() * noise
        return GaussianBelief(mean, (1.0 + self.beta(t)).expand(*mean.shape[:-1], 1))

    def sample_flow_at_step(
        self, x: Tensor, step: Tensor | int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> GaussianBelief:
        """``θ_k ~ p_F(θ | x; t = k / n)`` (accuracies add, so the step form is the continuous one)."""
        check_steps(step, n_steps, low=0, high=n_steps)
        return self.sample_flow(x, as_element_tensor(step, x) / n_steps, generator=generator)

    # ----------------------------------------------------------------------------------------- outputs
    def x_from_epsilon(self, mean: Tensor, epsilon: Tensor, t: Tensor | float) -> Tensor:
        """Graves' output parameterisation ``x̂ = μ / γ - sqrt((1-γ)/γ) ε̂`` (zero for ``t < t_min``).

        Inverts ``μ = γ x + sqrt(γ(1-γ)) ε``; ``t`` is broadcastable to ``E``.
        """
        t = as_element_tensor(t, mean).unsqueeze(-1)
        gamma = self.gamma(t.clamp_min(self.t_min))
        x_hat = mean / gamma - ((1.0 - gamma) / gamma).sqrt() * epsilon
        return torch.where(t < self.t_min, torch.zeros_like(x_hat), x_hat)

    def receiver_update(
        self,
        belief: GaussianBelief,
        prediction: Tensor,
        step: int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> GaussianBelief:
        """``y ~ N(x̂, α_i^{-1} I)`` (receiver of a point-mass output), then the conjugate update."""
        alpha = self.step_accuracy(step, n_steps).to(prediction)
        return self.update(belief, self.sender_sample(prediction, alpha, generator=generator), alpha)

    def flow_resample(
        self, prediction: Tensor, step: int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> GaussianBelief:
        """``θ_i ~ p_F(θ | x̂; i / n)``."""
        return self.sample_flow_at_step(prediction, step, n_steps, generator=generator)

    def output_to_data(self, prediction: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The point estimate ``x̂`` itself."""
        return prediction

    # ----------------------------------------------------------------------------------------- losses
    def continuous_time_loss(self, x: Tensor, prediction: Tensor, t: Tensor | float) -> Tensor:
        """``L^∞ = -ln σ_1 · σ_1^{-2t} ‖x - x̂‖²`` per element (Graves et al., Sec. 4.11).

        Its expectation over ``t ~ U(0, 1)`` and ``θ ~ p_F(θ | x; t)`` is the negative ELBO term of the
        infinite-step limit.

        Args:
            x: Data, shape ``[*E, D]``.
            prediction: ``x̂(θ, t)``, shape ``[*E, D]``.
            t: Times, broadcastable to ``E``.

        Returns:
            Loss per element, shape ``E``.

        """
        t = as_element_tensor(t, x)
        log_s = math.log(self.sigma1)
        return -log_s * torch.exp(-2.0 * log_s * t) * (x - prediction).square().sum(-1)

    def discrete_time_loss(
        self,
        x: Tensor,
        prediction: Tensor,
        step: Tensor | int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """``n · KL(N(x, α^{-1}) ‖ N(x̂, α^{-1})) = n α_{k+1} ‖x - x̂‖² / 2`` per element (Sec. 4.10).

        ``step = k ∈ {0..n-1}`` is the number of updates behind the network input (``t = k / n``).
        """
        check_steps(step, n_steps, low=0, high=n_steps - 1)
        alpha = self.step_accuracy(torch.as_tensor(step) + 1, n_steps).to(x)
        return 0.5 * n_steps * alpha * (x - prediction).square().sum(-1)
