"""Riemannian flow matching end to end: exact velocity fields integrated with the manifold-aware solver."""

from __future__ import annotations

import math

import pytest
import torch

from flowsci.manifolds import (
    SO3,
    Euclidean,
    FlatTorus,
    Manifold,
    Product,
    Sphere,
    fill_padding,
    mask_tangent,
    quaternion_apply,
    quaternion_conjugate,
    quaternion_multiply,
    random_quaternion,
    rotvec_to_quaternion,
    wrap_diff,
)
from flowsci.paths.geodesic import GeodesicPath
from flowsci.solvers import solve_ode
from flowsci.testing.manifolds import assert_on_manifold


@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_conditional_quaternion_velocity_reaches_target(method: str) -> None:
    """Geodesic Euler with u_t(q) = log_q(q1) / (1 - t) lands on q1 (up to float32 round-off)."""
    m = SO3()
    g = torch.Generator().manual_seed(0)
    q0, q1 = m.random_base(256, generator=g), m.random_base(256, generator=g)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return m.log(x, q1) / (1 - t)[:, None]

    sol = solve_ode(velocity, q0, method=method, steps=10, manifold=m, return_trajectory=True)
    assert m.dist(sol.x, q1).max() < 1e-5
    for x in sol.trajectory:
        assert_on_manifold(m, x, 1e-6)
    # Intermediate states lie on the SLERP path.
    assert m.dist(sol.trajectory[4], m.geodesic(q0, q1, 0.4)).max() < 1e-5


@pytest.mark.parametrize("method", ["euler", "midpoint"])
@pytest.mark.parametrize(
    "manifold",
    [FlatTorus(3), Sphere(2), SO3(), Product([Euclidean(3), SO3(), FlatTorus(2), Sphere(4)])],
    ids=["torus", "sphere", "so3", "product"],
)
def test_geodesic_solvers_stay_on_manifold_and_reach_targets(manifold: Manifold, method: str) -> None:
    """Every solver step stays on the manifold (to 1e-6 in float32) and the conditional field reaches x1.

    Geodesic Euler follows the geodesic exactly; midpoint combines a stage from another point, which on the
    sphere costs O(h^2) (about 2e-3 rad for 12 steps) unless stages are parallel-transported.
    """
    g = torch.Generator().manual_seed(9)
    x0, x1 = manifold.random_base(128, generator=g), manifold.random_base(128, generator=g)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return manifold.log(x, x1) / (1 - t)[:, None]

    sol = solve_ode(velocity, x0, method=method, steps=12, manifold=manifold, return_trajectory=True)
    for x in sol.trajectory:
        assert_on_manifold(manifold, x, 1e-6)
    assert manifold.dist(sol.x, x1).max() < (1e-4 if method == "euler" else 1e-2)


def test_masked_frames_reach_targets_and_padding_stays_put() -> None:
    frames = Product([Euclidean(3), SO3()])
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 2])[:, None]
    x0 = fill_padding(frames, frames.random_base((3, 7), generator=g), mask)
    x1 = fill_padding(frames, frames.random_base((3, 7), generator=g), mask)
    nan_padding = x1.clone()
    nan_padding[~mask] = float("nan")  # whatever sits in padding must not leak into real entries

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        target = fill_padding(frames, nan_padding, mask)
        return mask_tangent(frames.log(x, target) / (1 - t)[:, None, None], mask)

    sol = solve_ode(velocity, x0, method="euler", steps=8, manifold=frames)
    assert frames.dist(sol.x, x1).max() < 1e-5
    assert torch.equal(sol.x[~mask], x0[~mask])


