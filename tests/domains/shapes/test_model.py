import pytest
import torch

from flowsci.domains.shapes.model import SetTransformer


def _randomised(net):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return net.eval()


def test_permuting_rows_permutes_output_exactly():
    net = _randomised(SetTransformer(dim=31, width=32, depth=2, heads=4, num_classes=3))
    x = torch.randn(2, 20, 31)
    t = torch.tensor([0.3, 0.8])
    y = torch.tensor([0, 2])
    perm = torch.randperm(20)
    out = net(x, t, y=y)
    torch.testing.assert_close(net(x[:, perm], t, y=y), out[:, perm], atol=1e-5, rtol=1e-5)


def test_positional_variant_is_not_permutation_equivariant():
    net = _randomised(SetTransformer(dim=8, width=16, depth=1, heads=2, num_positions=6))
    x = torch.randn(1, 6, 8)
    perm = torch.tensor([1, 0, 2, 3, 4, 5])
    assert not torch.allclose(net(x[:, perm], torch.tensor([0.5])), net(x, torch.tensor([0.5]))[:, perm], atol=1e-4)


def test_zero_init_output_and_conditioning_effect():
    net = SetTransformer(dim=5, width=16, depth=1, heads=2, num_classes=2)
    x = torch.randn(3, 4, 5)
    assert torch.count_nonzero(net(x, torch.rand(3))) == 0  # adaLN-Zero: starts at the zero velocity
    net = _randomised(net)
    t = torch.full((3,), 0.5)
    a = net(x, t, y=torch.zeros(3, dtype=torch.long))
    b = net(x, t, y=torch.ones(3, dtype=torch.long))
    null = net(x, t, y=None)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(null, net(x, t, y=torch.full((3,), 2)))  # missing label = null label


def test_config_rebuilds_the_network():
    net = SetTransformer(dim=7, width=8, depth=1, heads=2, num_classes=4)
    twin = SetTransformer(**net.config)
    assert sum(p.numel() for p in twin.parameters()) == sum(p.numel() for p in net.parameters())


def test_scalar_time_and_bad_heads():
    net = _randomised(SetTransformer(dim=4, width=8, depth=1, heads=2))
    assert net(torch.randn(2, 3, 4), torch.tensor(0.5)).shape == (2, 3, 4)
    with pytest.raises(ValueError):
        SetTransformer(width=10, heads=4)
