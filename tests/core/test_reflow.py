import json
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from flowsci.data import Toy2DDataModule, sample_toy
from flowsci.distill import Distillation, distill, make_premetric, pseudo_huber, squared_l2
from flowsci.manifolds import SO3, FlatTorus, quaternion_multiply, rotvec_to_quaternion, wrap
from flowsci.metrics import sliced_wasserstein2
from flowsci.module import FlowMatching
from flowsci.nets import MLP
from flowsci.paths.geodesic import GeodesicPath
from flowsci.reflow import (
    ReflowDataModule,
    ReflowPairs,
    generate_pairs,
    module_straightness,
    rectify,
    straightness,
)

torch.set_num_threads(1)

QUIET = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "limit_val_batches": 0,
    "devices": 1,
}


# ----------------------------------------------------------------------------- straightness metric
def test_straightness_is_zero_for_constant_velocity_and_exact_for_rotation():
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = torch.tensor([1.5, -0.5], dtype=torch.float64)
    assert straightness(lambda x, t: c.expand_as(x), x0, steps=10).abs().max() < 1e-24
    # rotation field v = w J x: S = |x0|^2 (w^2 - 2 (1 - cos w)) for the exact flow (Euler is close at 2000 steps)
    w = 1.3
    rot = torch.tensor([[0.0, -w], [w, 0.0]], dtype=torch.float64)
    s = straightness(lambda x, t: x @ rot.T, x0, steps=2000)
    expected = (x0**2).sum(1) * (w**2 - 2 * (1 - math.cos(w)))
    torch.testing.assert_close(s, expected, rtol=2e-3, atol=1e-6)


def test_straightness_on_torus_uses_the_manifold():
    torus = FlatTorus(2)
    x0 = torus.random_base((32,), generator=torch.Generator().manual_seed(0))
    c = torch.tensor([0.37, -0.21])  # wraps around the unit cell: x1 - x0 would be wrong, log is right
    assert straightness(lambda x, t: c.expand_as(x), x0, steps=7, manifold=torus).max() < 1e-10
    s = straightness(lambda x, t: c.expand_as(x) * 2 * t[:, None], x0, steps=400, manifold=torus)
    # v = 2 t c: displacement c, S = int |c - 2 t c|^2 dt = |c|^2 / 3
    torch.testing.assert_close(s, torch.full((32,), float((c**2).sum() / 3)), rtol=1e-2, atol=1e-6)


# ----------------------------------------------------------------------------- pairs on disk
def test_pairs_round_trip_and_clear_errors(tmp_path):
    g = torch.Generator().manual_seed(0)
    pairs = ReflowPairs(
        torch.randn(10, 3, generator=g),
        torch.randn(10, 3, generator=g),
        {"y": torch.arange(10)},
        {"steps": 5, "solver": "rk4"},
    )
    path = pairs.save(tmp_path / "sub" / "pairs.npz")
    assert [p.name for p in path.parent.iterdir()] == ["pairs.npz"]  # no temp file left behind
    back = ReflowPairs.load(path)
    assert torch.equal(back.x0, pairs.x0) and torch.equal(back.x1, pairs.x1)
    assert torch.equal(back.cond["y"], pairs.cond["y"]) and back.meta == pairs.meta
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        ReflowPairs.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros(3))
    with pytest.raises(ValueError, match=r"bad\.npz.*lacks"):
        ReflowPairs.load(bad)
    with pytest.raises(ValueError, match="equal shapes"):
        ReflowPairs(torch.zeros(3, 2), torch.zeros(4, 2))
    batch = next(iter(ReflowDataModule(path, batch_size=4).train_dataloader()))
    assert set(batch) == {"x0", "x1", "y"} and batch["x0"].shape == (4, 3)


