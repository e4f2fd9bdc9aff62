"""Common interface of the Bayesian flows (Graves et al., 2023, "Bayesian Flow Networks", arXiv:2308.07037).

A Bayesian flow network (BFN) keeps, for every data element, the parameters ``θ`` of a simple factorised
*input distribution* ``p_I(x | θ)`` (a "belief").  Starting from a prior ``θ_0``, the belief is refined by
``n`` Bayesian updates ``θ_i = h(θ_{i-1}, y_i, α_i)`` with noisy observations ``y_i ~ p_S(· | x; α_i)`` (the
*sender distribution*) of accuracy ``α_i``.  The distribution of ``θ_i`` given the data is the *Bayesian flow
distribution* ``p_F(θ | x; i)``; a network maps the belief of all elements jointly to an *output distribution*
``p_O(x | θ, t)``; its sender-side mixture is the *receiver distribution* ``p_R(y | θ; t, α)`` (Graves et al.,
Sec. 3).  Training minimises the KL between sender and receiver at a random step.

Each concrete flow (:class:`~flowsci.bayesian_flow.GaussianBayesianFlow`,
:class:`~flowsci.bayesian_flow.DiscreteBayesianFlow`, :class:`~flowsci.bayesian_flow.PeriodicBayesianFlow`)
implements :class:`BayesianFlow`, which is exactly what :func:`~flowsci.bayesian_flow.sample_bayesian_flows`
needs to drive any combination of them with one network.

Shape conventions.  Flows act *elementwise*.  "Element shape" ``E`` is the shape of the data without
its feature axis: ``x`` is ``[*E, D]`` for continuous and periodic data and ``[*E]`` (class indices) for
categorical data.  ``E`` can be a padded ``[B, N]`` layout or a flat torch-geometric ``[num_atoms]`` layout;
per-element times or step indices must then be broadcastable to ``E`` (e.g. ``t[batch]`` for flat per-atom
tensors, ``t[:, None]`` for padded ones).  Losses are returned per element (shape ``E``) so that masking or
per-graph averaging stays with the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Generic, TypeVar

import torch
from torch import Tensor

__all__ = ["BayesianFlow", "BeliefT", "as_element_tensor", "check_steps"]

BeliefT = TypeVar("BeliefT")


def as_element_tensor(value: float | Tensor, like: Tensor) -> Tensor:
    """Return ``value`` as a floating tensor on ``like``'s device with ``like``'s floating dtype.

    Args:
        value: A python number or a tensor (times, accuracies, step indices).
        like: Reference tensor giving the device (and the dtype if it is floating point).

    Returns:
        A tensor holding ``value``; its shape is unchanged (0-d for python numbers).

    """
    dtype = like.dtype if like.is_floating_point() else torch.get_default_dtype()
    return torch.as_tensor(value, dtype=dtype, device=like.device)


def check_steps(step: Tensor | int, n_steps: int, *, low: int, high: int) -> None:
    """Validate integer step indices.

    Args:
        step: Step indices (python int or integer tensor).
        n_steps: Total number of steps ``n`` (must be positive).
        low: Smallest allowed index.
        high: Largest allowed index.

    Raises:
        ValueError: If ``n_steps < 1`` or any index lies outside ``[low, high]``.

    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    s = torch.as_tensor(step)
    if s.is_floating_point():
        raise ValueError(f"step indices must be integers, got dtype {s.dtype}")
    if s.numel() and (int(s.min()) < low or int(s.max()) > high):
        raise ValueError(f"step indices must lie in [{low}, {high}], got range [{int(s.min())}, {int(s.max())}]")


class BayesianFlow(ABC, Generic[BeliefT]):
    """A Bayesian flow for one data modality, in the discrete-step form used by the sampler.

    With ``n`` steps, step ``i ∈ {1..n}`` sends an observation of accuracy ``α_i`` (:meth:`step_accuracy`),
    the belief after ``k`` updates is ``θ_k`` and the network sees it at time ``t_k = k / n``.  The ``n``-step
    loss of Graves et al. (Sec. 3) is ``L^n(x) = n E_{i ~ U{1..n}} E_{p_F(θ | x; i-1)} KL(p_S(· | x; α_i) ‖
    p_R(· | θ; t_{i-1}, α_i))`` (:meth:`discrete_time_loss`).

    Flows are stateless configuration objects (not ``nn.Module``s); everything follows the device and dtype of
    the tensors they are given.
    """

    @abstractmethod
    def prior(
        self,
        shape: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> BeliefT:
        """Return the prior belief ``θ_0``.

        Args:
            shape: Data shape: ``[*E, D]`` for continuous/periodic data, ``[*E]`` for categorical data.
            device: Device of the belief tensors.
            dtype: Floating dtype of the belief tensors (default: torch's default dtype).
            generator: Random generator (used where the prior has a random but irrelevant component).

        """

    @abstractmethod
    def step_accuracy(self, step: Tensor | int, n_steps: int) -> Tensor:
        """Accuracy ``α_i`` of the ``i``-th of ``n_steps`` observations (``i ∈ {1..n}``)."""

    @abstractmethod
    def sample_flow_at_step(
        self, x: Tensor, step: Tensor | int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> BeliefT:
        """Draw ``θ_k ~ p_F(θ | x; k)``, the belief after ``k = step`` of ``n_steps`` updates."""

    @abstractmethod
    def receiver_update(
        self,
        belief: BeliefT,
        prediction: Tensor,
        step: int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> BeliefT:
        """One generative step: ``y ~ p_R(· | θ_{i-1}; t_{i-1}, α_i)``, then ``θ_i = h(θ_{i-1}, y, α_i)``.

        Args:
            belief: Current belief ``θ_{i-1}``.
            prediction: Network output for this modality (the parameters of ``p_O``).
            step: Index ``i ∈ {1..n}`` of the update.
            n_steps: Total number of steps ``n``.
            generator: Random generator.

        """

    @abstractmethod
    def flow_resample(
        self, prediction: Tensor, step: int, n_steps: int, *, generator: torch.Generator | None = None
    ) -> BeliefT:
        """CrysBFN's sampling variant: redraw ``θ_i ~ p_F(θ | x̂; i)`` at the current estimate ``x̂``."""

    @abstractmethod
    def output_to_data(self, prediction: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Map a final network output to a data sample (point estimate, or a draw from ``p_O``)."""

    @abstractmethod
    def discrete_time_loss(
        self,
        x: Tensor,
        prediction: Tensor,
        step: Tensor | int,
        n_steps: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Per-element ``n``-step loss ``n · KL(p_S(· | x; α_{k+1}) ‖ p_R(· | θ_k; t_k, α_{k+1}))``.

        Args:
            x: Data.
            prediction: Network output computed from ``θ_k`` (``k = step``).
            step: Number ``k ∈ {0..n-1}`` of updates the network input had received, broadcastable to ``E``.
            n_steps: Total number of steps ``n``.
            generator: Random generator (for losses estimated by Monte Carlo).

        Returns:
            Loss per element, shape ``E``.

        """
