import math

import pytest
import torch

from flowsci.bayesian_flow import GaussianBayesianFlow, GaussianBelief
from flowsci.testing.bayesian import assert_loss_zero_at_data

torch.set_num_threads(1)


@pytest.fixture
def flow() -> GaussianBayesianFlow:
    return GaussianBayesianFlow(sigma1=0.02)


def test_update_equals_numerical_posterior(flow: GaussianBayesianFlow) -> None:
    torch.manual_seed(0)
    mu, rho = torch.tensor([[0.3], [-1.2], [2.0]], dtype=torch.float64), torch.tensor([[1.0], [4.0], [0.5]])
    y, alpha = torch.tensor([[1.1], [0.4], [-3.0]], dtype=torch.float64), torch.tensor([[2.5], [0.7], [9.0]])
    post = flow.update(GaussianBelief(mu, rho.double()), y, alpha.double())
    grid = torch.linspace(-15, 15, 200001, dtype=torch.float64)
    log_p = -0.5 * rho.double() * (grid - mu) ** 2 - 0.5 * alpha.double() * (y - grid) ** 2
    p = torch.softmax(log_p, dim=-1)
    mean = (p * grid).sum(-1, keepdim=True)
    var = (p * (grid - mean) ** 2).sum(-1, keepdim=True)
    torch.testing.assert_close(post.mean, mean, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(post.precision, 1.0 / var, rtol=1e-6, atol=1e-6)


def test_flow_distribution_matches_closed_form(flow: GaussianBayesianFlow) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.tensor([-1.5, 0.3, 2.0], dtype=torch.float64).expand(200_000, 3)
    for t in (0.0, 0.2, 0.5, 0.9, 1.0):
        belief = flow.sample_flow(x, t, generator=g)
        gamma = 1.0 - 0.02 ** (2 * t)
        se = math.sqrt(max(gamma * (1 - gamma), 1e-12) / x.shape[0])
        torch.testing.assert_close(belief.mean.mean(0), gamma * x[0], atol=5 * se + 1e-12, rtol=0)
        torch.testing.assert_close(
            belief.mean.var(0),
            torch.full((3,), gamma * (1 - gamma), dtype=torch.float64),
            rtol=0.02,
            atol=1e-9,
        )
        torch.testing.assert_close(belief.precision, torch.full_like(belief.precision, 0.02 ** (-2 * t)))


def test_sequential_updates_follow_flow_distribution(flow: GaussianBayesianFlow) -> None:
    g = torch.Generator().manual_seed(2)
    n, x = 20, torch.tensor([0.7, -2.0], dtype=torch.float64).expand(100_000, 2)
    belief = flow.prior(x.shape, dtype=torch.float64)
    for i in range(1, n + 1):
        alpha = flow.step_accuracy(i, n).double()
        belief = flow.update(belief, flow.sender_sample(x, alpha, generator=g), alpha)
        if i in (5, 20):
            t = i / n
            gamma = float(flow.gamma(torch.tensor(t, dtype=torch.float64)))
            torch.testing.assert_close(belief.precision, torch.full_like(belief.precision, 1 + float(flow.beta(t))))
            torch.testing.assert_close(belief.mean.mean(0), gamma * x[0], atol=0.01, rtol=0)
            torch.testing.assert_close(
                belief.mean.var(0),
                torch.full((2,), gamma * (1 - gamma), dtype=torch.float64),
                rtol=0.03,
                atol=1e-4,
            )
    torch.testing.assert_close(flow.step_accuracy(torch.arange(1, n + 1), n).sum(), flow.beta(1.0))


def test_flat_per_atom_times_broadcast(flow: GaussianBayesianFlow) -> None:
    batch = torch.tensor([0, 0, 1, 1, 1, 2])
    t_graph = torch.tensor([0.1, 0.5, 0.9])
    belief = flow.sample_flow(torch.randn(6, 3), t_graph[batch])
    assert belief.mean.shape == (6, 3) and belief.precision.shape == (6, 1)
    torch.testing.assert_close(belief.precision[:, 0], 1 + flow.beta(t_graph[batch]))


def test_epsilon_parameterisation_round_trip(flow: GaussianBayesianFlow) -> None:
    x, eps, t = torch.randn(8, 3), torch.randn(8, 3), torch.rand(8) * 0.9 + 0.05
    gamma = flow.gamma(t)[:, None]
    mean = gamma * x + (gamma * (1 - gamma)).sqrt() * eps
    torch.testing.assert_close(flow.x_from_epsilon(mean, eps, t), x, rtol=1e-4, atol=1e-4)
    assert torch.equal(flow.x_from_epsilon(mean, eps, torch.zeros(8)), torch.zeros(8, 3))


def test_losses(flow: GaussianBayesianFlow) -> None:
    x = torch.randn(16, 3)
    assert_loss_zero_at_data(flow, x, x + 0.1, torch.randint(0, 10, (16,)), 10)
    t = torch.rand(16)
    expected = -math.log(0.02) * 0.02 ** (-2 * t) * 3 * 0.5**2
    torch.testing.assert_close(flow.continuous_time_loss(x, x - 0.5, t), expected)
    # the n-step loss tends to the continuous-time loss as n grows (Graves et al., Sec. 4.11)
    n, k = 100_000, torch.tensor([20_000, 70_000])
    ln = flow.discrete_time_loss(x[:2].double(), x[:2].double() + 0.3, k, n)
    lc = flow.continuous_time_loss(x[:2].double(), x[:2].double() + 0.3, k.double() / n)
    torch.testing.assert_close(ln, lc, rtol=1e-4, atol=0)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="sigma1"):
        GaussianBayesianFlow(sigma1=1.5)
    with pytest.raises(ValueError, match="step indices"):
        GaussianBayesianFlow().step_accuracy(0, 10)