def _torus_marginal_velocity(x: torch.Tensor, t: torch.Tensor, mu: torch.Tensor, s: float) -> torch.Tensor:
    """Exact marginal field of the geodesic path from the uniform prior on T^d to a wrapped normal WN(mu, s^2).

    Given x_t = x, the end point is x1 = x + d with d restricted to |d| < a = (1 - t)/2 (the uniform prior
    contracted towards x1) and density WN(x + d; mu, s). The field is E[d | x_t = x] / (1 - t), a mixture of
    truncated normals over the periodic images k = -1, 0, 1; it factorises over coordinates.
    """
    a = (1 - t)[:, None] / 2
    m0 = wrap_diff(mu - x)
    num = torch.zeros_like(x)
    den = torch.zeros_like(x)
    for k in (-1.0, 0.0, 1.0):
        m = m0 + k
        lo, hi = (-a - m) / s, (a - m) / s
        z = torch.where(
            lo > 0,
            torch.special.ndtr(-lo) - torch.special.ndtr(-hi),
            torch.special.ndtr(hi) - torch.special.ndtr(lo),
        )
        pdf_lo, pdf_hi = torch.exp(-0.5 * lo**2), torch.exp(-0.5 * hi**2)
        num = num + m * z + s * (pdf_lo - pdf_hi) / math.sqrt(2 * math.pi)
        den = den + z
    return num / den.clamp_min(1e-300) / (1 - t)[:, None]


def test_torus_marginal_field_is_the_average_of_geodesic_targets() -> None:
    """Quadrature over x1 of GeodesicPath's dx_t, weighted by the posterior, equals the closed-form field."""
    m, mu, s = FlatTorus(1), torch.tensor([0.9], dtype=torch.float64), 0.1
    x1 = (torch.arange(20000, dtype=torch.float64) + 0.5)[:, None] / 20000
    wn = sum(torch.exp(-0.5 * ((x1 - mu + k) / s) ** 2) for k in (-2, -1, 0, 1, 2))[:, 0]
    for x_val, t_val in ((0.05, 0.3), (0.5, 0.1), (0.8, 0.7), (0.2, 0.0)):
        x = torch.full((20000, 1), x_val, dtype=torch.float64)
        t = torch.full((20000,), t_val, dtype=torch.float64)
        back = m.log(x1, x)  # x_t = x1 + (1 - t) log_{x1}(x0)  =>  x0 = x1 + back / (1 - t)
        valid = (back.abs() < (1 - t_val) / 2)[:, 0]
        x0 = m.exp(x1, back / (1 - t_val))
        sample = GeodesicPath(m).sample(x0, x1, t)
        assert (m.dist(sample.x_t, x)[valid]).max() < 1e-10
        w = wn * valid
        quad = (w[:, None] * sample.dx_t).sum(0) / w.sum()
        closed = _torus_marginal_velocity(x[:1], t[:1], mu, s)[0]
        torch.testing.assert_close(quad, closed, atol=1e-6, rtol=1e-4)


