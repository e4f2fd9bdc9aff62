r"""Bayesian flow for categorical data (Graves et al., 2023, "Bayesian Flow Networks", Sec. 6).

Each element is one of ``K`` classes (e.g. an atom type).  The input distribution is categorical with
probabilities ``θ ∈ Δ^{K-1}`` and uniform prior ``θ_0 = 1/K``.  The sender distribution is Gaussian over
``R^K`` (Sec. 6.2), ``p_S(y | x; α) = N(y | α (K e_x - 1), α K I)``, and the Bayesian update (Sec. 6.3)
multiplies the belief by the likelihood ratio:

.. math::

    θ_i = \frac{e^{y} θ_{i-1}}{\sum_k e^{y_k} θ_{i-1,k}} = \mathrm{softmax}(y + \ln θ_{i-1}).

Accuracies add (Sec. 6.4) and with ``β(t) = β_1 t²`` (Sec. 6.6; ``α(t) = 2 β_1 t``) the Bayesian flow
distribution over the simplex is (Sec. 6.5)

.. math::

    p_F(θ | x; t) = E_{y ~ N(β(t)(K e_x - 1),\ β(t) K I)}\ δ(θ - \mathrm{softmax}(y)).

The network outputs logits of ``p_O(· | θ; t)``; ``ê = softmax(logits)`` is its expected one-hot vector.
Losses: continuous time (Sec. 6.9) ``L^∞(x) = K β_1 E_{t} t ‖e_x - ê(θ, t)‖²``; ``n`` steps (Sec. 6.8)
``n · KL(p_S ‖ p_R)`` with ``α_i = β_1 (2i - 1) / n²`` and the receiver mixture
``p_R(y) = Σ_k p_O(k) N(y | α(K e_k - 1), α K I)``, estimated with one sender sample: the Gaussian
log-densities differ only through ``y_k``, so
``ln p_S(y) - ln p_R(y) = y_x - \mathrm{logsumexp}_k(\ln p_O(k) + y_k)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from flowsci.bayesian_flow.base import BayesianFlow, as_element_tensor, check_steps

__all__ = ["CategoricalBelief", "DiscreteBayesianFlow"]


@dataclass
class CategoricalBelief:
    """Parameters of the categorical input distribution.

    Attributes:
        probs: Class probabilities ``θ``, shape ``[*E, K]`` (rows sum to one).

    """

    probs: Tensor

    def network_input(self) -> Tensor:
        """Graves et al.'s network input ``2θ - 1`` (shape ``[*E, K]``)."""
        return 2.0 * self.probs - 1.0


