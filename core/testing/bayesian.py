"""Reusable assertions for Bayesian flow networks (:mod:`flowsci.bayesian_flow`).

A domain that declares its modalities as a dict of flows can check in one line that its state space is wired
correctly: an oracle network that outputs the true data must make the sampler return the data, and every loss
must vanish at the data and be positive elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from flowsci.bayesian_flow import (
    BayesianFlow,
    BayesianFlowSample,
    DiscreteBayesianFlow,
    GaussianBayesianFlow,
    PeriodicBayesianFlow,
    sample_bayesian_flows,
)

__all__ = ["assert_loss_zero_at_data", "assert_oracle_sampling_recovers_data", "oracle_prediction"]


def oracle_prediction(flow: BayesianFlow, x: Tensor) -> Tensor:
    """The network output of a perfect predictor of ``x``.

    Gaussian and periodic flows: ``x`` itself; discrete flows: logits ``0`` for the true class and ``-inf``
    elsewhere (so ``softmax`` is exactly one-hot).

    Args:
        flow: A :class:`~flowsci.bayesian_flow.BayesianFlow`.
        x: Data of that flow.

    Raises:
        TypeError: For an unknown flow type.

    """
    if isinstance(flow, DiscreteBayesianFlow):
        one_hot = torch.nn.functional.one_hot(x.long(), flow.num_classes).to(torch.get_default_dtype())
        return torch.log(one_hot)
    if isinstance(flow, GaussianBayesianFlow | PeriodicBayesianFlow):
        return x.clone()
    raise TypeError(f"no oracle prediction known for flow type {type(flow).__name__}")


def _assert_matches(flow: BayesianFlow, name: str, sample: Tensor, x: Tensor, atol: float) -> None:
    if isinstance(flow, DiscreteBayesianFlow):
        if not torch.equal(sample, x.long()):
            raise AssertionError(f"flow {name!r}: sampled classes differ from the data")
        return
    diff = sample - x
    if isinstance(flow, PeriodicBayesianFlow):
        diff = torch.remainder(diff + 0.5 * flow.period, flow.period) - 0.5 * flow.period
    err = float(diff.abs().max()) if diff.numel() else 0.0
    if not err <= atol:
        raise AssertionError(f"flow {name!r}: sample differs from the data by {err:.3g} > atol={atol:.3g}")


def assert_oracle_sampling_recovers_data(
    flows: Mapping[str, BayesianFlow],
    data: Mapping[str, Tensor],
    batch_size: int,
    steps: int = 10,
    *,
    seed: int = 0,
    atol: float = 1e-5,
    **sampler_kwargs: object,
) -> BayesianFlowSample:
    """Run :func:`~flowsci.bayesian_flow.sample_bayesian_flows` with an oracle network and check the result.

    The oracle returns :func:`oracle_prediction` of the data for every flow, whatever beliefs it receives; the
    samples must equal the data (periodic data modulo the period), and the NFE must be ``steps (+ 1)``.

    Args:
        flows: Named flows.
        data: Data per flow name (the shapes handed to the sampler are the data shapes).
        batch_size: Length of the time vector passed to the network.
        steps: Number of sampling steps.
        seed: Seed of the sampler.
        atol: Tolerance for continuous and periodic data.
        **sampler_kwargs: Further sampler keyword arguments (``strategy``, ``final_network_call``, ...).

    Returns:
        The sampler's result, for further checks of the final beliefs.

    Raises:
        AssertionError: If a sample differs from the data or the NFE is wrong.

    """
    predictions = {name: oracle_prediction(flows[name], x) for name, x in data.items()}

    def oracle(beliefs: Mapping[str, object], t: Tensor, **cond: object) -> dict[str, Tensor]:
        return predictions

    device = next(iter(data.values())).device
    out = sample_bayesian_flows(
        oracle,
        flows,
        {name: tuple(x.shape) for name, x in data.items()},
        batch_size,
        steps,
        seed=seed,
        device=device,
        **sampler_kwargs,  # type: ignore[arg-type]
    )
    for name, x in data.items():
        _assert_matches(flows[name], name, out.samples[name], x, atol)
    expected_nfe = steps + int(bool(sampler_kwargs.get("final_network_call", True)))
    if out.nfe != expected_nfe:
        raise AssertionError(f"sampler reported nfe={out.nfe}, expected {expected_nfe}")
    return out


def assert_loss_zero_at_data(
    flow: BayesianFlow,
    x: Tensor,
    wrong_prediction: Tensor,
    step: Tensor | int,
    n_steps: int,
    *,
    seed: int = 0,
    atol: float = 1e-6,
) -> None:
    """Check that the ``n``-step (and continuous-time) losses are 0 at the data and positive elsewhere.

    Args:
        flow: The flow.
        x: Data.
        wrong_prediction: A prediction that differs from the oracle's for every element (for discrete flows:
            logits whose softmax is not the one-hot of ``x``).
        step: Steps ``k ∈ {0..n-1}`` (broadcastable to the element shape).
        n_steps: Number of steps ``n``.
        seed: Seed for losses estimated by Monte Carlo.
        atol: Tolerance for the zero loss.

    Raises:
        AssertionError: If a loss is not zero at the data, or not positive at ``wrong_prediction``.

    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    perfect = oracle_prediction(flow, x)
    losses = {"discrete_time": flow.discrete_time_loss(x, perfect, step, n_steps, generator=generator)}
    wrong = {"discrete_time": flow.discrete_time_loss(x, wrong_prediction, step, n_steps, generator=generator)}
    if isinstance(flow, GaussianBayesianFlow | DiscreteBayesianFlow):
        t = torch.as_tensor(step, device=x.device).to(torch.get_default_dtype()) / n_steps + 1.0 / (2 * n_steps)
        losses["continuous_time"] = flow.continuous_time_loss(x, perfect, t)
        wrong["continuous_time"] = flow.continuous_time_loss(x, wrong_prediction, t)
    for kind, loss in losses.items():
        err = float(loss.abs().max()) if loss.numel() else 0.0
        if not err <= atol or math.isnan(err):
            raise AssertionError(f"{kind} loss at the data is {err:.3g}, expected 0")
    if isinstance(flow, DiscreteBayesianFlow):  # one-sample KL estimates: average 256 draws per element
        draws = [flow.discrete_time_loss(x, wrong_prediction, step, n_steps, generator=generator) for _ in range(256)]
        wrong["discrete_time"] = torch.stack(draws).mean(0)
    for kind, loss in wrong.items():
        if not bool((loss > 0).all()):
            raise AssertionError(f"{kind} loss is not positive for a wrong prediction: min {float(loss.min()):.3g}")
