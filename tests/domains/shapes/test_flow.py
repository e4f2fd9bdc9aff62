import itertools
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import trimesh

from flowsci.couplings import MinibatchOTCoupling
from flowsci.domains.shapes import GridSDFFlow, MosaicFlow, PointCloudFlow, SetTransformer, ShapesDataModule
from flowsci.domains.shapes.flow import patchify, unpatchify
from flowsci.errors import InputError
from flowsci.guidance import ConditionDropout
from flowsci.module import QUIET_TRAINER, FlowMatching


def _dm(tmp_path, **kw):
    args = dict(n=16, k=3, classes=["torus", "chair"], train_per_class=3, val_per_class=1, batch_size=3, workers=1)
    args.update(kw)
    return ShapesDataModule(cache_dir=str(tmp_path / "cache"), progress=False, **args)


def _model(cls=MosaicFlow, dim=31, num_classes=10, **kw):
    net = SetTransformer(dim=dim, width=32, depth=1, heads=2, num_classes=num_classes, **kw.pop("net_kw", {}))
    drop = ConditionDropout(0.2, keys=["y"], null_label=num_classes) if num_classes else None
    return cls(net, cond_dropout=drop, resolution=24, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3), **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flow")
    dm = _dm(tmp)
    model = _model()
    pl.seed_everything(0)
    trainer = pl.Trainer(max_steps=15, accelerator="cpu", **QUIET_TRAINER)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    return model, dm, ckpt


def test_training_takes_statistics_and_lowers_loss(tmp_path):
    dm = _dm(tmp_path)
    model = _model()
    dm.setup("fit")
    model.set_statistics(*dm.statistics())
    batch = next(iter(dm.train_dataloader()))
    gen = torch.Generator().manual_seed(0)
    before = model.compute_loss(batch, generator=gen)[0].item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = model.compute_loss(batch)[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))[0].item()
    assert after < before


def test_geometry_columns_are_standardised_to_geometry_scale(tmp_path):
    dm = _dm(tmp_path)
    dm.setup("fit")
    mats = torch.as_tensor(dm.train["matrices"]).reshape(-1, 31).double()
    for scale in (1.0, 3.0):
        model = _model(geometry_scale=scale)
        model.set_statistics(*dm.statistics())
        x = (mats - model.x_mean.double()) / model.x_std.double()
        np.testing.assert_allclose(x[:, :4].std(0).numpy(), scale, rtol=1e-4)  # centres and half-widths
        assert x[:, 4:].std().item() == pytest.approx(1.0, rel=1e-4)  # the k^3 values share one scale
        np.testing.assert_allclose((x * model.x_std.double() + model.x_mean.double()).numpy(), mats.numpy(), atol=1e-5)
    with pytest.raises(InputError, match="geometry_scale"):
        _model(geometry_scale=0.0)


