import numpy as np
import pytest
import torch
from torch import nn

from flowsci.domains.pde.ddpm import LinearBetaSchedule, WaveletDDPM
from flowsci.domains.pde.model import UNet
from flowsci.errors import InputError


def test_linear_beta_schedule_matches_the_closed_form():
    s = LinearBetaSchedule(1000, 1e-4, 0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_allclose(s.alpha_bar[1:].numpy(), np.cumprod(1 - betas), rtol=1e-12)
    assert s.alpha_bar[0] == 1 and 3e-5 < s.alpha_bar[-1] < 5e-5
    assert s.indices(4) == [1000, 750, 500, 250, 0] and s.indices(1) == [1000, 0]
    torch.testing.assert_close(s.time(torch.tensor([1000, 0])), torch.tensor([0.0, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        s.indices(0)
    with pytest.raises(ValueError):
        LinearBetaSchedule(10, 0.1, 0.01)


class _Oracle(nn.Module):
    """The exact noise prediction for a data distribution that is one point ``x_star``."""

    def __init__(self, x_star: torch.Tensor, schedule: LinearBetaSchedule) -> None:
        super().__init__()
        self.x_star, self.schedule = x_star, schedule
        self.config = {}

    def forward(self, x, t, cond=None):
        k = torch.round((1 - t.double()) * self.schedule.num_steps).long()
        ab = self.schedule.alpha_bar[k].to(x)[:, None, None, None]
        return (x - ab.sqrt() * self.x_star) / (1 - ab).sqrt()


def _ddpm(net=None, **kw):
    net = net or UNet(in_channels=8, cond_channels=6, width=8, mults=(1, 2), time_dim=16)
    return WaveletDDPM(net, wavelet="bior2.4", grid=32, steps=8, **kw)


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_ddim_recovers_the_data_point_with_the_exact_noise_prediction(small_burgers, eta, steps):
    u = torch.as_tensor(small_burgers.u.values).float()
    f = torch.as_tensor(small_burgers.f.values).float()
    probe = _ddpm()
    probe.fit_statistics(u, f)
    x_star = probe.encode(u[:1], f[:1])
    m = _ddpm(_Oracle(x_star, LinearBetaSchedule()), eta=eta, clip=None)
    m.band_mean, m.band_std = probe.band_mean, probe.band_std
    out, f_out, nfe, x = m.generate(u[:1, 0], None, steps=steps, seed=0)
    assert nfe == steps
    torch.testing.assert_close(x, x_star, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, 1:], u[:1, 1:], atol=2e-4, rtol=1e-4)


def test_ddpm_loss_is_zero_for_the_oracle_and_keeps_known_channels(small_burgers):
    u = torch.as_tensor(small_burgers.u.values[:1]).float()
    f = torch.as_tensor(small_burgers.f.values[:1]).float()
    probe = _ddpm()
    probe.fit_statistics(u, f)
    m = _ddpm(_Oracle(probe.encode(u, f), LinearBetaSchedule()), sim_prob=0.5)
    m.band_mean, m.band_std = probe.band_mean, probe.band_std
    loss, _ = m.compute_loss({"u": u, "f": f}, generator=torch.Generator().manual_seed(0))
    assert float(loss) < 1e-8
    sim = m.simulate(u[:, 0], f, steps=4)
    np.testing.assert_array_equal(sim.f.values, f.numpy())
    np.testing.assert_allclose(sim.u.values, sim.u_solver.values, atol=1e-3)


def test_ddpm_trains_samples_and_controls(small_burgers):
    u = torch.as_tensor(small_burgers.u.values).float()
    f = torch.as_tensor(small_burgers.f.values).float()
    m = _ddpm(loss_weight="std")
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss, _ = m.compute_loss({"u": u, "f": f}, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    a = m.simulate(u[:, 0], f, steps=3, seed=1)
    b = m.simulate(u[:, 0], f, steps=3, seed=1)
    np.testing.assert_array_equal(a.u.values, b.u.values)
    ctl = m.control(u[:2, 0], u[:2, -1], steps=3, guidance=5.0, objective="solver")
    assert np.isfinite(ctl.J_solver.values).all() and ctl.attrs["nfe"] == 3
    with pytest.raises(InputError, match="solver"):
        m.simulate(u[:, 0], f, steps=3, solver="euler")
