import pytest
import torch

from flowsci.domains.pde.model import UNet


@pytest.mark.parametrize("dims,shape", [(2, (8, 16)), (3, (4, 8, 8))])
def test_unet_shapes_and_conditioning(dims, shape):
    net = UNet(in_channels=3, cond_channels=2, width=8, mults=(1, 2), dims=dims, time_dim=16)
    x, c = torch.randn(2, 3, *shape), torch.randn(2, 2, *shape)
    out = net(x, torch.rand(2), cond=c)
    assert out.shape == x.shape
    assert torch.equal(net(x, torch.rand(2)), torch.zeros_like(x))  # zero-initialised output layer


def test_unet_config_rebuilds_identical_network():
    net = UNet(in_channels=4, cond_channels=1, width=8, mults=(1, 2, 2), num_res=2, time_dim=16)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    clone = UNet(**net.config)
    clone.load_state_dict(net.state_dict())
    x, c, t = torch.randn(1, 4, 8, 8), torch.randn(1, 1, 8, 8), torch.rand(1)
    torch.testing.assert_close(clone(x, t, c), net(x, t, c))


def test_unet_is_fully_convolutional_and_checks_divisibility():
    net = UNet(in_channels=2, cond_channels=0, width=8, mults=(1, 2, 4), time_dim=16)
    with torch.no_grad():
        net.out[-1].weight.normal_()
    assert net(torch.randn(1, 2, 16, 64), torch.rand(1)).shape == (1, 2, 16, 64)
    assert net(torch.randn(1, 2, 32, 128), torch.rand(1)).shape == (1, 2, 32, 128)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 2, 6, 8), torch.rand(1))


def test_fno_shapes_and_spectral_layer_keeps_low_modes():
    import math

    from flowsci.domains.pde.model import FNO2d, SpectralConv2d

    net = FNO2d(in_channels=2, out_channels=1, width=8, modes=(2, 4), layers=2)
    assert net(torch.randn(2, 2, 8, 16)).shape == (2, 1, 8, 16)
    layer = SpectralConv2d(1, (2, 4))
    x = torch.arange(16.0)
    high = torch.cos(2 * math.pi * 7 * x / 16)[None, None, None].expand(1, 1, 8, 16)  # x-mode 7 > 4 kept modes
    assert layer(high).abs().max() < 1e-5
    assert FNO2d(**net.config).config == net.config
