import pytest
import torch

from flowsci.paths import (
    AffinePath,
    CondOTPath,
    CondOTScheduler,
    CosineScheduler,
    PolynomialScheduler,
    ShiftedScheduler,
    StochasticInterpolant,
    VPScheduler,
)
from flowsci.testing import assert_velocity_matches_finite_difference

SCHEDULERS = [CondOTScheduler(), VPScheduler(), CosineScheduler(), PolynomialScheduler(2.0), ShiftedScheduler(3.0)]


def _data(seed=0, shape=(16, 3)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 1
    t = torch.rand(shape[0], generator=g, dtype=torch.float64) * 0.9 + 0.05
    return x0, x1, t


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: type(s).__name__)
def test_target_is_time_derivative(scheduler):
    x0, x1, t = _data()
    assert_velocity_matches_finite_difference(AffinePath(scheduler), x0, x1, t, h=1e-5, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: type(s).__name__)
def test_scheduler_boundaries(scheduler):
    s = scheduler(torch.tensor([0.0, 1.0], dtype=torch.float64))
    # VP reaches alpha_0 = exp(-(beta_min + beta_max)/4) ~ 6.6e-3, not exactly 0 (Song et al., 2021)
    atol = 7e-3 if isinstance(scheduler, VPScheduler) else 1e-6
    torch.testing.assert_close(s.alpha_t, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=atol, rtol=0)
    torch.testing.assert_close(s.sigma_t, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=max(atol, 1e-5), rtol=0)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=lambda s: type(s).__name__)
def test_parametrisation_round_trips(scheduler):
    path = AffinePath(scheduler)
    x0, x1, t = _data(1)
    ps = path.sample(x0, x1, t)
    torch.testing.assert_close(path.x1_to_velocity(x1, ps.x_t, t), ps.dx_t)
    torch.testing.assert_close(path.velocity_to_x1(ps.dx_t, ps.x_t, t), x1)
    torch.testing.assert_close(path.epsilon_to_velocity(x0, ps.x_t, t), ps.dx_t)
    torch.testing.assert_close(path.velocity_to_epsilon(ps.dx_t, ps.x_t, t), x0)
    torch.testing.assert_close(path.x1_to_epsilon(x1, ps.x_t, t), x0)
    torch.testing.assert_close(path.epsilon_to_x1(x0, ps.x_t, t), x1)


def test_condot_closed_form():
    x0, x1, t = _data(2)
    ps = CondOTPath().sample(x0, x1, t)
    torch.testing.assert_close(ps.x_t, t[:, None] * x1 + (1 - t[:, None]) * x0)
    torch.testing.assert_close(ps.dx_t, x1 - x0)


def test_stochastic_interpolant_derivative_with_fixed_noise():
    x0, x1, t = _data(3)
    z = torch.randn_like(x1)
    si = StochasticInterpolant(gamma_scale=0.5)

    class Fixed(StochasticInterpolant):
        def sample(self, a, b, tt, z=z):
            return super().sample(a, b, tt, z=z)

    assert_velocity_matches_finite_difference(Fixed(gamma_scale=0.5), x0, x1, t, h=1e-5, atol=1e-5, rtol=1e-5)
    ps = si.sample(x0, x1, torch.tensor([0.5] * 16, dtype=torch.float64), z=z)
    base = CondOTPath().sample(x0, x1, torch.full((16,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(ps.x_t - base.x_t, 0.25 * z)  # gamma(1/2) = a * 1/2


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        CondOTPath().sample(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
