import pytest
import pytorch_lightning as pl
import torch

from flowsci.data import Toy2DDataModule, quadrant_label
from flowsci.guidance import ClassifierFreeGuidance, ConditionDropout, ObjectiveGuidance, predict_x1
from flowsci.manifolds import SO3, FlatTorus
from flowsci.module import FlowMatching
from flowsci.nets import MLP
from flowsci.paths import CondOTPath
from flowsci.paths.geodesic import GeodesicPath
from flowsci.solvers import solve_ode
from flowsci.testing.gmm import eight_gaussians_flow

torch.set_num_threads(1)


def _trainer(steps: int) -> pl.Trainer:
    return pl.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        devices=1,
    )


# ----------------------------------------------------------------------------- conditioning dropout
def test_condition_dropout_rate_and_null_values():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (20_000,), generator=g)
    vec = torch.randn(20_000, 3, generator=g) + 5
    mask = torch.ones(20_000, 7, dtype=torch.bool)
    drop = ConditionDropout(p=0.3, keys=["y", "vec"], null_label=4)
    out = drop({"y": y, "vec": vec, "mask": mask}, generator=torch.Generator().manual_seed(1))
    dropped = out["y"] == 4
    assert abs(dropped.float().mean().item() - 0.3) < 0.015
    # the same rows are dropped in every key; others are untouched; structural keys pass through
    assert torch.equal(out["vec"][dropped], torch.zeros_like(vec[dropped]))
    assert torch.equal(out["vec"][~dropped], vec[~dropped])
    assert torch.equal(out["y"][~dropped], y[~dropped])
    assert out["mask"] is mask
    assert ConditionDropout(p=0.0)({"y": y}) == {"y": y}
    assert torch.equal(ConditionDropout(p=1.0, null_label=4)({"y": y})["y"], torch.full_like(y, 4))


def test_condition_dropout_errors():
    with pytest.raises(ValueError, match="null_label"):
        ConditionDropout(p=0.5).blank({"y": torch.zeros(3, dtype=torch.long)})
    with pytest.raises(ValueError, match="0 <= p <= 1"):
        ConditionDropout(p=1.5)


def test_flowmatching_applies_cond_dropout_in_its_loss():
    # With p = 1 every label is nulled, so the loss equals the loss computed with null labels.
    torch.manual_seed(0)
    net = MLP(dim=2, hidden=16, depth=2, num_classes=4)
    fm = FlowMatching(net, cond_dropout=ConditionDropout(p=1.0, null_label=4))
    plain = FlowMatching(net)
    x = torch.randn(64, 2)
    y = torch.randint(0, 4, (64,))
    loss_drop, _ = fm.compute_loss((x, y), generator=torch.Generator().manual_seed(3))
    loss_null, _ = plain.compute_loss((x, torch.full_like(y, 4)), generator=torch.Generator().manual_seed(3))
    loss_cond, _ = plain.compute_loss((x, y), generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss_drop, loss_null)
    assert not torch.equal(loss_drop, loss_cond)


# ----------------------------------------------------------------------------- classifier-free guidance
def test_cfg_scale_zero_is_unconditional_and_one_is_conditional():
    torch.manual_seed(0)
    net = MLP(dim=2, hidden=32, depth=2, num_classes=4)
    fm = FlowMatching(net, data_shape=[2]).eval()
    y = torch.randint(0, 4, (256,), generator=torch.Generator().manual_seed(0))
    null = torch.full_like(y, 4)
    nuller = ConditionDropout(null_label=4)
    x = torch.randn(256, 2)
    t = torch.rand(256)
    with torch.no_grad():
        v_c, v_u = net(x, t, y=y), net(x, t, y=null)
        for w, expected in ((0.0, v_u), (1.0, v_c), (2.5, v_u + 2.5 * (v_c - v_u))):
            guided = ClassifierFreeGuidance(w, nuller).guide(fm.velocity, fm.path)
            torch.testing.assert_close(guided(x, t, y=y), expected, atol=1e-6, rtol=1e-6)
    # end to end through FlowMatching.sample: exact equality at w = 0 and w = 1
    s0 = fm.sample(256, steps=8, cond={"y": y}, seed=5, guidance=ClassifierFreeGuidance(0.0, nuller))
    su = fm.sample(256, steps=8, cond={"y": null}, seed=5)
    s1 = fm.sample(256, steps=8, cond={"y": y}, seed=5, guidance=ClassifierFreeGuidance(1.0, nuller))
    sc = fm.sample(256, steps=8, cond={"y": y}, seed=5)
    assert torch.equal(s0.x, su.x) and torch.equal(s1.x, sc.x)
    assert s0.nfe == su.nfe == 8


def test_cfg_with_vector_conditioning():
    # a vector condition is nulled to zeros: w = 0 gives the velocity at c = 0
    def velocity(x, t, c):
        return x * t[:, None] + c

    x, t, c = torch.randn(8, 2), torch.rand(8), torch.randn(8, 2)
    guided = ClassifierFreeGuidance(0.0, ConditionDropout(keys=["c"])).guide(velocity, CondOTPath())
    torch.testing.assert_close(guided(x, t, c=c), velocity(x, t, torch.zeros_like(c)))
    guided = ClassifierFreeGuidance(3.0, ConditionDropout(keys=["c"])).guide(velocity, CondOTPath())
    torch.testing.assert_close(guided(x, t, c=c), velocity(x, t, torch.zeros_like(c)) + 3 * c)