def test_batch_x0_replaces_prior_draw_in_the_loss():
    # FlowMatching.compute_loss must use the paired noise: a net that is exactly x1 - x0 has zero loss.
    class Straight(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shift = nn.Parameter(torch.tensor([2.0, -1.0]))

        def forward(self, x, t):
            return self.shift.expand_as(x)

    fm = FlowMatching(Straight())
    x0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    loss, _ = fm.compute_loss({"x1": x0 + torch.tensor([2.0, -1.0]), "x0": x0})
    assert loss.item() < 1e-12
    loss_random, _ = fm.compute_loss({"x1": x0 + torch.tensor([2.0, -1.0])})
    assert loss_random.item() > 0.5


# ----------------------------------------------------------------------------- premetrics
def test_premetrics_closed_forms():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    y = torch.zeros(2, 2)
    torch.testing.assert_close(squared_l2(x, y), torch.tensor([0.0, 25.0]))
    torch.testing.assert_close(pseudo_huber(torch.tensor([0.0, 25.0]), 1.0), torch.tensor([0.0, math.sqrt(26) - 1]))
    torch.testing.assert_close(
        make_premetric("pseudo_huber", huber_c=1.0)(x, y), torch.tensor([0.0, math.sqrt(26) - 1])
    )
    # default c = 0.00054 sqrt(d); far away pseudo-Huber ~ distance
    assert abs(make_premetric("pseudo_huber", dim=2)(x, y)[1].item() - 5.0) < 1e-3
    torus = FlatTorus(2)
    a, b = torch.tensor([[0.05, 0.5]]), torch.tensor([[0.95, 0.5]])
    torch.testing.assert_close(make_premetric("l2", manifold=torus)(a, b), torch.tensor([0.01]))  # wraps
    with pytest.raises(ValueError, match="premetric"):
        make_premetric("lpips")


def test_two_step_distillation_recovers_a_translation_coupling():
    # pairs x1 = x0 + d; a student with a free constant velocity c and K = 2 Euler steps maps x0 -> x0 + c,
    # so minimising the premetric drives c to d (gradients flow through both steps)
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Parameter(torch.zeros(2))

        def forward(self, x, t):
            return self.c.expand_as(x)

    pl.seed_everything(0, verbose=False)
    x0 = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    d = torch.tensor([1.5, -0.5])
    pairs = ReflowPairs(x0, x0 + d)
    student = distill(
        FlowMatching(Constant(), data_shape=[2]),
        pairs,
        steps=2,
        premetric="pseudo_huber",
        huber_c=0.1,
        lr=0.05,
        max_steps=200,
        batch_size=128,
    )
    torch.testing.assert_close(student.net.c.detach(), d, atol=2e-2, rtol=0)
    assert student.sample_steps == 2 and student.sample_solver == "euler"


# ----------------------------------------------------------------------------- end to end, 2-D toy
@pytest.fixture(scope="module")
def toy_teacher() -> FlowMatching:
    pl.seed_everything(0, verbose=False)
    teacher = FlowMatching(MLP(dim=2, hidden=64, depth=3), data_shape=[2])
    pl.Trainer(max_steps=500, **QUIET).fit(teacher, datamodule=Toy2DDataModule("moons", num_train=8192))
    return teacher.eval()


def test_reflow_straightens_and_improves_one_step_sampling(toy_teacher, tmp_path):
    pairs = generate_pairs(toy_teacher, 4096, steps=40, solver="midpoint", seed=1, batch_size=1500)
    assert len(pairs) == 4096 and pairs.meta["nfe_per_sample"] == 80
    # the pairs are the teacher's own ODE map of x0
    again = toy_teacher.sample(1500, steps=40, solver="midpoint", seed=1)
    torch.testing.assert_close(pairs.x1[:1500], again.x)
    pairs = ReflowPairs.load(pairs.save(tmp_path / "pairs.npz"))
    before = [p.detach().clone() for p in toy_teacher.parameters()]
    student = rectify(toy_teacher, pairs, max_steps=500, trainer_kwargs={"enable_progress_bar": False})
    assert all(torch.equal(a, b) for a, b in zip(before, toy_teacher.parameters(), strict=True))  # teacher intact
    s_teacher = module_straightness(toy_teacher, 1000, steps=50, seed=3)
    s_student = module_straightness(student, 1000, steps=50, seed=3)
    assert s_student < 0.3 * s_teacher, (s_teacher, s_student)
    ref = sample_toy("moons", 2000, seed=42)
    sw_teacher = sliced_wasserstein2(toy_teacher.sample(2000, steps=1, seed=4).x, ref)
    sw_student = sliced_wasserstein2(student.sample(2000, steps=1, seed=4).x, ref)
    assert sw_student < 0.5 * sw_teacher, (sw_teacher, sw_student)
    # one-step distillation on the same pairs reduces the one-step coupling error of the student
    x0, x1 = pairs.x0[:1000], pairs.x1[:1000]
    with torch.no_grad():
        err_before = squared_l2(Distillation(student, steps=1)(x0), x1).mean()
    distilled = distill(student, pairs, steps=1, premetric="pseudo_huber", lr=3e-4, max_steps=150)
    with torch.no_grad():
        err_after = squared_l2(Distillation(distilled, steps=1)(x0), x1).mean()
    assert err_after < err_before and distilled.sample_steps == 1


# ----------------------------------------------------------------------------- end to end, torus
class TorusNet(nn.Module):
    """Periodic MLP on the flat torus: features (cos 2 pi x, sin 2 pi x, t)."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(5, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 2)
        )

    def forward(self, x, t):
        a = 2 * math.pi * x
        return self.body(torch.cat([torch.cos(a), torch.sin(a), t[:, None].to(x)], dim=-1))


def test_reflow_on_the_torus_end_to_end(tmp_path):
    pl.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.1, 0.1], [0.6, 0.6]])
    data = wrap(centers[torch.randint(0, 2, (4096,), generator=g)] + 0.05 * torch.randn(4096, 2, generator=g))
    torus = FlatTorus(2)
    teacher = FlowMatching(TorusNet(), path=GeodesicPath(torus), data_shape=[2])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=256, shuffle=True)
    pl.Trainer(max_steps=300, **QUIET).fit(teacher, loader)
    teacher.eval()
    pairs = generate_pairs(teacher, 2048, steps=30, solver="rk4", seed=1)
    assert ((pairs.x0 >= 0) & (pairs.x0 < 1) & (pairs.x1 >= 0) & (pairs.x1 < 1)).all()
    pairs.save(tmp_path / "torus_pairs.npz")
    student = rectify(teacher, ReflowPairs.load(tmp_path / "torus_pairs.npz"), max_steps=300)
    s_teacher = module_straightness(teacher, 1000, steps=50, seed=3)
    s_student = module_straightness(student, 1000, steps=50, seed=3)
    assert s_student < 0.75 * s_teacher, (s_teacher, s_student)
    for steps in (1, 20):
        x = student.sample(500, steps=steps, seed=2).x
        assert ((x >= 0) & (x < 1)).all()
        # the student's samples sit at the data modes (geodesic distance to the nearest center; data: 0.06)
        d = torch.stack([torus.dist(x, c.expand_as(x)) for c in centers], 1).min(1).values
        assert d.median() < 0.12, (steps, d.median())


class QuaternionNet(nn.Module):
    """MLP from a unit quaternion (sign-symmetrised features q q^T) and t to a body angular velocity [3]."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(11, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 3)
        )
        self.register_buffer("iu", torch.triu_indices(4, 4), persistent=False)

    def forward(self, q, t):
        outer = (q[:, :, None] * q[:, None, :])[:, self.iu[0], self.iu[1]]  # invariant under q -> -q
        return self.body(torch.cat([outer, t[:, None].to(q)], dim=-1))