def test_classwise_ot_pairs_mosaics_within_their_class_before_label_dropout(tmp_path):
    """``MosaicFlow(coupling=MinibatchOTCoupling(group_key="y"))``: the coupling gets the batch's class labels even
    when label dropout nulls all of them (dropout comes after the pairing); every mosaic keeps a noise draw of its
    own class, and the paired squared distance is minimal within each class."""
    seen = {}

    class Recording(MinibatchOTCoupling):
        def __call__(self, x0, x1, manifold=None, groups=None):
            out = super().__call__(x0, x1, manifold, groups)
            seen.update(x0=x0, x1=x1, groups=groups, paired=out[0])
            return out

    dm = _dm(tmp_path, classes=["torus", "chair", "cylinder"], train_per_class=4, batch_size=12)
    dm.setup("fit")
    model = _model(coupling=Recording(group_key="y"))
    model.cond_dropout = ConditionDropout(1.0, keys=["y"], null_label=10)  # every label dropped
    model.set_statistics(*dm.statistics())
    batch = next(iter(dm.train_dataloader()))
    loss, _ = model.compute_loss(batch, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    labels = batch["y"]
    assert torch.equal(seen["groups"], labels) and len(labels.unique()) == 3
    x0, x1, paired = seen["x0"], seen["x1"], seen["paired"]
    torch.testing.assert_close(x1, (batch["x1"] - model.x_mean) / model.x_std)  # pairs in standardised units
    src = [int(torch.nonzero((x0 == row).all(dim=-1).all(dim=-1)).item()) for row in paired]
    assert sorted(src) == list(range(len(labels)))  # a permutation of the drawn noise
    for c in labels.unique():
        idx = torch.nonzero(labels == c).flatten().tolist()
        assert {src[i] for i in idx} == set(idx)  # noise stays in its class
        cost = torch.cdist(x0[idx].flatten(1).double(), x1[idx].flatten(1).double()) ** 2  # [noise, data]
        pos = {g: a for a, g in enumerate(idx)}
        got = sum(cost[pos[src[i]], j].item() for j, i in enumerate(idx))
        best = min(sum(cost[p[j], j].item() for j in range(len(idx))) for p in itertools.permutations(range(len(idx))))
        assert got == pytest.approx(best, rel=1e-9)


def test_sample_returns_meshes_labels_and_counts_cfg_nfe(trained):
    model, _, _ = trained
    assert bool(model.stats_ready) and model.trained_classes == [4, 8]
    sol = model.sample(2, steps=3, seed=1, class_label="chair", guidance=2.0)
    assert sol.labels == [8, 8] and sol.nfe == 6 and sol.seed == 1
    assert all(isinstance(m, trimesh.Trimesh) for m in sol.meshes)
    assert len(sol.mosaics) == 2 and sol.x.shape == (2, 16, 31)
    assert set(sol.timings) == {"sample_s", "mesh_s"}
    default = model.sample(4, steps=2, seed=0, decode=False)
    assert default.labels == [4, 8, 4, 8]  # round-robin over the trained classes
    assert default.meshes == []


def test_cfg_scale_one_and_zero_identities(trained):
    model, _, _ = trained
    y = torch.tensor([8, 8])
    null = torch.tensor([10, 10])
    for w, labels in ((1.0, y), (0.0, null)):
        got = model.sample(2, steps=3, seed=5, class_label="chair", guidance=w, decode=False)
        ref = FlowMatching.sample(model, 2, steps=3, cond={"y": labels}, seed=5)
        torch.testing.assert_close(got.x, ref.x * model.x_std + model.x_mean)
        assert got.nfe == 3


def test_checkpoint_round_trip_samples_identically(trained):
    model, _, ckpt = trained
    loaded = MosaicFlow.from_checkpoint(ckpt)
    assert loaded.class_names == model.class_names and loaded.trained_classes == [4, 8]
    a = model.sample(2, steps=2, seed=3, class_label="torus", decode=False)
    b = loaded.sample(2, steps=2, seed=3, class_label="torus", decode=False)
    torch.testing.assert_close(a.x, b.x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"class_label": "spaceship"}, "class_label"),
        ({"class_label": 12}, "class_label"),
        ({"class_label": ["chair"]}, "class_label"),
        ({"guidance": float("nan")}, "guidance"),
        ({"steps": 0}, "steps"),
        ({"solver": "leapfrog"}, "solver"),
    ],
)
def test_sample_rejects_bad_arguments(trained, kwargs, match):
    model, _, _ = trained
    with pytest.raises(InputError, match=match):
        model.sample(2, **kwargs)


def test_unconditional_model_rejects_labels_and_guidance():
    model = _model(num_classes=0)
    model.data_shape = [8, 31]
    with pytest.raises(InputError, match="unconditional"):
        model.sample(1, class_label="chair")
    with pytest.raises(InputError, match="guidance"):
        model.sample(1, guidance=2.0, decode=False)


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_write_samples_meshes_json_and_montage(trained, tmp_path, fmt):
    model, _, _ = trained
    model.mesh_format = fmt
    sol = model.sample(2, steps=2, seed=0)
    files = model.write_samples(sol, tmp_path)
    names = {f.name for f in files}
    assert {"samples.json", "montage.png", "mosaics.npz"} <= names
    meta = json.loads((tmp_path / "samples.json").read_text())
    assert meta["nfe"] == 2 and len(meta["samples"]) == 2
    for rec in meta["samples"]:
        if not rec["empty"]:
            assert rec["file"].endswith(fmt)
            assert len(trimesh.load(tmp_path / rec["file"], force="mesh").faces) > 0
    assert (tmp_path / "montage.png").read_bytes()[:4] == b"\x89PNG"
    model.mesh_format = "obj"


def test_patchify_round_trip():
    g = torch.randn(2, 8, 8, 8)
    tokens = patchify(g, 4)
    assert tokens.shape == (2, 8, 64)
    torch.testing.assert_close(unpatchify(tokens, 8, 4), g)
    torch.testing.assert_close(tokens[0, 0], g[0, :4, :4, :4].reshape(-1))


def test_baselines_sample_native_objects():
    grid = _model(GridSDFFlow, dim=64, grid=8, patch=4, net_kw={"num_positions": 8})
    grid.data_shape = [8, 64]
    sol = grid.sample(2, steps=2, seed=0)
    assert len(sol.meshes) == 2 and sol.mosaics is None
    pts = _model(PointCloudFlow, dim=3)
    pts.data_shape = [32, 3]
    sol = pts.sample(2, steps=2, seed=0)
    assert type(sol.meshes[0]).__name__ == "PointCloud" and np.asarray(sol.meshes[0].vertices).shape == (32, 3)