def test_cfg_trained_with_dropout_sharpens_class_adherence():
    pl.seed_everything(0, verbose=False)
    fm = FlowMatching(MLP(dim=2, hidden=64, depth=3, num_classes=4), cond_dropout=ConditionDropout(p=0.2, null_label=4))
    _trainer(400).fit(fm, datamodule=Toy2DDataModule("8gaussians", num_train=8192, batch_size=256, labels=True))
    fm.eval()
    y = torch.arange(1000) % 4
    nuller = ConditionDropout(null_label=4)
    acc = {}
    for w in (0.0, 1.0, 3.0):
        x = fm.sample(1000, steps=20, cond={"y": y}, seed=1, guidance=ClassifierFreeGuidance(w, nuller)).x
        acc[w] = (quadrant_label(x) == y).float().mean().item()
    assert acc[0.0] < 0.5  # unconditional: classes at their base rates
    assert acc[1.0] > acc[0.0] + 0.3
    assert acc[3.0] > acc[1.0] + 0.05  # guidance beyond the conditional model sharpens further


# ----------------------------------------------------------------------------- objective guidance
def test_predict_x1_closed_forms():
    g = torch.Generator().manual_seed(0)
    x, v, t = torch.rand(16, 2, generator=g), torch.randn(16, 2, generator=g) * 0.3, torch.rand(16, generator=g)
    torch.testing.assert_close(predict_x1(CondOTPath(), x, v, t), x + (1 - t[:, None]) * v)
    torus = FlatTorus(2)
    expected = torch.remainder(x + (1 - t[:, None]) * v, 1.0)
    torch.testing.assert_close(predict_x1(GeodesicPath(torus), x, v, t), expected)
    # a single-point data distribution: the exact velocity points exactly at it
    flow = eight_gaussians_flow(std=0.0, weights=torch.tensor([1.0] + [0.0] * 7))
    xx = torch.randn(16, 2, generator=g, dtype=torch.float64)
    tt = torch.full((16,), 0.4, dtype=torch.float64)
    torch.testing.assert_close(predict_x1(flow.path, xx, flow.velocity(xx, tt), tt), flow.means[:1].expand(16, 2))


def test_objective_guidance_lowers_objective_at_equal_nfe():
    flow = eight_gaussians_flow()
    target = flow.means[1].float()

    def objective(x):
        return ((x - target) ** 2).sum(-1)

    x0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    plain = solve_ode(flow.velocity, x0, method="euler", steps=30)
    results = {}
    for schedule in ("constant", "decreasing", "increasing"):
        guidance = ObjectiveGuidance(objective, scale=2.0, schedule=schedule, t_range=(0.0, 0.9))
        sol = solve_ode(guidance.guide(flow.velocity, flow.path), x0, method="euler", steps=30)
        assert sol.nfe == plain.nfe
        results[schedule] = objective(sol.x).mean().item()
    j_plain = objective(plain.x).mean().item()
    assert all(j < 0.5 * j_plain for j in results.values()), (j_plain, results)
    # scale 0 is exactly unguided
    zero = solve_ode(ObjectiveGuidance(objective, scale=0.0).guide(flow.velocity, flow.path), x0, steps=30)
    assert torch.equal(zero.x, plain.x)


def test_objective_guidance_does_not_backpropagate_through_the_network():
    torch.manual_seed(0)
    fm = FlowMatching(MLP(dim=2, hidden=32, depth=2), data_shape=[2]).eval()
    calls = []
    original = fm.net.forward

    def counting(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    fm.net.forward = counting
    guidance = ObjectiveGuidance(lambda x: x[:, 0], scale=1.0)
    unguided = fm.sample(64, steps=10, seed=0)
    n_plain = len(calls)
    guided = fm.sample(64, steps=10, seed=0, guidance=guidance)
    assert len(calls) - n_plain == n_plain == 10  # one network pass per step, as unguided
    assert not any(calls)  # the network never ran with autograd enabled
    assert all(p.grad is None for p in fm.parameters())
    assert guided.x[:, 0].mean() < unguided.x[:, 0].mean() - 0.5


def test_objective_guidance_shift_is_exact_for_a_state_independent_field():
    # v = c and J = x_0-coordinate: each step moves by -h along x; 10 steps of h = 0.1 -> exactly -1 in total
    c = torch.tensor([0.3, -0.2])
    guided = ObjectiveGuidance(lambda x: x[:, 0], scale=1.0).guide(lambda x, t: c.expand_as(x), CondOTPath())
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    sol = solve_ode(guided, x0, method="euler", steps=10)
    torch.testing.assert_close(sol.x, x0 + c - torch.tensor([1.0, 0.0]))


def test_objective_guidance_on_torus_and_errors():
    path = GeodesicPath(FlatTorus(2))
    guidance = ObjectiveGuidance(lambda x: ((x - 0.5) ** 2).sum(-1), scale=0.5)
    velocity = guidance.guide(lambda x, t: torch.zeros_like(x), path)
    x = torch.tensor([[0.2, 0.7]])
    # zero velocity: x1_hat = x, grad J = 2 (x - 0.5); guided velocity = -0.5 * grad
    torch.testing.assert_close(velocity(x, torch.tensor([0.3])), -0.5 * 2 * (x - 0.5))
    with pytest.raises(ValueError, match="point_dim"):
        guidance.guide(lambda x, t: x, GeodesicPath(SO3()))
    with pytest.raises(ValueError, match="schedule"):
        ObjectiveGuidance(lambda x: x.sum(-1), schedule="sometimes")
    with pytest.raises(ValueError, match="t_range"):
        ObjectiveGuidance(lambda x: x.sum(-1), t_range=(0.5, 0.2))
