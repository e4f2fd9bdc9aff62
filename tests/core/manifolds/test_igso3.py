import math

import numpy as np
import pytest
import torch
from scipy import stats

from flowsci.manifolds import SO3, igso3_angle_density, quaternion_to_rotvec, sample_igso3
from flowsci.testing import assert_on_manifold


def _angle_cdf(sigma):
    grid = np.linspace(0, math.pi, 8001)
    pdf = igso3_angle_density(grid, sigma)
    cdf = np.concatenate([[0.0], np.cumsum((pdf[1:] + pdf[:-1]) / 2 * np.diff(grid))])
    return grid, cdf


@pytest.mark.parametrize("sigma", [0.05, 0.5, 1.5])
def test_density_normalised_and_samples_follow_it(sigma):
    grid, cdf = _angle_cdf(sigma)
    assert abs(cdf[-1] - 1) < 1e-4
    q = sample_igso3(20_000, sigma, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_on_manifold(SO3(), q, atol=1e-10)
    angle = SO3().dist(q, torch.tensor([1.0, 0, 0, 0], dtype=torch.float64).expand_as(q)).numpy()
    assert stats.kstest(angle, lambda a: np.interp(a, grid, cdf)).pvalue > 1e-3


def test_small_sigma_is_a_gaussian_rotation_vector():
    sigma = 0.05
    rv = quaternion_to_rotvec(sample_igso3(50_000, sigma, generator=torch.Generator().manual_seed(1)).double())
    cov = torch.cov(rv.T)
    torch.testing.assert_close(
        cov, sigma**2 * torch.eye(3, dtype=torch.float64), atol=7e-5, rtol=0
    )  # 4 standard errors of the variance estimate


def test_large_sigma_tends_to_haar():
    grid = np.linspace(0, math.pi, 201)
    haar = (1 - np.cos(grid)) / math.pi
    np.testing.assert_allclose(igso3_angle_density(grid, 6.0), haar, atol=1e-6)


def test_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        sample_igso3(3, 0.0)
