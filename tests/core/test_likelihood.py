"""Log-likelihoods against closed forms: affine Gaussian flow, torus and SO(3) flows, Hutchinson, masks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from flowsci.likelihood import draw_probes, event_dims, log_prob, manifold_log_volume, prior_log_prob
from flowsci.manifolds import SO3, FlatTorus, Product, Sphere, quaternion_to_rotvec
from flowsci.solvers import solve_ode

torch.set_num_threads(1)


def _gaussian_problem(d: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(torch.linspace(0.3, 2.0, d, dtype=torch.float64) ** 2) @ q.T
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    return mu, cov


def gaussian_velocity(mu: Tensor, cov: Tensor):
    """Exact CondOT marginal velocity from N(0, I) to N(mu, cov)."""
    eye = torch.eye(len(mu), dtype=cov.dtype)

    def v(x: Tensor, t: Tensor) -> Tensor:
        tt = t[:, None, None]
        sig = tt**2 * cov + (1 - tt) ** 2 * eye
        a = tt * cov - (1 - tt) * eye
        gain = a @ torch.linalg.inv(sig)
        return mu + (gain @ (x - t[:, None] * mu)[..., None])[..., 0]

    return v


def test_affine_gaussian_flow_exact_log_density() -> None:
    mu, cov = _gaussian_problem()
    x1 = torch.distributions.MultivariateNormal(mu, cov).sample((16,))
    ref = torch.distributions.MultivariateNormal(mu, cov).log_prob(x1)
    out = log_prob(gaussian_velocity(mu, cov), x1, steps=40, method="rk4")
    torch.testing.assert_close(out.log_prob, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.bits_per_dim, -ref / (3 * math.log(2)), atol=1e-5, rtol=0)
    assert out.nfe == 160 and out.x0.shape == x1.shape


def test_hutchinson_converges_to_exact() -> None:
    mu, cov = _gaussian_problem(d=4, seed=1)
    v = gaussian_velocity(mu, cov)
    x1 = torch.distributions.MultivariateNormal(mu, cov).sample((8,))
    exact = log_prob(v, x1, steps=8, method="midpoint").log_prob
    errors = {}
    for kind in ("rademacher", "gaussian"):
        for k in (1, 16, 256):
            est = log_prob(v, x1, steps=8, method="midpoint", estimator="hutchinson", num_probes=k, probe=kind, seed=3)
            errors[kind, k] = (est.log_prob - exact).abs().mean().item()
        assert errors[kind, 256] < errors[kind, 1]
        assert errors[kind, 256] < 0.15
    # the same seed gives the same estimate
    a = log_prob(v, x1, steps=4, method="euler", estimator="hutchinson", seed=5).log_prob
    b = log_prob(v, x1, steps=4, method="euler", estimator="hutchinson", seed=5).log_prob
    torch.testing.assert_close(a, b)


def test_probes_have_identity_second_moment() -> None:
    for kind in ("rademacher", "gaussian"):
        eps = draw_probes((3,), 20000, kind, seed=0, dtype=torch.float64)
        torch.testing.assert_close(eps.T @ eps / len(eps), torch.eye(3, dtype=torch.float64), atol=0.05, rtol=0)
    assert set(draw_probes((5,), 4, "rademacher", seed=0).unique().tolist()) <= {-1.0, 1.0}


def _circle_field(a: float = 1.0, b: float = 0.7, phase: float = 0.3):
    def v(x: Tensor, t: Tensor) -> Tensor:
        return a + b * torch.sin(2 * math.pi * x + phase)

    return v


def test_torus_flow_matches_closed_form() -> None:
    """Autonomous 1-D fields: the flow map has phi'(x0) = v(x1)/v(x0), so log p1(x1) = log v(x0) - log v(x1)."""
    torus = FlatTorus(2)
    v = _circle_field()
    g = torch.Generator().manual_seed(0)
    x0 = torus.random_base((32,), generator=g, dtype=torch.float64)
    x1 = solve_ode(v, x0, method="rk4", steps=200, manifold=torus).x
    ref = (torch.log(v(x0, None)) - torch.log(v(x1, None))).sum(-1)
    out = log_prob(v, x1, manifold=torus, steps=100, method="rk4")
    torch.testing.assert_close(out.log_prob, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(torus.log(out.x0, x0), torch.zeros_like(x0), atol=1e-6, rtol=0)


def _so3_radial_field(c: float = -1.5):
    """Body angular velocity c sin(theta) n: rotations move along their own axis, theta' = c sin(theta)."""

    def v(q: Tensor, t: Tensor) -> Tensor:
        r = quaternion_to_rotvec(q)
        theta = r.norm(dim=-1, keepdim=True)
        return c * torch.sin(theta) / theta.clamp_min(1e-12) * r

    return v


def _so3_closed_form(q0: Tensor, q1: Tensor) -> Tensor:
    """Haar angle density (1 - cos)/pi pushed by theta' = c sin(theta), divided by Haar, over the volume 8 pi^2."""
    th0 = quaternion_to_rotvec(q0).norm(dim=-1)
    th1 = quaternion_to_rotvec(q1).norm(dim=-1)
    return (
        torch.log(1 - torch.cos(th0))
        + torch.log(torch.sin(th0))
        - torch.log(torch.sin(th1))
        - torch.log(1 - torch.cos(th1))
        - math.log(8 * math.pi**2)
    )


def test_so3_flow_matches_closed_form() -> None:
    so3 = SO3()
    v = _so3_radial_field()
    g = torch.Generator().manual_seed(1)
    q0 = so3.random_base((24,), generator=g, dtype=torch.float64)
    q1 = solve_ode(v, q0, method="rk4", steps=200, manifold=so3).x
    ref = _so3_closed_form(q0, q1)
    out = log_prob(v, q1, manifold=so3, steps=100, method="rk4")
    torch.testing.assert_close(out.log_prob, ref, atol=1e-5, rtol=0)
    assert torch.allclose(out.dims, torch.full((24,), 3.0, dtype=torch.float64))


def test_product_with_mask_sums_factors_and_skips_padding() -> None:
    """Points [B, N, 2+4] on torus x SO(3), last entries padded: equals the factor closed forms over real entries."""
    man = Product([FlatTorus(2), SO3()])
    vt, vr = _circle_field(), _so3_radial_field()

    def v(x: Tensor, t: Tensor) -> Tensor:
        return torch.cat([vt(x[..., :2], t), vr(x[..., 2:], t)], dim=-1)

    g = torch.Generator().manual_seed(2)
    b, n = 4, 3
    x0 = man.random_base((b, n), generator=g, dtype=torch.float64)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[:, -1] = False
    mask[0, 1] = False
    x1 = solve_ode(v, x0, method="rk4", steps=200, manifold=man).x
    x1 = torch.where(mask[..., None], x1, man.origin((b, n), dtype=torch.float64))
    per = (torch.log(vt(x0[..., :2], None)) - torch.log(vt(x1[..., :2], None))).sum(-1)
    per = per + _so3_closed_form(x0[..., 2:], x1[..., 2:])
    ref = torch.where(mask, per, torch.zeros_like(per)).sum(-1)
    out = log_prob(v, x1, manifold=man, steps=30, method="rk4", mask=mask)
    torch.testing.assert_close(out.log_prob, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.dims, 5.0 * mask.sum(-1).to(torch.float64))
    coarse = log_prob(v, x1, manifold=man, steps=6, method="midpoint", mask=mask)
    hutch = log_prob(v, x1, manifold=man, steps=6, method="midpoint", mask=mask, estimator="hutchinson", num_probes=16)
    assert (hutch.log_prob - coarse.log_prob).abs().max() < 0.5
    # padded entries did not move
    torch.testing.assert_close(out.x0[~mask], x1[~mask])


def test_prior_log_prob_and_volumes() -> None:
    assert manifold_log_volume(SO3()) == pytest.approx(math.log(8 * math.pi**2))
    assert manifold_log_volume(Sphere(2)) == pytest.approx(math.log(4 * math.pi))
    assert manifold_log_volume(Sphere(1)) == pytest.approx(math.log(2 * math.pi))
    assert manifold_log_volume(FlatTorus(3)) == 0.0
    x = torch.randn(5, 4, 2, dtype=torch.float64)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(x).sum((1, 2))
    torch.testing.assert_close(prior_log_prob(x), ref)
    mask = torch.tensor([[1, 1, 0, 0]] * 5)
    ref_m = torch.distributions.Normal(0.0, 1.0).log_prob(x[:, :2]).sum((1, 2))
    torch.testing.assert_close(prior_log_prob(x, mask=mask), ref_m)
    torch.testing.assert_close(event_dims(x, mask=mask), torch.full((5,), 4.0, dtype=torch.float64))
    s = Sphere(2).random_base((5, 3), dtype=torch.float64)
    torch.testing.assert_close(prior_log_prob(s, Sphere(2)), torch.full((5,), -3 * math.log(4 * math.pi)).double())
    torch.testing.assert_close(event_dims(s, Sphere(2)), torch.full((5,), 6.0, dtype=torch.float64))


def test_sphere_divergence_of_rotation_field_is_zero() -> None:
    """A rigid rotation of S^2 preserves the uniform density: log p = -log(4 pi) for every estimator."""
    sphere = Sphere(2)
    w = torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64)

    def v(x: Tensor, t: Tensor) -> Tensor:
        return torch.linalg.cross(w.expand_as(x), x)

    x1 = sphere.random_base((6,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for est in ("exact", "hutchinson"):
        out = log_prob(v, x1, manifold=sphere, steps=10, method="midpoint", estimator=est)
        torch.testing.assert_close(out.log_prob, torch.full((6,), -math.log(4 * math.pi), dtype=torch.float64))


def test_sphere_contracting_field_matches_closed_form() -> None:
    """v = c (e - <e, x> x) moves the polar angle by theta' = -c sin(theta), as the SO(3) case on S^2."""
    sphere = Sphere(2)
    e = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    c = 1.2

    def v(x: Tensor, t: Tensor) -> Tensor:
        return c * (e - (x * e).sum(-1, keepdim=True) * x)

    x0 = sphere.random_base((16,), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x1 = solve_ode(v, x0, method="rk4", steps=200, manifold=sphere).x
    th0, th1 = torch.arccos(x0[:, 2]), torch.arccos(x1[:, 2])
    # area density of the polar angle is sin(theta)/2; pushed by theta' = -c sin(theta): ratio sin(th0)/sin(th1)
    ref = -math.log(4 * math.pi) + 2 * (torch.log(torch.sin(th0)) - torch.log(torch.sin(th1)))
    out = log_prob(v, x1, manifold=sphere, steps=100, method="rk4")
    torch.testing.assert_close(out.log_prob, ref, atol=1e-5, rtol=0)


def test_non_finite_data_is_refused() -> None:
    from flowsci.errors import InputError

    with pytest.raises(InputError):
        log_prob(lambda x, t: x, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError):
        log_prob(lambda x, t: x, torch.zeros(2, 2), estimator="nope")


def test_flow_matching_methods_and_cli(tmp_path, monkeypatch) -> None:
    import numpy as np

    import flowsci.checkpoint
    from flowsci.cli import main
    from flowsci.module import FlowMatching
    from flowsci.nets import MLP

    torch.manual_seed(0)
    model = FlowMatching(MLP(dim=2, hidden=16, depth=2), data_shape=[2]).eval()
    x = torch.randn(5, 2)
    res = model.log_prob(x, steps=4, method="midpoint")
    ref = log_prob(model.velocity, x, steps=4, method="midpoint")
    torch.testing.assert_close(res.log_prob, ref.log_prob)
    inv = model.invert(x, steps=4)
    assert inv.x.shape == x.shape and inv.nfe == 8
    post = model.solve_inverse(torch.eye(2)[:1], torch.zeros(1), num=3, seed=0, noise_std=0.1, steps=3)
    assert post.x.shape == (3, 2)

    ckpt = tmp_path / "m.pt"  # the loader is replaced: MLP records no config for save_module
    ckpt.write_bytes(b"")
    monkeypatch.setattr(flowsci.checkpoint, "load_module", lambda path, trust=False: model)
    np.save(tmp_path / "x.npy", x.numpy())
    main(
        [
            "likelihood",
            "--ckpt",
            str(ckpt),
            "--data",
            str(tmp_path / "x.npy"),
            "--out",
            str(tmp_path / "o"),
            "--steps",
            "4",
        ]
    )
    out = np.load(tmp_path / "o" / "likelihood.npz")
    assert out["log_prob"].shape == (5,) and np.isfinite(out["bits_per_dim"]).all()
    assert (tmp_path / "o" / "likelihood.csv").read_text().count("\n") == 6
    with pytest.raises(SystemExit):
        main(["likelihood", "--ckpt", str(ckpt), "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "p")])
