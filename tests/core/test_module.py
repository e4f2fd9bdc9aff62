import pytorch_lightning as pl
import torch

from flowsci.callbacks import EMA
from flowsci.couplings import MinibatchOTCoupling
from flowsci.data import Toy2DDataModule, sample_toy
from flowsci.module import FlowMatching
from flowsci.nets import MLP


def _trainer(tmp_path, steps, **kw):
    return pl.Trainer(
        max_steps=steps,
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **kw,
    )


def _swd(a, b, n_proj=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(2, n_proj, generator=g)
    proj = proj / proj.norm(dim=0)
    pa, pb = (a @ proj).sort(0).values, (b @ proj).sort(0).values
    return ((pa - pb) ** 2).mean().sqrt().item()


def test_training_lowers_loss_and_samples_match_data(tmp_path):
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = Toy2DDataModule("moons", num_train=4096, num_val=512, batch_size=256)
    model = FlowMatching(MLP(2, 128, 3), coupling=MinibatchOTCoupling())
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    gen = torch.Generator().manual_seed(0)
    before = model.compute_loss(batch, generator=gen)[0].item()
    _trainer(tmp_path, 400).fit(model, dm)
    after = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))[0].item()
    assert after < 0.5 * before
    x = model.sample(1000, steps=20, solver="midpoint", seed=1).x
    ref = sample_toy("moons", 1000, seed=99)
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(2))
    assert _swd(x, ref) < 0.5 * _swd(noise, ref)


def test_checkpoint_round_trip_keeps_ema_weights(tmp_path):
    pl.seed_everything(0)
    dm = Toy2DDataModule("8gaussians", num_train=1024, batch_size=128)
    model = FlowMatching(MLP(2, 32, 2))
    ema = EMA(decay=0.9)
    trainer = _trainer(tmp_path, 40, callbacks=[ema])
    trainer.fit(model, dm)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = FlowMatching.load_from_checkpoint(ckpt, net=MLP(2, 32, 2))
    # fit ends with the averaged weights swapped in; the checkpoint stores them as the model state
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    pl.seed_everything(0)  # the same run without EMA ends with different (raw) weights
    plain = FlowMatching(MLP(2, 32, 2))
    _trainer(tmp_path / "plain", 40).fit(plain, dm)
    assert any(not torch.allclose(plain.state_dict()[k], v) for k, v in model.state_dict().items())
    assert loaded.data_shape == [2]
    # resuming continues from the saved step with the same averaged weights
    resumed = FlowMatching(MLP(2, 32, 2))
    t2 = _trainer(tmp_path, 40, callbacks=[EMA(decay=0.9)])
    t2.fit(resumed, dm, ckpt_path=ckpt)
    assert t2.global_step == 40
    for k, v in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)


def test_sampling_is_seeded_and_reports_nfe():
    model = FlowMatching(MLP(2, 16, 1), data_shape=[2])
    a = model.sample(8, steps=5, solver="heun", seed=3)
    b = model.sample(8, steps=5, solver="heun", seed=3)
    assert torch.equal(a.x, b.x) and a.nfe == 10 and a.seed == 3


def test_x1_prediction_converts_to_velocity():
    net = MLP(2, 16, 1)
    model = FlowMatching(net, prediction="x1", data_shape=[2])
    x, t = torch.randn(5, 2), torch.full((5,), 0.3)
    expected = (net(x, t) - x) / (1 - t[:, None])  # CondOT: v = (x1_hat - x_t) / (1 - t)
    torch.testing.assert_close(model.velocity(x, t), expected)


def test_masked_loss_ignores_padding():
    torch.manual_seed(0)
    net = MLP(2, 16, 1)
    model = FlowMatching(net)
    x1 = torch.randn(4, 2)
    mask = torch.tensor([True, True, False, False])
    l1 = model.compute_loss({"x1": x1, "mask": mask}, generator=torch.Generator().manual_seed(0))[0]
    x1b = x1.clone()
    x1b[2:] = 1e6
    l2 = model.compute_loss({"x1": x1b, "mask": mask}, generator=torch.Generator().manual_seed(0))[0]
    torch.testing.assert_close(l1, l2)


