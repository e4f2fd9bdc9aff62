"""CSPNet symmetry tests: rotations of the lattice, atom permutations, integer shifts of fractional coordinates."""

import pytest
import torch

from flowsci.domains.crystals.model import CSPNet, fully_connected_edges


def _random_batch(num_atoms, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = int(sum(num_atoms))
    types = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).double()
    frac = torch.rand(n, 3, generator=g, dtype=torch.float64)
    lattice = torch.randn(len(num_atoms), 3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3).double()
    t = torch.rand(len(num_atoms), generator=g, dtype=torch.float64)
    cond = torch.rand(n, 3, generator=g, dtype=torch.float64)
    return types, frac, lattice, t, torch.tensor(num_atoms), cond


def _net(cond_entropy=True, lattice_head="equivariant"):
    torch.manual_seed(0)
    return CSPNet(
        num_types=10,
        hidden_dim=32,
        num_layers=2,
        num_freqs=4,
        time_dim=16,
        cond_entropy=cond_entropy,
        lattice_head=lattice_head,
    ).double()


def test_edges_fully_connected_within_crystal():
    e = fully_connected_edges(torch.tensor([2, 3, 1]))
    assert e.shape[1] == 2 * 1 + 3 * 2 + 0
    pairs = set(map(tuple, e.t().tolist()))
    assert (0, 1) in pairs and (1, 0) in pairs and (2, 4) in pairs and (0, 2) not in pairs
    assert all(a != b for a, b in pairs)


@pytest.mark.parametrize("head", ["equivariant", "invariant"])
def test_rotation_invariance_and_lattice_equivariance(head):
    """With the core's assert_equivariant and e3nn's Haar-random rotations (several draws)."""
    o3 = pytest.importorskip("e3nn.o3")
    from flowsci.testing import assert_equivariant

    net = _net(lattice_head=head)
    types, frac, lat, t, n, cond = _random_batch([3, 5, 1])
    torch.manual_seed(1)
    for rot in o3.rand_matrix(4).double():
        rotate = lambda lattice, r=rot: lattice @ r.T  # noqa: E731  rotate every lattice vector
        same = lambda x: x  # noqa: E731
        for out, expected in ((0, same), (2, same), (1, rotate if head == "equivariant" else same)):
            assert_equivariant(
                lambda lattice, out=out: net(types, frac, lattice, t, n, cond)[out],
                [lat],
                [rotate],
                expected,
                atol=1e-6,  # e3nn draws the rotations in float32
            )


def test_permutation_equivariance():
    net = _net()
    types, frac, lat, t, n, cond = _random_batch([4, 3])
    c0, l0, y0 = net(types, frac, lat, t, n, cond)
    perm = torch.cat([torch.randperm(4, generator=torch.Generator().manual_seed(3)), 4 + torch.tensor([2, 0, 1])])
    c1, l1, y1 = net(types[perm], frac[perm], lat, t, n, cond[perm])
    torch.testing.assert_close(c1, c0[perm])
    torch.testing.assert_close(y1, y0[perm])
    torch.testing.assert_close(l1, l0)


def test_integer_shift_invariance():
    net = _net()
    types, frac, lat, t, n, cond = _random_batch([5, 2])
    c0, l0, y0 = net(types, frac, lat, t, n, cond)
    shift = torch.randint(-3, 4, frac.shape, generator=torch.Generator().manual_seed(5)).double()
    c1, l1, y1 = net(types, frac + shift, lat, t, n, cond)
    torch.testing.assert_close(c1, c0)
    torch.testing.assert_close(l1, l0)
    torch.testing.assert_close(y1, y0)


def test_outputs_depend_on_geometry_and_conditioning():
    net = _net()
    types, frac, lat, t, n, cond = _random_batch([4])
    c0, _, _ = net(types, frac, lat, t, n, cond)
    c1, _, _ = net(types, frac + 0.1 * torch.rand_like(frac), lat, t, n, cond)
    c2, _, _ = net(types, frac, lat, t, n, cond * 0.5)
    assert not torch.allclose(c0, c1) and not torch.allclose(c0, c2)
    ablate = _net(cond_entropy=False)
    out = ablate(types, frac, lat, t, n)  # time-only ablation needs no accuracy input
    assert out[0].shape == (4, 3)
    with pytest.raises(ValueError, match="coord_cond"):
        net(types, frac, lat, t, n)


def test_paper_config_size():
    net = CSPNet(num_types=100, config="paper")
    n_params = sum(p.numel() for p in net.parameters())
    assert 10e6 < n_params < 16e6  # ≈12 M parameters at 6 × 512 with 128 frequencies
