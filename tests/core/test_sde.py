import pytest
import torch

from flowsci.manifolds import FlatTorus
from flowsci.nets import MLP
from flowsci.paths import AffinePath, CondOTPath, CosineScheduler, VPScheduler
from flowsci.paths.geodesic import GeodesicPath
from flowsci.solvers import DiffusionSchedule, score_to_velocity, solve_ode, solve_sde, velocity_to_score
from flowsci.testing.gmm import GaussianMixtureFlow, eight_gaussians_flow

torch.set_num_threads(1)

PATHS = {"condot": CondOTPath, "vp": lambda: AffinePath(VPScheduler()), "cosine": lambda: AffinePath(CosineScheduler())}


def test_reference_flow_matches_single_gaussian_closed_form():
    # CondOT from N(0, 1) to N(m, s^2): v = m + (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2) (x - t m)
    m, sd = 2.0, 0.5
    flow = GaussianMixtureFlow(torch.tensor([[m]]), sd)
    x = torch.linspace(-3, 3, 50, dtype=torch.float64)[:, None]
    for t_val in (0.0, 0.4, 0.95):
        t = torch.full((50,), t_val, dtype=torch.float64)
        var = (1 - t_val) ** 2 + t_val**2 * sd**2
        torch.testing.assert_close(flow.velocity(x, t), m + (t_val * sd**2 - (1 - t_val)) / var * (x - t_val * m))
        torch.testing.assert_close(flow.score(x, t), -(x - t_val * m) / var)


@pytest.mark.parametrize("name", list(PATHS))
def test_velocity_to_score_matches_exact_gmm_score(name):
    flow = eight_gaussians_flow()
    flow.path = PATHS[name]()
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(512, 2, generator=g, dtype=torch.float64)
    for t_val in (0.05, 0.3, 0.6, 0.9):
        t = torch.full((512,), t_val, dtype=torch.float64)
        v = flow.velocity(x, t)
        s = velocity_to_score(v, x, t, flow.path)
        torch.testing.assert_close(s, flow.score(x, t), atol=1e-8, rtol=1e-8)
        torch.testing.assert_close(score_to_velocity(s, x, t, flow.path), v, atol=1e-8, rtol=1e-8)


def test_condot_score_closed_form_and_prior_end():
    # CondOT: s = -(x - t v) / (1 - t); at t = 0 the score of N(0, I) is -x whatever v is.
    path = CondOTPath()
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    t = torch.rand(64, generator=g) * 0.9
    torch.testing.assert_close(velocity_to_score(v, x, t, path), -(x - t[:, None] * v) / (1 - t[:, None]))
    torch.testing.assert_close(velocity_to_score(v, x, torch.zeros(64), path), -x)


@pytest.mark.parametrize("diffusion", [0.0, DiffusionSchedule(0.0, "sigma"), DiffusionSchedule(0.0, "constant")])
def test_zero_noise_sde_equals_euler_ode_exactly(diffusion):
    torch.manual_seed(0)
    net = MLP(dim=2, hidden=32, depth=2)
    x0 = torch.randn(128, 2, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ode = solve_ode(net, x0, method="euler", steps=17, return_trajectory=True)
        sde = solve_sde(
            net,
            x0,
            path=CondOTPath(),
            diffusion=diffusion,
            steps=17,
            return_trajectory=True,
            generator=torch.Generator().manual_seed(3),
        )
    assert torch.equal(sde.x, ode.x)
    assert all(torch.equal(a, b) for a, b in zip(sde.trajectory, ode.trajectory, strict=True))
    assert sde.nfe == ode.nfe == 17


@pytest.mark.parametrize("kind,scale", [("sigma", 1.0), ("constant", 0.7), ("quadratic", 1.5)])
def test_stochastic_sampler_preserves_marginals(kind, scale):
    # 1-D Gaussian target N(2, 0.5^2): every diffusion level must end at the same law as the ODE.
    flow = GaussianMixtureFlow(torch.tensor([[2.0]]), 0.5)
    x0 = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sol = solve_sde(
        flow.velocity,
        x0,
        path=flow.path,
        diffusion=DiffusionSchedule(scale, kind),
        steps=400,
        generator=torch.Generator().manual_seed(5),
    )
    assert sol.nfe == 400
    assert abs(sol.x.mean().item() - 2.0) < 0.02
    assert abs(sol.x.std().item() - 0.5) < 0.02
    # the noise actually changed the samples relative to the ODE
    ode = solve_ode(flow.velocity, x0, method="euler", steps=400)
    assert (sol.x - ode.x).abs().mean() > 0.05


def test_sde_rejects_non_affine_path_and_bad_grid():
    flow = eight_gaussians_flow()
    x0 = torch.randn(4, 2)
    with pytest.raises(TypeError, match="AffinePath"):
        solve_sde(flow.velocity, x0, path=GeodesicPath(FlatTorus(2)), steps=4)
    with pytest.raises(ValueError, match="increasing"):
        solve_sde(flow.velocity, x0, path=CondOTPath(), time_grid=torch.tensor([0.0, 0.5, 0.4]))
    with pytest.raises(ValueError, match="kind"):
        DiffusionSchedule(1.0, "cubic")
    with pytest.raises(ValueError, match=">= 0"):
        DiffusionSchedule(-1.0)