def test_reflow_and_distillation_on_so3_end_to_end():
    # points are unit quaternions [4], tangents body angular velocities [3]: point_dim != tangent_dim
    pl.seed_everything(0, verbose=False)
    g = torch.Generator().manual_seed(0)
    so3 = SO3()
    modes = rotvec_to_quaternion(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [2.0, 0.0, 0.0]]))
    k = torch.randint(0, 3, (4096,), generator=g)
    data = quaternion_multiply(modes[k], rotvec_to_quaternion(0.1 * torch.randn(4096, 3, generator=g)))
    teacher = FlowMatching(QuaternionNet(), path=GeodesicPath(so3), data_shape=[4])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=256, shuffle=True)
    pl.Trainer(max_steps=1500, **QUIET).fit(teacher, loader)
    teacher.eval()
    pairs = generate_pairs(teacher, 2048, steps=20, solver="midpoint", seed=1)
    assert pairs.x0.shape == pairs.x1.shape == (2048, 4)
    torch.testing.assert_close(pairs.x1.norm(dim=-1), torch.ones(2048))
    student = rectify(teacher, pairs, max_steps=300)
    s_teacher = module_straightness(teacher, 1000, steps=50, seed=3)
    s_student = module_straightness(student, 1000, steps=50, seed=3)
    assert s_student < 0.75 * s_teacher, (s_teacher, s_student)
    distilled = distill(student, pairs, steps=1, premetric="l2", lr=3e-4, max_steps=100)  # squared geodesic distance

    def median_angle_to_modes(model, steps):
        x = model.sample(500, steps=steps, seed=2).x
        torch.testing.assert_close(x.norm(dim=-1), torch.ones(500))
        return torch.stack([so3.dist(x, m.expand_as(x)) for m in modes], 1).min(1).values.median()

    # uniform rotations sit ~2.1 rad from the nearest mode; the data ~0.15 rad
    assert median_angle_to_modes(student, 20) < 0.5
    assert median_angle_to_modes(distilled, 1) < median_angle_to_modes(teacher, 1) - 0.05


