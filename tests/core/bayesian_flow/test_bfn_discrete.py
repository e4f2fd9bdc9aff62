import pytest
import torch
from torch.distributions import Normal

from flowsci.bayesian_flow import CategoricalBelief, DiscreteBayesianFlow
from flowsci.testing.bayesian import assert_loss_zero_at_data

torch.set_num_threads(1)
K = 5


@pytest.fixture
def flow() -> DiscreteBayesianFlow:
    return DiscreteBayesianFlow(num_classes=K, beta1=2.0)


def _log_sender_density(y: torch.Tensor, alpha: float) -> torch.Tensor:
    """log N(y | α(K e_k - 1), αK I) for every class k: [..., K]."""
    means = alpha * (K * torch.eye(K, dtype=y.dtype) - 1.0)  # [K(class), K(dim)]
    return Normal(means, (alpha * K) ** 0.5).log_prob(y.unsqueeze(-2)).sum(-1)


def test_update_equals_exact_posterior(flow: DiscreteBayesianFlow) -> None:
    g = torch.Generator().manual_seed(0)
    theta = torch.softmax(torch.randn(6, K, dtype=torch.float64, generator=g), -1)
    x = torch.randint(0, K, (6,), generator=g)
    alpha = 0.8
    y = flow.sender_sample(x, alpha, generator=g, dtype=torch.float64)
    posterior = torch.softmax(theta.log() + _log_sender_density(y, alpha), -1)  # Bayes' rule, dense likelihood
    torch.testing.assert_close(flow.update(CategoricalBelief(theta), y).probs, posterior)


def test_flow_distribution_matches_closed_form(flow: DiscreteBayesianFlow) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.full((100_000,), 2)
    e_x = torch.nn.functional.one_hot(x[:1], K)[0].double()
    for t in (0.3, 0.7, 1.0):
        theta = flow.sample_flow(x, torch.tensor(t, dtype=torch.float64), generator=g).probs
        logits = theta.log() - theta.log().mean(-1, keepdim=True)  # = y - mean(y)
        beta = 2.0 * t**2
        torch.testing.assert_close(logits.mean(0), beta * (K * e_x - 1), atol=0.02, rtol=0)
        torch.testing.assert_close(
            logits.var(0), torch.full((K,), beta * (K - 1), dtype=torch.float64), rtol=0.03, atol=0
        )
    prior = flow.sample_flow(x[:4], 0.0, generator=g).probs
    torch.testing.assert_close(prior, torch.full((4, K), 1.0 / K))


def test_sequential_updates_follow_flow_distribution(flow: DiscreteBayesianFlow) -> None:
    g = torch.Generator().manual_seed(2)
    n, x = 12, torch.full((50_000,), 4)
    belief = flow.prior(x.shape, dtype=torch.float64)
    for i in range(1, n + 1):
        alpha = flow.step_accuracy(i, n).double()
        belief = flow.update(belief, flow.sender_sample(x, alpha, generator=g, dtype=torch.float64))
    direct = flow.sample_flow_at_step(x, n, n, generator=g).probs.double()
    for theta in (belief.probs, direct):
        logits = theta.log() - theta.log().mean(-1, keepdim=True)
        torch.testing.assert_close(
            logits.mean(0)[4], torch.tensor(2.0 * (K - 1), dtype=torch.float64), atol=0.03, rtol=0
        )
        torch.testing.assert_close(
            logits.var(0), torch.full((K,), 2.0 * (K - 1), dtype=torch.float64), rtol=0.04, atol=0
        )
    torch.testing.assert_close(flow.step_accuracy(torch.arange(1, n + 1), n).sum(), torch.tensor(2.0))


def test_discrete_time_loss_is_the_sender_receiver_kl(flow: DiscreteBayesianFlow) -> None:
    g = torch.Generator().manual_seed(3)
    n, k = 10, 4
    x = torch.tensor([0, 3, 1])
    logits = torch.randn(3, K, dtype=torch.float64, generator=g)
    alpha = float(flow.step_accuracy(k + 1, n))
    loss = flow.discrete_time_loss(x, logits, k, n, generator=torch.Generator().manual_seed(7))
    y = flow.sender_sample(x, alpha, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    log_dens = _log_sender_density(y, alpha)
    log_sender = log_dens.gather(-1, x[:, None])[:, 0]
    log_receiver = torch.logsumexp(torch.log_softmax(logits, -1) + log_dens, -1)
    torch.testing.assert_close(loss, n * (log_sender - log_receiver))


def test_losses(flow: DiscreteBayesianFlow) -> None:
    x = torch.randint(0, K, (32,))
    wrong = torch.nn.functional.one_hot((x + 1) % K, K).float() * 3.0
    assert_loss_zero_at_data(flow, x, wrong, torch.randint(0, 10, (32,)), 10)
    t = torch.rand(32)
    probs = torch.softmax(wrong, -1)
    e_x = torch.nn.functional.one_hot(x, K).float()
    torch.testing.assert_close(flow.continuous_time_loss(x, wrong, t), K * 2.0 * t * ((e_x - probs) ** 2).sum(-1))


def test_invalid_data(flow: DiscreteBayesianFlow) -> None:
    with pytest.raises(ValueError, match="class indices"):
        flow.sample_flow(torch.tensor([0, K]), 0.5)
    with pytest.raises(ValueError, match="integer"):
        flow.sample_flow(torch.tensor([0.0, 1.0]), 0.5)