class DiscreteBayesianFlow(BayesianFlow[CategoricalBelief]):
    """Bayesian flow for categorical data with schedule ``β(t) = β_1 t²``.

    Data ``x`` are integer class indices of shape ``[*E]``; predictions are logits of shape ``[*E, K]``.

    Args:
        num_classes: Number of classes ``K ≥ 2``.
        beta1: Final accuracy ``β_1`` (Graves et al. use 3 for binarised MNIST and 0.75 for text8; CrysBFN 0.5
            for 89 atom types).

    """

    def __init__(self, num_classes: int, beta1: float = 3.0) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if beta1 <= 0:
            raise ValueError(f"beta1 must be positive, got {beta1}")
        self.num_classes = int(num_classes)
        self.beta1 = float(beta1)

    # ----------------------------------------------------------------------------------------- schedule
    def beta(self, t: Tensor | float) -> Tensor:
        """Accuracy schedule ``β(t) = β_1 t²`` (Graves et al., Sec. 6.6)."""
        t = torch.as_tensor(t, dtype=torch.get_default_dtype()) if not torch.is_tensor(t) else t
        return self.beta1 * t.square()

    def step_accuracy(self, step: Tensor | int, n_steps: int) -> Tensor:
        """``α_i = β(i/n) - β((i-1)/n) = β_1 (2i - 1) / n²`` for ``i ∈ {1..n}``."""
        check_steps(step, n_steps, low=1, high=n_steps)
        i = torch.as_tensor(step, dtype=torch.get_default_dtype())
        return self.beta1 * (2.0 * i - 1.0) / n_steps**2

    # ----------------------------------------------------------------------------------------- beliefs
    def _one_hot(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        if x.is_floating_point():
            raise ValueError(f"categorical data must be integer class indices, got dtype {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.num_classes):
            raise ValueError(f"class indices must lie in [0, {self.num_classes - 1}]")
        return F.one_hot(x.long(), self.num_classes).to(dtype)

    def prior(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> CategoricalBelief:
        """Uniform prior ``θ_0 = 1/K`` for data (class indices) of shape ``[*E]``."""
        return CategoricalBelief(
            torch.full((*shape, self.num_classes), 1.0 / self.num_classes, device=device, dtype=dtype)
        )

    @staticmethod
    def update(belief: CategoricalBelief, y: Tensor) -> CategoricalBelief:
        """Bayesian update ``θ' = softmax(y + ln θ)`` (Graves et al., Sec. 6.3); ``y``: ``[*E, K]``."""
        log_probs = belief.probs.clamp_min(torch.finfo(belief.probs.dtype).tiny).log()
        return CategoricalBelief(torch.softmax(y + log_probs, dim=-1))

    def _gaussian_logits(self, expected_one_hot: Tensor, accuracy: Tensor, generator: torch.Generator | None) -> Tensor:
        """Draw ``y ~ N(a (K e - 1), a K I)`` for accuracies ``a`` broadcastable to ``[*E, 1]``."""
        k = self.num_classes
        noise = torch.randn(
            expected_one_hot.shape,
            generator=generator,
            device=expected_one_hot.device,
            dtype=expected_one_hot.dtype,
        )
        return accuracy * (k * expected_one_hot - 1.0) + (accuracy * k).sqrt() * noise

    def sender_sample(
        self,
        x: Tensor,
        alpha: Tensor | float,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Draw ``y ~ p_S(y | x; α) = N(α (K e_x - 1), α K I)``; ``x`` holds class indices ``[*E]``.

        ``alpha`` is broadcastable to ``E``; the result has shape ``[*E, K]`` and dtype ``dtype`` (default:
        torch's default dtype).
        """
        e_x = self._one_hot(x, dtype or torch.get_default_dtype())
        return self._gaussian_logits(e_x, as_element_tensor(alpha, e_x).unsqueeze(-1), generator)

    def sample_flow(
        self,
        x: Tensor,
        t: Tensor | float,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> CategoricalBelief:
        """Draw ``θ = softmax(y)``, ``y ~ N(β(t)(K e_x - 1), β(t) K I)`` (Graves et al., Sec. 6.5).

        Args:
            x: Class indices, shape ``[*E]``.
            t: Times in ``[0, 1]``, broadcastable to ``E``.
            generator: Random generator.
            dtype: Floating dtype of the belief (default: ``t``'s if floating, else torch's default).

        """
        if dtype is None:
            dtype = t.dtype if torch.is_tensor(t) and t.is_floating_point() else torch.get_default_dtype()
        e_x = self._one_hot(x, dtype)
        beta = self.beta(as_element_tensor(t, e_x)).unsqueeze(-1)
        return CategoricalBelief(torch.softmax(self._gaussian_logits(e_x, beta, generator), dim=-1))

    def sample_flow_at_step(
        self, x: Tensor, step: Tensor | int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> CategoricalBelief:
        """``θ_k ~ p_F(θ | x; t = k / n)``."""
        check_steps(step, n_steps, low=0, high=n_steps)
        t = torch.as_tensor(step, device=x.device, dtype=torch.get_default_dtype()) / n_steps
        return self.sample_flow(x, t, generator=generator)

    # ----------------------------------------------------------------------------------------- outputs
    def receiver_update(
        self,
        belief: CategoricalBelief,
        prediction: Tensor,
        step: int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> CategoricalBelief:
        """Graves et al.'s sampler step: ``k ~ p_O``, ``y ~ p_S(· | k; α_i)``, ``θ' = softmax(y + ln θ)``."""
        alpha = self.step_accuracy(step, n_steps).to(prediction)
        k = self.output_to_data(prediction, generator=generator)
        y = self._gaussian_logits(F.one_hot(k, self.num_classes).to(prediction), alpha, generator)
        return self.update(belief, y)

    def flow_resample(
        self, prediction: Tensor, step: int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> CategoricalBelief:
        """CrysBFN's variant: ``θ = softmax(y)``, ``y ~ N(β(t_i)(K ê - 1), β(t_i) K I)``, ``ê = softmax``."""
        check_steps(step, n_steps, low=0, high=n_steps)
        beta = self.beta(torch.as_tensor(step / n_steps)).to(prediction)
        y = self._gaussian_logits(torch.softmax(prediction, dim=-1), beta, generator)
        return CategoricalBelief(torch.softmax(y, dim=-1))

    def output_to_data(self, prediction: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw class indices ``k ~ p_O = softmax(logits)``; returns a long tensor of shape ``[*E]``."""
        probs = torch.softmax(prediction.detach(), dim=-1).reshape(-1, self.num_classes)
        return torch.multinomial(probs, 1, generator=generator).reshape(prediction.shape[:-1])

    # ----------------------------------------------------------------------------------------- losses
    def continuous_time_loss(self, x: Tensor, prediction: Tensor, t: Tensor | float) -> Tensor:
        """``L^∞ = K β_1 t ‖e_x - softmax(logits)‖²`` per element (Graves et al., Sec. 6.9).

        Args:
            x: Class indices, shape ``[*E]``.
            prediction: Logits, shape ``[*E, K]``.
            t: Times, broadcastable to ``E``.

        Returns:
            Loss per element, shape ``E``.

        """
        e_x = self._one_hot(x, prediction.dtype)
        t = as_element_tensor(t, prediction)
        sq = (e_x - torch.softmax(prediction, dim=-1)).square().sum(-1)
        return self.num_classes * self.beta1 * t * sq

    def discrete_time_loss(
        self,
        x: Tensor,
        prediction: Tensor,
        step: Tensor | int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """One-sample estimate of ``n · KL(p_S(· | x; α_{k+1}) ‖ p_R(· | θ_k; α_{k+1}))`` (Sec. 6.8).

        With ``y ~ p_S``: ``n (y_x - logsumexp_k(log_softmax(logits)_k + y_k))``; exactly zero when
        ``p_O`` puts all mass on ``x`` and non-negative in expectation.

        Args:
            x: Class indices, shape ``[*E]``.
            prediction: Logits computed from ``θ_k``, shape ``[*E, K]``.
            step: ``k ∈ {0..n-1}``, broadcastable to ``E``.
            n_steps: Number of steps ``n``.
            generator: Random generator for the sender sample.

        """
        check_steps(step, n_steps, low=0, high=n_steps - 1)
        alpha = self.step_accuracy(torch.as_tensor(step) + 1, n_steps).to(prediction)
        e_x = self._one_hot(x, prediction.dtype)
        y = self._gaussian_logits(e_x, torch.broadcast_to(alpha, x.shape).unsqueeze(-1), generator)
        y_x = (y * e_x).sum(-1)
        mixture = torch.logsumexp(torch.log_softmax(prediction, dim=-1) + y, dim=-1)
        return n_steps * (y_x - mixture)
