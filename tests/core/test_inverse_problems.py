"""Posterior sampling with a flow prior on a linear-Gaussian problem with a closed-form posterior."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from flowsci.inverse_problems import posterior_velocity, solve_inverse
from flowsci.manifolds import FlatTorus
from flowsci.paths import CondOTPath, GeodesicPath

torch.set_num_threads(1)

D, M = 3, 2


def _problem() -> tuple[Tensor, Tensor, Tensor, Tensor, float]:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64) ** 2) @ q.T
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    a = torch.randn(M, D, generator=g, dtype=torch.float64)
    y = torch.tensor([1.0, -0.5], dtype=torch.float64)
    return mu, cov, a, y, 0.3


def _prior_velocity(mu: Tensor, cov: Tensor):
    eye = torch.eye(D, dtype=cov.dtype)

    def v(x: Tensor, t: Tensor) -> Tensor:
        tt = t[:, None, None]
        gain = (tt * cov - (1 - tt) * eye) @ torch.linalg.inv(tt**2 * cov + (1 - tt) ** 2 * eye)
        return mu + (gain @ (x - t[:, None] * mu)[..., None])[..., 0]

    return v


def _posterior(mu: Tensor, cov: Tensor, a: Tensor, y: Tensor, sy: float, w: float = 1.0) -> tuple[Tensor, Tensor]:
    """Closed form for the tempered likelihood p(y|x)^w (noise variance sy^2 / w)."""
    prec = torch.linalg.inv(cov) + w * a.T @ a / sy**2
    post_cov = torch.linalg.inv(prec)
    post_mu = post_cov @ (torch.linalg.solve(cov, mu) + w * a.T @ y / sy**2)
    return post_mu, post_cov


def _sample(weight: float, covariance: str, n: int = 3000) -> Tensor:
    mu, cov, a, y, sy = _problem()
    x0 = torch.randn(n, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sol = solve_inverse(
        _prior_velocity(mu, cov), CondOTPath(), a, y, x0, noise_std=sy, weight=weight, covariance=covariance, steps=40
    )
    return sol.x


def test_tweedie_guidance_recovers_closed_form_posterior() -> None:
    mu, cov, a, y, sy = _problem()
    x = _sample(1.0, "tweedie")
    post_mu, post_cov = _posterior(mu, cov, a, y, sy)
    torch.testing.assert_close(x.mean(0), post_mu, atol=0.04, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), post_cov, atol=0.05, rtol=0.1)
    # the data fit: residuals are at the level of the posterior predictive, far below the prior's
    assert (x @ a.T - y).pow(2).mean().sqrt() < 0.6


def test_weight_zero_is_the_prior_and_weight_tightens_fit() -> None:
    mu, cov, a, y, sy = _problem()
    x = _sample(0.0, "tweedie", n=2000)
    torch.testing.assert_close(x.mean(0), mu, atol=0.1, rtol=0)
    res = {w: (_sample(w, "isotropic", n=500) @ a.T - y).pow(2).mean().item() for w in (0.5, 1.0, 4.0)}
    assert res[4.0] < res[1.0] < res[0.5]


def test_isotropic_guidance_is_close_in_mean() -> None:
    mu, cov, a, y, sy = _problem()
    x = _sample(1.0, "isotropic", n=1500)
    post_mu, _ = _posterior(mu, cov, a, y, sy)
    assert (x.mean(0) - post_mu).norm() < 0.5


def test_callable_operator_matches_matrix_and_validation() -> None:
    mu, cov, a, y, sy = _problem()
    v = _prior_velocity(mu, cov)
    x = torch.randn(4, D, dtype=torch.float64)
    t = torch.full((4,), 0.4, dtype=torch.float64)
    gm = posterior_velocity(v, CondOTPath(), a, y, sy)(x, t)
    gc = posterior_velocity(v, CondOTPath(), lambda z: z @ a.T, y, sy)(x, t)
    torch.testing.assert_close(gm, gc)
    with pytest.raises(ValueError):
        posterior_velocity(v, CondOTPath(), a, y, 0.0)
    with pytest.raises(ValueError):
        posterior_velocity(v, GeodesicPath(FlatTorus(D)), a, y, sy, covariance="tweedie")


def test_torus_isotropic_guidance_pulls_towards_observation() -> None:
    """On a geodesic path the heuristic guidance moves samples towards the observed coordinate."""
    torus = FlatTorus(2)
    path = GeodesicPath(torus)
    target = torch.tensor([0.25, 0.75], dtype=torch.float64)

    def v(x: Tensor, t: Tensor) -> Tensor:  # the flow to a point mass at `target`
        return torus.log(x, target.expand_as(x)) / (1 - t[:, None]).clamp_min(1e-2)

    def op(x1: Tensor) -> Tensor:  # observe the first coordinate through a smooth periodic feature
        return torch.stack([torch.cos(2 * torch.pi * x1[:, 0]), torch.sin(2 * torch.pi * x1[:, 0])], -1)

    x0 = torus.random_base((64,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = op(target[None])[0]
    sol = solve_inverse(v, path, op, y, x0, noise_std=0.1, covariance="isotropic", steps=20, t_min=0.05)
    assert torus.dist(sol.x, target.expand_as(sol.x)).mean() < 0.05