def test_rfm_transports_uniform_torus_to_wrapped_normal() -> None:
    """Integrating the exact marginal field maps uniform samples to WN(mu, s^2) across the boundary.

    Check the circular moments E[exp(2 pi i k (x - mu))] = exp(-2 pi^2 k^2 s^2) for k = 1, 2.
    """
    m, s = FlatTorus(2), 0.07
    mu = torch.tensor([0.97, 0.3], dtype=torch.float64)
    x0 = m.random_base(4000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _torus_marginal_velocity(x, t, mu, s)

    sol = solve_ode(velocity, x0, method="midpoint", steps=60, manifold=m)
    assert_on_manifold(m, sol.x, 0.0)
    phase = 2 * math.pi * wrap_diff(sol.x - mu)
    for k in (1, 2):
        expected = math.exp(-2 * math.pi**2 * k**2 * s**2)
        torch.testing.assert_close(
            torch.cos(k * phase).mean(0), torch.full((2,), expected, dtype=torch.float64), atol=0.02, rtol=0
        )
        assert torch.sin(k * phase).mean(0).abs().max() < 0.02
    # The prior itself fails the same check (the test can fail).
    assert torch.cos(2 * math.pi * wrap_diff(x0 - mu)).mean(0).abs().max() < 0.05


def test_rfm_transports_concentrated_so3_distribution() -> None:
    """Coupling x1 = g x0 between concentrated distributions: the marginal field is the space-fixed rotation
    omega = rotvec(g) seen in the body frame, R(x)^T omega, and equals GeodesicPath's target."""
    m = SO3()
    gen = torch.Generator().manual_seed(3)
    centre = random_quaternion(1, generator=gen)
    x0 = m.exp(centre.expand(512, 4), 0.2 * torch.randn(512, 3, generator=gen))  # concentrated around centre
    omega = torch.tensor([[0.4, -2.1, 1.3]])
    g = rotvec_to_quaternion(omega)
    x1 = quaternion_multiply(g, x0)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return quaternion_apply(quaternion_conjugate(x), omega.expand(x.shape[0], 3))

    t = torch.rand(512, generator=gen)
    sample = GeodesicPath(m).sample(x0, x1, t)
    torch.testing.assert_close(velocity(sample.x_t, t), sample.dx_t, atol=2e-5, rtol=0)
    for method in ("euler", "midpoint"):
        sol = solve_ode(velocity, x0, method=method, steps=10, manifold=m)
        assert m.dist(sol.x, x1).max() < 2e-5
        # Same spread around the moved centre as the prior around its centre.
        torch.testing.assert_close(
            m.dist(sol.x, quaternion_multiply(g, centre)).sort().values,
            m.dist(x0, centre).sort().values,
            atol=2e-5,
            rtol=0,
        )


def _so3_empirical_field(x: torch.Tensor, t: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """Exact marginal field from the Haar prior to the empirical distribution of ``data`` ``[N, 4]``.

    p_t(x | x1) is the Haar measure contracted towards x1 by 1 - t in exponential coordinates; relative to Haar
    it is (1 - t)^-3 h(theta / (1 - t)) / h(theta) for theta = d(x, x1) < (1 - t) pi, h(theta) = (1 - cos theta)
    / theta^2 being the Haar density in exponential coordinates.
    """
    m = SO3()
    xs, ds = torch.broadcast_tensors(x[:, None, :], data[None, :, :])
    logs = m.log(xs, ds)  # [B, N, 3]
    theta = logs.norm(dim=-1)
    scale = (1 - t)[:, None]

    def h(a: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.special.sinc(a / (2 * math.pi)) ** 2  # (1 - cos a) / a^2

    inside = theta < scale * math.pi
    w = torch.where(inside, h(theta / scale) / h(theta), torch.zeros_like(theta))
    # Samples pushed just outside every support ball by discretisation follow the nearest ball inwards
    # (the field's limit at the boundary).
    nearest = torch.nn.functional.one_hot(theta.argmin(1), data.shape[0]).to(w)
    w = torch.where(w.sum(1, keepdim=True) > 0, w, nearest)
    w = w / w.sum(1, keepdim=True)
    return (w[..., None] * logs).sum(1) / scale


def test_rfm_transports_haar_to_concentrated_empirical_distribution() -> None:
    """Haar prior -> 8 rotations around a centre: samples snap onto the data, each receiving 1/8 of the mass.

    Pearson's chi^2 (7 dof) of the counts must stay below 20 (p ~ 0.005); dropping the Haar-density ratio from
    the weights gives chi^2 ~ 38 with this seed, so the test detects an inexact field.
    """
    m = SO3()
    gen = torch.Generator().manual_seed(4)
    centre = random_quaternion(1, generator=gen, dtype=torch.float64)
    data = m.exp(centre.expand(8, 4), 0.3 * torch.randn(8, 3, generator=gen, dtype=torch.float64))
    x0 = m.random_base(2000, generator=gen, dtype=torch.float64)
    assert m.dist(x0, centre).mean() > 2.0  # the prior is spread out (Haar mean angle pi/2 + 2/pi ~ 2.21)

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return _so3_empirical_field(x, t, data)

    sol = solve_ode(velocity, x0, method="midpoint", steps=40, manifold=m)
    nearest = m.dist(sol.x[:, None, :], data[None, :, :]).min(1)
    assert (nearest.values < 0.02).double().mean() > 0.98
    counts = torch.bincount(nearest.indices, minlength=8).double()
    assert ((counts - 250) ** 2 / 250).sum() < 20
