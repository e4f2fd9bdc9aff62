import numpy as np
import pytest
import torch
from scipy import stats

from flowsci.couplings import ImmiscibleCoupling, IndependentCoupling, MinibatchOTCoupling, pair_cost
from flowsci.timesteps import LogitNormalTime, UniformTime, UShapedTime


def _batch(seed=0, n=128):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g) * 0.5 + 3


def mean_cost(x0, x1):
    return ((x0 - x1) ** 2).sum(-1).mean().item()


def test_ot_lowers_pair_cost_and_keeps_data_order():
    x0, x1 = _batch()
    y0, y1 = MinibatchOTCoupling()(x0, x1)
    assert torch.equal(y1, x1)
    assert sorted(y0[:, 0].tolist()) == sorted(x0[:, 0].tolist())  # a permutation of the noise
    assert mean_cost(y0, y1) < 0.9 * mean_cost(*IndependentCoupling()(x0, x1))
    # optimality: equals the minimal assignment cost
    from scipy.optimize import linear_sum_assignment

    c = pair_cost(x0, x1).numpy()
    r, k = linear_sum_assignment(c)
    assert abs(c[r, k].mean() - mean_cost(y0, y1)) < 1e-4


def test_grouped_ot_pairs_within_groups_and_is_optimal_in_each():
    x0, x1 = _batch(2, 60)
    groups = torch.arange(60) % 3
    x0 = x0 + groups[:, None] * 10.0  # noise drawn from a per-group prior, as a class-conditional one is
    y0, y1 = MinibatchOTCoupling(group_key="y")(x0, x1, groups=groups)
    assert torch.equal(y1, x1)
    # each data point got noise of its own group, and each group's noise is a permutation of that group's draws
    torch.testing.assert_close(torch.div(y0[:, 0] + 5.0, 10.0, rounding_mode="floor"), groups.float(), atol=0, rtol=0)
    from scipy.optimize import linear_sum_assignment

    for g in range(3):
        idx = torch.nonzero(groups == g).flatten()
        assert sorted(y0[idx, 0].tolist()) == sorted(x0[idx, 0].tolist())
        c = pair_cost(x0[idx], x1[idx]).numpy()
        r, k = linear_sum_assignment(c)
        assert abs(c[r, k].mean() - mean_cost(y0[idx], x1[idx])) < 1e-4
    # one group is the plain minibatch OT
    same = torch.zeros(60, dtype=torch.long)
    torch.testing.assert_close(MinibatchOTCoupling("y")(x0, x1, groups=same)[0], MinibatchOTCoupling()(x0, x1)[0])
    with pytest.raises(ValueError, match="group labels"):
        MinibatchOTCoupling("y")(x0, x1, groups=groups[:10])


def test_flow_matching_passes_the_group_key_to_the_coupling():
    from flowsci.module import FlowMatching
    from flowsci.nets import MLP

    seen = {}

    class Spy(MinibatchOTCoupling):
        def __call__(self, x0, x1, manifold=None, groups=None):
            seen["groups"] = groups
            return super().__call__(x0, x1, manifold, groups)

    fm = FlowMatching(MLP(2, hidden=8, depth=1, num_classes=2), coupling=Spy(group_key="y"))
    y = torch.tensor([0, 1, 0, 1])
    fm.compute_loss((torch.randn(4, 2), y), generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen["groups"], y)
    with pytest.raises(KeyError, match="no 'y'"):
        fm.compute_loss(torch.randn(4, 2))


def test_immiscible_picks_nearest_candidate():
    x0, x1 = _batch(1, 64)
    cand = torch.randn(4 * 64, 2, generator=torch.Generator().manual_seed(5))
    y0, y1 = ImmiscibleCoupling(k=4)(cand, x1)
    assert mean_cost(y0, y1) < mean_cost(cand[:64], x1)
    d = ((cand.reshape(64, 4, 2) - x1[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(((y0 - x1) ** 2).sum(-1), d.min(1).values)
    with pytest.raises(ValueError, match="prior draws"):
        ImmiscibleCoupling(k=4)(x0, x1)


@pytest.mark.parametrize(
    "sampler",
    [UniformTime(), UniformTime(0.01, 0.99), LogitNormalTime(0.0, 1.0), LogitNormalTime(0.5, 0.7), UShapedTime(4.0)],
    ids=repr,
)
def test_time_sampler_matches_its_density(sampler):
    t = sampler.sample(20_000, generator=torch.Generator().manual_seed(0)).double()
    grid = torch.linspace(1e-6, 1 - 1e-6, 20_001, dtype=torch.float64)
    cdf = torch.cumulative_trapezoid(sampler.density(grid), grid)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), cdf])

    res = stats.kstest(t.numpy(), lambda x: np.interp(x, grid.numpy(), cdf.numpy()))
    assert res.pvalue > 1e-3, res
    assert t.min() >= 0 and t.max() <= 1


def test_time_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError):
        UniformTime(0.5, 0.2)
    with pytest.raises(ValueError):
        LogitNormalTime(std=0)


def test_ot_on_the_torus_uses_wrapped_distance():
    from flowsci.manifolds import FlatTorus

    x1 = torch.tensor([[0.02], [0.50]])
    x0 = torch.tensor([[0.52], [0.97]])  # Euclidean pairing keeps the order; on the circle 0.97 is next to 0.02
    y0, _ = MinibatchOTCoupling()(x0, x1)
    assert torch.equal(y0, x0)
    y0, _ = MinibatchOTCoupling()(x0, x1, manifold=FlatTorus(1))
    assert torch.equal(y0, x0.flip(0))


def test_ot_on_so3_identifies_antipodal_quaternions():
    from flowsci.manifolds import SO3, random_quaternion

    q1 = random_quaternion((6, 5), generator=torch.Generator().manual_seed(0))
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    q0 = -q1[perm]  # the same rotations, sign-flipped and shuffled
    y0, _ = MinibatchOTCoupling()(q0, q1, manifold=SO3())
    torch.testing.assert_close(y0, -q1)
    y0i, _ = ImmiscibleCoupling(k=1)(q0, q1, manifold=SO3())
    assert torch.equal(y0i, q0)
