"""Sample-quality metrics against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.metrics import mmd2_rbf, sliced_wasserstein2, wasserstein2_exact


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sliced_w2_of_a_translation_is_the_projected_shift() -> None:
    # y = x + c: every 1-D projection is shifted by theta.c, so SW2^2 = mean_p (theta_p . c)^2 exactly,
    # and E_theta (theta . c)^2 = |c|^2 / d for theta uniform on the sphere.
    x = torch.randn(300, 3, generator=_gen(0), dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    theta = torch.randn(4096, 3, generator=g, dtype=torch.float64)
    theta = theta / theta.norm(dim=1, keepdim=True)
    exact = float(((theta @ c) ** 2).mean().sqrt())
    assert sliced_wasserstein2(x, x + c, num_projections=4096, seed=7) == pytest.approx(exact, rel=1e-9)
    assert exact == pytest.approx(float(c.norm()) / math.sqrt(3), rel=0.03)


def test_sliced_w2_in_one_dimension_is_w2() -> None:
    # In 1-D, SW2 = W2; for y = s x (same sample, s > 0) the sorted coupling gives W2 = |1 - s| * rms(x).
    x = torch.randn(500, 1, generator=_gen(1), dtype=torch.float64)
    s = 1.7
    expected = abs(1 - s) * float(x.pow(2).mean().sqrt())
    assert sliced_wasserstein2(x, s * x, num_projections=8) == pytest.approx(expected, rel=1e-9)
    assert wasserstein2_exact(x, s * x) == pytest.approx(expected, rel=1e-6)


def test_sliced_w2_unequal_sizes_is_exact_for_empirical_measures() -> None:
    # A sample repeated twice is the same empirical measure: distance 0 despite n != m.
    x = torch.randn(101, 2, generator=_gen(2))
    assert sliced_wasserstein2(x, torch.cat([x, x]), num_projections=32) == pytest.approx(0.0, abs=1e-12)
    # 1-D, n=2 vs m=3 by hand: quantile functions {0,1} on halves vs {0,1,2} on thirds.
    a = torch.tensor([[0.0], [1.0]])
    b = torch.tensor([[0.0], [1.0], [2.0]])
    # |F_a^-1 - F_b^-1|^2 is 0 on [0,1/3], 1 on [1/3,1/2], 0 on [1/2,2/3], 1 on [2/3,1] -> W2^2 = 1/6 + 1/3
    assert sliced_wasserstein2(a, b, num_projections=4) == pytest.approx(math.sqrt(0.5), rel=1e-9)


def test_sliced_w2_is_symmetric_and_bounded_by_w2() -> None:
    x = torch.randn(200, 2, generator=_gen(3))
    y = torch.randn(200, 2, generator=_gen(4)) * torch.tensor([2.0, 0.5]) + 1.0
    assert sliced_wasserstein2(x, y) == pytest.approx(sliced_wasserstein2(y, x), rel=1e-9)
    # projections are 1-Lipschitz: SW2 <= W2
    assert sliced_wasserstein2(x, y) <= wasserstein2_exact(x, y) + 1e-9


def test_w2_exact_of_translation_and_permutation() -> None:
    x = torch.randn(150, 2, generator=_gen(5), dtype=torch.float64)
    c = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert wasserstein2_exact(x, x + c) == pytest.approx(5.0, rel=1e-6)
    assert wasserstein2_exact(x, x[torch.randperm(150, generator=_gen(6))]) == pytest.approx(0.0, abs=1e-6)


def test_mmd_point_masses_closed_form() -> None:
    # delta_a vs delta_b: MMD^2 = k(a,a) + k(b,b) - 2k(a,b) = 2 - 2 mean_h exp(-|a-b|^2 / 2h^2)
    a, b = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    hs = (0.5, 1.0, 3.0)
    expected = 2 - 2 * sum(math.exp(-2.0 / (2 * h * h)) for h in hs) / len(hs)
    assert mmd2_rbf(a, b, bandwidths=hs) == pytest.approx(expected, rel=1e-12)
    x = torch.randn(64, 2, generator=_gen(7))
    assert mmd2_rbf(x, x) == pytest.approx(0.0, abs=1e-12)


def test_unbiased_mmd_matches_gaussian_closed_form() -> None:
    # For X ~ N(mu1, s1^2 I_d), Y ~ N(mu2, s2^2 I_d) and k = exp(-|x-y|^2 / 2h^2):
    # E k(X, Y) = (h^2 / (h^2 + s1^2 + s2^2))^(d/2) exp(-|mu1 - mu2|^2 / (2 (h^2 + s1^2 + s2^2)))
    d, h = 2, 1.0
    mu1, mu2, s1, s2 = torch.zeros(d), torch.tensor([1.0, 0.0]), 1.0, 0.5

    def ek(m1: torch.Tensor, m2: torch.Tensor, a: float, b: float) -> float:
        v = h * h + a * a + b * b
        return (h * h / v) ** (d / 2) * math.exp(-float((m1 - m2).pow(2).sum()) / (2 * v))

    exact = ek(mu1, mu1, s1, s1) + ek(mu2, mu2, s2, s2) - 2 * ek(mu1, mu2, s1, s2)
    x = mu1 + s1 * torch.randn(3000, d, generator=_gen(8), dtype=torch.float64)
    y = mu2 + s2 * torch.randn(3000, d, generator=_gen(9), dtype=torch.float64)
    est = mmd2_rbf(x, y, bandwidths=(h,), unbiased=True)
    assert est == pytest.approx(exact, abs=0.01)  # estimator std ~ 3e-3 at n = 3000
    biased = mmd2_rbf(x, y, bandwidths=(h,))
    assert biased > est  # the V-statistic adds the positive diagonal terms


def test_metrics_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match="same dimension"):
        sliced_wasserstein2(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        mmd2_rbf(torch.zeros(3), torch.zeros(3, 1))
