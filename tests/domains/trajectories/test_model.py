"""GoalFlowNet: shapes, null goal, neighbour permutation invariance, cached scene tokens, 2-D embedding."""

import pytest
import torch

from flowsci.domains.trajectories.model import GoalFlowNet, sinusoidal_2d


def _inputs(b=5, m=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 12, 2, generator=g)
    t = torch.rand(b, generator=g)
    hist = torch.randn(b, 8, 2, generator=g)
    nbr = torch.randn(b, m, 8, 2, generator=g)
    mask = (torch.rand(b, m, generator=g) > 0.3).float()
    goal = torch.cat([torch.randn(b, 2, generator=g), torch.ones(b, 1)], -1)
    return x, t, dict(hist=hist, nbr=nbr, nbr_mask=mask, goal=goal)


@pytest.fixture
def net():
    torch.manual_seed(0)
    n = GoalFlowNet(d_model=32, num_layers=2, num_heads=2, scorer_d_model=32, time_dim=32)
    for p in n.out.parameters():  # the output layer starts at zero; make the test sensitive
        torch.nn.init.normal_(p, std=0.1)
    return n.eval()


def test_shapes_and_config(net):
    x, t, cond = _inputs()
    assert net(x, t, **cond).shape == x.shape
    s_dis, s_col = net.score_goals(cond["hist"], cond["nbr"], cond["nbr_mask"], torch.randn(7, 2))
    assert s_dis.shape == (5, 7) and s_col.shape == (5, 7)
    assert GoalFlowNet(**net.config).config == net.config


def test_null_goal_ignores_coordinates(net):
    x, t, cond = _inputs()
    a = dict(cond, goal=torch.tensor([[3.0, 1.0, 0.0]]).expand(5, 3))
    b = dict(cond, goal=torch.tensor([[-2.0, 5.0, 0.0]]).expand(5, 3))
    torch.testing.assert_close(net(x, t, **a), net(x, t, **b))
    assert not torch.allclose(net(x, t, **cond), net(x, t, **a))


def test_neighbour_permutation_invariance(net):
    x, t, cond = _inputs()
    perm = torch.tensor([2, 0, 3, 1])
    permuted = dict(cond, nbr=cond["nbr"][:, perm], nbr_mask=cond["nbr_mask"][:, perm])
    torch.testing.assert_close(net(x, t, **cond), net(x, t, **permuted), atol=1e-5, rtol=1e-5)


def test_masked_neighbours_do_not_matter(net):
    x, t, cond = _inputs()
    changed = cond["nbr"] + 10.0 * (cond["nbr_mask"] < 0.5)[..., None, None].float()
    torch.testing.assert_close(net(x, t, **cond), net(x, t, **dict(cond, nbr=changed)), atol=1e-5, rtol=1e-5)


def test_no_neighbours_is_defined(net):
    x, t, cond = _inputs()
    out = net(x, t, **dict(cond, nbr_mask=torch.zeros(5, 4)))
    assert torch.isfinite(out).all()


def test_precomputed_scene_matches(net):
    x, t, cond = _inputs()
    scene = net.encode(cond["hist"], cond["nbr"], cond["nbr_mask"])
    torch.testing.assert_close(net(x, t, **cond), net(x, t, scene=scene, goal=cond["goal"]))
    with pytest.raises(ValueError):
        net(x, t, goal=cond["goal"])


def test_sinusoidal_2d():
    e = sinusoidal_2d(torch.zeros(3, 2), 16)
    assert e.shape == (3, 16)
    torch.testing.assert_close(e[:, :4], torch.zeros(3, 4))  # sin(0) = 0
    torch.testing.assert_close(e[:, 4:8], torch.ones(3, 4))  # cos(0) = 1
    with pytest.raises(ValueError):
        sinusoidal_2d(torch.zeros(1, 2), 6)