def test_write_samples_npz_and_png(tmp_path):
    model = FlowMatching(MLP(2, 16, 1), data_shape=[2])
    sol = model.sample(64, steps=2, seed=0)
    files = model.write_samples(sol, tmp_path / "out")
    assert [f.name for f in files] == ["samples.npz", "samples.png"]
    assert files[1].read_bytes()[:4] == b"\x89PNG"
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left behind


def test_manifold_flow_on_frames_trains_and_samples_on_the_manifold(tmp_path):
    from flowsci.manifolds import SO3, Euclidean, Product, random_quaternion
    from flowsci.paths import GeodesicPath
    from flowsci.testing import assert_on_manifold

    class FrameNet(torch.nn.Module):  # points [B, N, 3+4] -> tangents [B, N, 3+3]
        def __init__(self):
            super().__init__()
            h = 128
            self.body = torch.nn.Sequential(
                torch.nn.Linear(8, h), torch.nn.SiLU(), torch.nn.Linear(h, h), torch.nn.SiLU(), torch.nn.Linear(h, 6)
            )

        def forward(self, x, t):
            return self.body(torch.cat([x, t[:, None, None].expand(*x.shape[:2], 1)], -1))

    manifold = Product([Euclidean(3), SO3()])
    g = torch.Generator().manual_seed(0)
    target_q = random_quaternion((1, 1), generator=g)
    data = torch.cat([torch.randn(512, 4, 3, generator=g) * 0.1 + 1.0, target_q.expand(512, 4, 4)], -1)
    model = FlowMatching(FrameNet(), path=GeodesicPath(manifold), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    before = model.compute_loss(data[:128], generator=torch.Generator().manual_seed(1))[0].item()
    _trainer(tmp_path, 600).fit(model, torch.utils.data.DataLoader(data, batch_size=64, shuffle=True))
    after = model.compute_loss(data[:128], generator=torch.Generator().manual_seed(1))[0].item()
    assert after < 0.5 * before
    sol = model.sample(32, steps=20, solver="midpoint", seed=0, return_trajectory=True)
    for x in sol.trajectory:
        assert_on_manifold(manifold, x, atol=1e-6)
    angle = SO3().dist(sol.x[..., 3:], target_q.expand(32, 4, 4))
    assert angle.median() < 0.3  # rotations concentrate on the data rotation (Haar median is ~2.3 rad)


def test_ema_checkpoint_keeps_extra_state_set_after_fit_start(tmp_path):
    class WithStats(FlowMatching):
        def __init__(self):
            super().__init__(MLP(2, 16, 1))
            self.scale = 0.0

        def on_fit_start(self):  # dataset statistics known only once fitting starts
            self.scale = 4.2

        def get_extra_state(self):
            return torch.tensor([self.scale], dtype=torch.float64)

        def set_extra_state(self, state):
            self.scale = float(state[0])

    model = WithStats()
    trainer = _trainer(tmp_path, 5, callbacks=[EMA(decay=0.9)])
    trainer.fit(model, Toy2DDataModule("moons", num_train=256, batch_size=64))
    trainer.save_checkpoint(tmp_path / "s.ckpt")
    state = torch.load(tmp_path / "s.ckpt", weights_only=False)["state_dict"]
    assert float(state["_extra_state"][0]) == 4.2


def test_python_built_module_round_trips_through_the_safe_loader(tmp_path):
    from flowsci.checkpoint import load_module, save_module
    from flowsci.module import FlowMatching
    from flowsci.nets import MLP

    torch.manual_seed(0)
    model = FlowMatching(MLP(dim=2, hidden=16, depth=2), data_shape=[2], sample_steps=3)
    path = save_module(model, tmp_path / "m.ckpt")
    back = load_module(path)
    assert isinstance(back, FlowMatching) and back.sample_steps == 3 and back.net.config == model.net.config
    torch.testing.assert_close(back.sample(4, seed=1).x, model.sample(4, seed=1).x)