# ----------------------------------------------------------------------------- CLI
def test_cli_reflow_writes_loadable_students(tmp_path, monkeypatch, capsys):
    from flowsci.checkpoint import load_module
    from flowsci.cli import main

    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            "toy2d/fm.yaml",
            "--trainer.max_steps=20",
            "--trainer.val_check_interval=20",
            "--trainer.enable_progress_bar=false",
            "--model.init_args.net.init_args.hidden=32",
            "--data.init_args.num_train=1024",
        ]
    )
    ckpt = next(tmp_path.glob("runs/**/last.ckpt"))
    out = tmp_path / "rf"
    main(
        [
            "reflow",
            "--ckpt",
            str(ckpt),
            "--pairs",
            "512",
            "--steps",
            "8",
            "--train-steps",
            "10",
            "--distill-steps",
            "5",
            "--eval-num",
            "128",
            "--out",
            str(out),
        ]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["pairs"] == 512 and metrics["teacher_nfe_per_pair"] == 8
    assert metrics["straightness_teacher"] > 0 and "straightness_distilled" in metrics
    assert len(ReflowPairs.load(out / "pairs.npz")) == 512
    for name in ("reflow.ckpt", "distilled.ckpt"):
        module = load_module(out / name)
        assert isinstance(module, FlowMatching) and module.sample(4, steps=1).x.shape == (4, 2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["reflow", "--pairs", "4"])
    assert exc.value.code == 2 and "--ckpt" in capsys.readouterr().err
    before = sorted(p.name for p in out.iterdir())
    for bad in (["--premetric", "nosuch", "--overwrite"], []):  # bad premetric: refused before training; used --out
        with pytest.raises(SystemExit) as exc:
            main(["reflow", "--ckpt", str(ckpt), "--out", str(out), *bad])
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--premetric" in err and "not empty" in err
    assert sorted(p.name for p in out.iterdir()) == before  # earlier outputs untouched
