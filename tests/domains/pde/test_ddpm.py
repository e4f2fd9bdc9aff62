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
    """The exact prediction (``prediction``: noise, clean sample or v) for data that is one point ``x_star``;
    ``error`` is added to every output (a fixed network error in the units of its target).
    """

    def __init__(self, x_star, schedule, prediction="eps", error=0.0) -> None:
        super().__init__()
        self.x_star, self.schedule, self.prediction, self.error = x_star, schedule, prediction, error
        self.config = {}

    def forward(self, x, t, cond=None):
        k = torch.round((1 - t.double()) * self.schedule.num_steps).long()
        ab = self.schedule.alpha_bar[k].to(x)[:, None, None, None]
        eps = (x - ab.sqrt() * self.x_star) / (1 - ab).sqrt()
        out = {"eps": eps, "x0": self.x_star.expand_as(x), "v": ab.sqrt() * eps - (1 - ab).sqrt() * self.x_star}
        return out[self.prediction] + self.error


def _ddpm(net=None, **kw):
    net = net or UNet(in_channels=8, cond_channels=6, width=8, mults=(1, 2), time_dim=16)
    return WaveletDDPM(net, wavelet="bior2.4", grid=32, steps=8, **kw)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_ddim_recovers_the_data_point_with_the_exact_prediction(small_burgers, eta, steps, prediction):
    u = torch.as_tensor(small_burgers.u.values).float()
    f = torch.as_tensor(small_burgers.f.values).float()
    probe = _ddpm()
    probe.fit_statistics(u, f)
    x_star = probe.encode(u[:1], f[:1])
    m = _ddpm(_Oracle(x_star, LinearBetaSchedule(), prediction), eta=eta, prediction=prediction, clip=None)
    m.band_mean, m.band_std = probe.band_mean, probe.band_std
    out, f_out, nfe, x = m.generate(u[:1, 0], None, steps=steps, seed=0)
    assert nfe == steps
    torch.testing.assert_close(x, x_star, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(out[:, 1:], u[:1, 1:], atol=2e-4, rtol=1e-4)


def test_noise_prediction_amplifies_network_errors_and_v_prediction_does_not(small_burgers):
    """The failure of the eps-parameterised DDIM row: at k = K the clean estimate divides the noise prediction's
    error by sqrt(alpha_bar_K) ~ 0.0064 (x157; with one DDIM step that estimate is the sample). With v (or x0)
    prediction the same error in the network's output moves the sample by at most the error itself; clipping to
    the training range bounds what is left of the eps error.
    """
    u = torch.as_tensor(small_burgers.u.values).float()
    f = torch.as_tensor(small_burgers.f.values).float()
    probe = _ddpm()
    probe.fit_statistics(u, f)
    x_star = probe.encode(u[:1], f[:1])
    err = 0.01
    dist = {}
    for prediction, clip in (("eps", None), ("eps", "data"), ("v", None), ("x0", None)):
        m = _ddpm(_Oracle(x_star, LinearBetaSchedule(), prediction, error=err), prediction=prediction, clip=clip)
        m.band_mean, m.band_std, m.data_range = probe.band_mean, probe.band_std, probe.data_range
        x = m.generate(u[:1, 0], None, steps=1, seed=0)[3]
        dist[prediction, clip] = float((x - x_star).abs().max())
    amplification = float((1 - m.schedule.alpha_bar[-1]) / m.schedule.alpha_bar[-1]) ** 0.5
    assert amplification > 150
    assert dist["eps", None] == pytest.approx(amplification * err, rel=1e-3)
    assert dist["v", None] <= err * (1 + 1e-4) and dist["x0", None] == pytest.approx(err, rel=1e-3)
    lo, hi = probe.data_range
    assert dist["eps", "data"] <= float((hi - lo).max())  # clipped: the error is bounded by the data range


def test_data_range_clip_and_its_checkpoint_state(small_burgers):
    u = torch.as_tensor(small_burgers.u.values).float()
    f = torch.as_tensor(small_burgers.f.values).float()
    m = _ddpm()
    m.fit_statistics(u, f)
    c = m.encode(u.double(), f.double())
    lo, hi = m.data_range
    torch.testing.assert_close(lo, c.amin(dim=(0, 2, 3)))
    torch.testing.assert_close(hi, c.amax(dim=(0, 2, 3)))
    wild = 100 * torch.randn(3, *m.data_shape, generator=torch.Generator().manual_seed(0))
    clipped = m._clip(wild)
    assert bool(
        (clipped >= lo[:, None, None].float() - 1e-6).all() and (clipped <= hi[:, None, None].float() + 1e-6).all()
    )
    inside = c[:2].float()
    torch.testing.assert_close(m._clip(inside), inside)  # training coefficients are left alone
    m2 = _ddpm()
    m2.load_state_dict(m.state_dict())
    torch.testing.assert_close(m2.data_range, m.data_range)
    torch.testing.assert_close(m2.band_std, m.band_std)
    bare = _ddpm()
    bare.band_mean, bare.band_std = m.band_mean, m.band_std
    with pytest.raises(RuntimeError, match="range"):
        bare._clip(wild)
    with pytest.raises(ValueError, match="prediction"):
        _ddpm(prediction="score")
    with pytest.raises(ValueError, match="clip"):
        _ddpm(clip="range")


def test_ddpm_loss_is_zero_for_the_oracle_and_keeps_known_channels(small_burgers):
    u = torch.as_tensor(small_burgers.u.values[:1]).float()
    f = torch.as_tensor(small_burgers.f.values[:1]).float()
    probe = _ddpm()
    probe.fit_statistics(u, f)
    m = _ddpm(_Oracle(probe.encode(u, f), LinearBetaSchedule(), "v"), sim_prob=0.5)
    m.data_range = probe.data_range
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


class _Linear(nn.Module):
    """A clean-sample predictor that depends on its input (``0.5 x + x_star``), so early steps matter."""

    def __init__(self, x_star) -> None:
        super().__init__()
        self.x_star, self.config = x_star, {}

    def forward(self, x, t, cond=None):
        return 0.5 * x + self.x_star


def test_guided_ddim_is_the_guided_euler_step_of_the_rectified_flow(small_burgers):
    """Deterministic DDIM = Euler of x_tau = (1 - tau) eps + tau x in the state x_k / (sqrt(ab) + sqrt(1 - ab)) at
    tau = sqrt(ab) / (sqrt(ab) + sqrt(1 - ab)); guidance lowers that velocity by c * grad J(x_hat), as for the flow."""
    from flowsci.guidance import ObjectiveGuidance

    u = torch.as_tensor(small_burgers.u.values).double()
    f = torch.as_tensor(small_burgers.f.values).double()
    probe = _ddpm()
    probe.fit_statistics(u, f)
    x_star = probe.encode(u[:2], f[:2])
    target = torch.randn(x_star.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scale, steps = 0.7, 4
    m = _ddpm(_Linear(x_star), prediction="x0", clip=None).double()
    guide = ObjectiveGuidance(lambda x, **_: 0.5 * ((x - target) ** 2).flatten(1).sum(1), scale=scale)
    x0 = torch.randn(x_star.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    known = torch.zeros_like(x0, dtype=torch.bool)
    out, nfe = m._integrate(x0, None, known, x0, steps, None, guide, False, None)
    assert nfe == steps
    x = x0
    ab_all = m.schedule.alpha_bar
    for k, k_next in zip(m.schedule.indices(steps)[:-1], m.schedule.indices(steps)[1:], strict=True):
        s, r, s2, r2 = ab_all[k].sqrt(), (1 - ab_all[k]).sqrt(), ab_all[k_next].sqrt(), (1 - ab_all[k_next]).sqrt()
        tau, tau2 = s / (s + r), s2 / (s2 + r2)
        x_tau = x / (s + r)
        x_hat = 0.5 * x + x_star
        v = (x_hat - x_tau) / (1 - tau) - scale * (x_hat - target)
        x = (x_tau + (tau2 - tau) * v) * (s2 + r2)
    torch.testing.assert_close(out, x, rtol=1e-9, atol=1e-9)
    unguided, _ = m._integrate(x0, None, known, x0, steps, None, None, False, None)
    assert float((out - target).norm()) < float((unguided - target).norm())
