import math

import pytest
import torch

from flowsci.optim import WarmupCosineAdamW


def _rates(opt: WarmupCosineAdamW, p: torch.nn.Parameter, n: int) -> list[float]:
    out = []
    for _ in range(n):
        p.grad = torch.ones_like(p)
        opt.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def test_warmup_then_cosine_to_the_final_fraction():
    p = torch.nn.Parameter(torch.zeros(3))
    rates = _rates(WarmupCosineAdamW([p], lr=1e-3, total=100, warmup=10, final=0.1), p, 120)
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    # half-way through the decay the cosine is at its mean: final + (1 - final) / 2
    assert rates[55] == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 90))))
    assert all(a >= b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[100] == pytest.approx(1e-4) and rates[-1] == pytest.approx(1e-4)


def test_a_resumed_optimiser_continues_the_schedule():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4))
    full = WarmupCosineAdamW([p], lr=1e-2, total=40, warmup=5)
    reference = _rates(full, p, 40)

    q = torch.nn.Parameter(torch.randn(4))
    first = WarmupCosineAdamW([q], lr=1e-2, total=40, warmup=5)
    head = _rates(first, q, 25)
    resumed = WarmupCosineAdamW([q], lr=1e-2, total=40, warmup=5)
    resumed.load_state_dict(first.state_dict())
    assert resumed.steps_done() == 25
    assert head + _rates(resumed, q, 15) == pytest.approx(reference)


def test_rejects_a_meaningless_schedule():
    with pytest.raises(ValueError, match="total"):
        WarmupCosineAdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3, total=0)
