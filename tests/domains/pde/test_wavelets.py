import numpy as np
import pytest
import pywt
import torch

from flowsci.domains.pde.wavelets import WaveletTransform, analysis_matrix, band_names, synthesis_matrix
from flowsci.errors import InputError

WAVELETS = ["haar", "db2", "db4", "bior2.4", "sym4"]


@pytest.mark.parametrize("wavelet", WAVELETS)
def test_one_level_1d_matches_pywt_periodization(wavelet):
    x = np.random.default_rng(0).standard_normal((3, 64))
    y = WaveletTransform(wavelet, 1, ndim=1)(torch.as_tensor(x)[:, None]).numpy()
    ca, cd = pywt.dwt(x, wavelet, mode="periodization", axis=-1)
    np.testing.assert_allclose(y[:, 0], ca, atol=1e-12)
    np.testing.assert_allclose(y[:, 1], cd, atol=1e-12)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("ndim", [2, 3])
def test_one_level_nd_matches_pywt_dwtn(wavelet, ndim):
    shape = (2, 3, *([8] * (ndim - 1)), 16)
    x = np.random.default_rng(1).standard_normal(shape)
    y = WaveletTransform(wavelet, 1, ndim=ndim)(torch.as_tensor(x)).numpy()
    d = pywt.dwtn(x, wavelet, mode="periodization", axes=tuple(range(-ndim, 0)))
    keys = band_names(ndim, 1)
    ref = np.stack([d[k] for k in keys], axis=2).reshape(2, 3 * len(keys), *y.shape[2:])
    np.testing.assert_allclose(y, ref, atol=1e-12)


def test_packet_level_two_is_level_one_twice():
    x = torch.randn(2, 2, 16, 32, dtype=torch.float64)
    one, two = WaveletTransform("db2", 1), WaveletTransform("db2", 2)
    np.testing.assert_allclose(two(x).numpy(), one(one(x)).numpy(), atol=1e-13)
    assert two(x).shape == (2, 2 * 16, 4, 8)
    assert len(band_names(2, 2)) == 16 and band_names(2, 2)[1] == "aa/ad"


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("level", [1, 2, 3])
def test_round_trip_float64_and_float32(wavelet, level):
    t = WaveletTransform(wavelet, level)
    x = torch.randn(2, 2, 32, 64, dtype=torch.float64)
    tol = 1e-10 if wavelet == "sym4" else 1e-12  # PyWavelets' sym4 taps are accurate to ~1e-12 only
    assert (t.inverse(t(x)) - x).abs().max() < tol
    xf = x.float()
    rel = (t.inverse(t(xf)) - xf).norm() / xf.norm()
    assert rel < 1e-6


def test_orthogonal_wavelet_preserves_energy_and_inverse_is_adjoint():
    a = analysis_matrix("db4", 32)
    np.testing.assert_allclose(a @ a.T, np.eye(32), atol=1e-12)
    np.testing.assert_allclose(synthesis_matrix("db4", 32), a.T, atol=1e-12)
    t = WaveletTransform("haar", 2)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    assert torch.allclose(t(x).norm(), x.norm())


def test_biorthogonal_synthesis_is_inverse():
    a, s = analysis_matrix("bior2.4", 64), synthesis_matrix("bior2.4", 64)
    np.testing.assert_allclose(s @ a, np.eye(64), atol=1e-12)


def test_gradient_flows_through_inverse():
    t = WaveletTransform("bior2.4", 1)
    c = torch.randn(1, 4, 8, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 16, 32, dtype=torch.float64)
    (t.inverse(c) * w).sum().backward()
    # d/dc <S c, w> = S^T w, i.e. the transform by the transposed synthesis matrices
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda z: t.inverse(z), (c[:, :, :2, :4].detach().requires_grad_(),))


def test_identity_transform_for_physical_space():
    t = WaveletTransform("none", 1)
    x = torch.randn(2, 2, 6, 10)
    assert t.bands == 1 and torch.equal(t(x), x) and torch.equal(t.inverse(x), x)


def test_bad_inputs():
    with pytest.raises(InputError, match="wavelet"):
        WaveletTransform("nope")
    with pytest.raises(InputError, match="levels"):
        WaveletTransform("haar", 0)
    with pytest.raises(InputError, match="multiples of 2"):
        WaveletTransform("haar", 2)(torch.randn(1, 1, 12, 30))
