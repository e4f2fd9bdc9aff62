import pytest
import torch

from flowsci.manifolds import FlatTorus
from flowsci.paths.geodesic import GeodesicPath
from flowsci.scaling import best_of_n, particle_sampling, repeat_cond
from flowsci.solvers import DiffusionSchedule, solve_ode, solve_sde
from flowsci.testing.gmm import eight_gaussians_flow

torch.set_num_threads(1)


def test_repeat_cond_layout():
    cond = {"y": torch.tensor([3, 5]), "shared": torch.tensor(1.0), "name": "abc"}
    out = repeat_cond(cond, num=2, n=3)
    assert torch.equal(out["y"], torch.tensor([3, 3, 3, 5, 5, 5]))
    assert out["shared"] is cond["shared"] and out["name"] == "abc"


def test_best_of_n_picks_the_best_candidate_of_each_group():
    flow = eight_gaussians_flow()
    num, n = 50, 6
    x0 = torch.randn(num * n, 2, generator=torch.Generator().manual_seed(0))

    def reward(x):
        return x[:, 0]

    sol = best_of_n(flow.velocity, x0, reward, n=n, steps=12, method="midpoint")
    full = solve_ode(flow.velocity, x0, method="midpoint", steps=12).x.reshape(num, n, 2)
    best = full[..., 0].argmax(1)
    torch.testing.assert_close(sol.x, full[torch.arange(num), best])
    torch.testing.assert_close(sol.extras["reward"], full[..., 0].max(1).values)
    assert sol.nfe == n * 24 and sol.extras["rewards"].shape == (num, n)


def test_best_of_n_on_a_manifold_and_shape_errors():
    torus = FlatTorus(2)
    x0 = torus.random_base((20,), generator=torch.Generator().manual_seed(0))
    sol = best_of_n(lambda x, t: torch.full_like(x, 0.25), x0, lambda x: -x[:, 1], n=4, steps=3, manifold=torus)
    assert sol.x.shape == (5, 2) and ((sol.x >= 0) & (sol.x < 1)).all()
    with pytest.raises(ValueError, match="multiple of n"):
        best_of_n(lambda x, t: x, torch.zeros(7, 2), lambda x: x[:, 0], n=2, steps=1)


def test_single_particle_is_the_sde_sampler():
    # without resampling partners, particle sampling is exactly Euler-Maruyama with the same noise
    flow = eight_gaussians_flow()
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    diffusion = DiffusionSchedule(0.8, "sigma")
    p = particle_sampling(
        flow.velocity,
        x0,
        lambda x: x[:, 0],
        path=flow.path,
        n=1,
        steps=15,
        diffusion=diffusion,
        generator=torch.Generator().manual_seed(1),
    )
    s = solve_sde(
        flow.velocity, x0, path=flow.path, diffusion=diffusion, steps=15, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(p.x, s.x)
    assert p.nfe == s.nfe == 15 and p.extras["resamples"] == 0


def test_particle_sampling_improves_reward_at_equal_budget():
    # 8-Gaussian mixture; the reward favours one mode (1/8 of the mass). Budget: 80 NFE per output sample.
    flow = eight_gaussians_flow()
    target = flow.means[1].float()

    def reward(x):
        return -((x - target) ** 2).sum(-1)

    num, n, steps = 400, 8, 10
    x0 = torch.randn(num * n, 2, generator=torch.Generator().manual_seed(0))
    plain = solve_ode(flow.velocity, x0[:num], method="euler", steps=n * steps)
    bon = best_of_n(flow.velocity, x0, reward, n=n, steps=steps)
    flow.calls = 0
    smc = particle_sampling(
        flow.velocity,
        x0,
        reward,
        path=flow.path,
        n=n,
        steps=steps,
        diffusion=DiffusionSchedule(1.0, "sigma"),
        generator=torch.Generator().manual_seed(1),
    )
    assert flow.calls == steps  # one batched evaluation per step for all particles
    assert plain.nfe == bon.nfe == smc.nfe == 80
    r_plain, r_bon, r_smc = reward(plain.x).mean(), bon.extras["reward"].mean(), smc.extras["reward"].mean()
    assert r_bon > r_plain + 10
    assert r_smc > r_bon + 1.5, (r_plain, r_bon, r_smc)
    # reward-tilted, not collapsed onto a point: particles keep the mode's spread
    assert smc.x.std(0).min() > 0.05


def test_particle_sampling_errors():
    flow = eight_gaussians_flow()
    x0 = torch.randn(8, 2)
    with pytest.raises(TypeError, match="AffinePath"):
        particle_sampling(flow.velocity, x0, lambda x: x[:, 0], path=GeodesicPath(FlatTorus(2)), n=2, steps=2)
    with pytest.raises(ValueError, match="temperature"):
        particle_sampling(flow.velocity, x0, lambda x: x[:, 0], path=flow.path, n=2, steps=2, temperature=0.0)
