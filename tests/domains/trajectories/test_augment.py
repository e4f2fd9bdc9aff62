"""Speed / scale and time-reversal augmentation of GoalFlow's training windows."""

import numpy as np
import pytest
import torch

from flowsci.domains.trajectories import GoalFlow, GoalFlowNet, TrajectoryWindows
from flowsci.domains.trajectories.flow import reverse_windows, scale_windows
from flowsci.errors import InputError

KEYS = ("obs", "fut", "nbr_obs", "nbr_fut")


def _net() -> GoalFlowNet:
    return GoalFlowNet(d_model=32, num_layers=1, num_heads=2, scorer_d_model=32, time_dim=32)


def _world(w: TrajectoryWindows, f) -> TrajectoryWindows:
    """``w`` with every position mapped by ``f`` (a function of the batch dict)."""
    b = f({k: torch.as_tensor(getattr(w, k), dtype=torch.float64) for k in KEYS})
    arrays = {k: b[k].numpy().astype(np.float32) for k in KEYS}
    return TrajectoryWindows(**arrays, nbr_mask=w.nbr_mask, frame=w.frame, ped=w.ped, scene=w.scene)


def test_scale_windows_scales_about_the_last_observed_position(sample_windows):
    batch = sample_windows.tensors(slice(0, 16))
    factor = torch.linspace(0.5, 2.0, 16)
    out = scale_windows(batch, factor)
    o = batch["obs"][:, -1]
    torch.testing.assert_close(out["obs"][:, -1], o)  # the origin stays
    torch.testing.assert_close(out["fut"] - o[:, None], factor[:, None, None] * (batch["fut"] - o[:, None]))
    rel = batch["nbr_fut"] - o[:, None, None]
    torch.testing.assert_close(out["nbr_fut"] - o[:, None, None], factor[:, None, None, None] * rel)
    # per-step speeds scale by the factor; scaling back is the identity; other keys pass
    v0 = (batch["obs"][:, 1:] - batch["obs"][:, :-1]).norm(dim=-1)
    v1 = (out["obs"][:, 1:] - out["obs"][:, :-1]).norm(dim=-1)
    torch.testing.assert_close(v1, factor[:, None] * v0, atol=1e-5, rtol=1e-5)
    back = scale_windows(out, 1 / factor)
    for k in KEYS:
        torch.testing.assert_close(back[k], batch[k], atol=1e-5, rtol=0)
    assert out["nbr_mask"] is batch["nbr_mask"]


def test_reverse_windows_plays_the_window_backwards(sample_windows):
    batch = sample_windows.tensors(slice(0, 16))
    rows = torch.arange(16) % 2 == 0
    out = reverse_windows(batch, rows)
    full = torch.cat([batch["obs"], batch["fut"]], 1)
    rfull = torch.cat([out["obs"], out["fut"]], 1)
    torch.testing.assert_close(rfull[rows], full[rows].flip(1))
    torch.testing.assert_close(rfull[~rows], full[~rows])
    assert out["obs"].shape == batch["obs"].shape and out["fut"].shape == batch["fut"].shape
    # the new last observed position is the old 12th frame; neighbours are reversed with the agent
    torch.testing.assert_close(out["obs"][rows, -1], full[rows, 12])
    nfull = torch.cat([batch["nbr_obs"], batch["nbr_fut"]], 2)
    torch.testing.assert_close(torch.cat([out["nbr_obs"], out["nbr_fut"]], 2)[rows], nfull[rows].flip(2))
    twice = reverse_windows(out, rows)
    for k in KEYS:
        torch.testing.assert_close(twice[k], batch[k])


def test_scale_augmented_vocabulary_is_that_of_the_scaled_scene(sample_windows):
    """augment_scale=(c, c) clusters the endpoints of the scene scaled by c (k-means++ on the same seed), and
    keeps the position scale of the unscaled data."""
    w = sample_windows.strided(400)
    c = 1.6
    aug = GoalFlow(_net(), num_goals=12, augment_scale=(c, c))
    aug.fit_statistics(w)
    plain = GoalFlow(_net(), num_goals=12)
    plain.fit_statistics(w)
    big = GoalFlow(_net(), num_goals=12)
    big.fit_statistics(_world(w, lambda b: scale_windows(b, torch.full((len(w),), c, dtype=torch.float64))))
    torch.testing.assert_close(aug.goals, big.goals, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(aug.pos_scale, plain.pos_scale)
    assert float(aug.goals.norm(dim=-1).mean()) > 1.3 * float(plain.goals.norm(dim=-1).mean())


@pytest.mark.parametrize("reverse", [False, True])
def test_training_loss_sees_the_augmented_window(sample_windows, reverse):
    """In training, the loss on a batch equals the plain model's loss on the transformed batch (same weights, same
    random stream); in eval mode the window is left as is."""
    batch = sample_windows.tensors(slice(0, 32))
    c = 1.8
    aug = GoalFlow(_net(), num_goals=8, augment_scale=(c, c), augment_reverse=reverse)
    aug.fit_statistics(sample_windows)
    plain = GoalFlow(_net(), num_goals=8)
    plain.load_state_dict(aug.state_dict())
    aug.train(), plain.train()

    def expected() -> torch.Tensor:
        g = torch.Generator().manual_seed(3)
        b = batch
        if reverse:
            b = reverse_windows(b, torch.rand(32, generator=g) < 0.5)
        torch.rand(32, generator=g)  # the scale draw (constant factor here)
        b = scale_windows(b, torch.full((32,), c))
        return plain.compute_loss(b, generator=g)[0]

    got = aug.compute_loss(batch, generator=torch.Generator().manual_seed(3))[0]
    torch.testing.assert_close(got, expected())
    no_aug = plain.compute_loss(batch, generator=torch.Generator().manual_seed(3))[0]
    assert not torch.allclose(got, no_aug)
    aug.eval(), plain.eval()
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    torch.testing.assert_close(aug.compute_loss(batch, generator=g1)[0], plain.compute_loss(batch, generator=g2)[0])


def test_augment_scale_is_validated():
    with pytest.raises(ValueError, match="augment_scale"):
        GoalFlow(_net(), augment_scale=(1.5, 0.8))
    with pytest.raises(ValueError, match="augment_scale"):
        GoalFlow(_net(), augment_scale=(0.0, 1.0))


def _walkers(frames: int = 50) -> np.ndarray:
    """``frame ped x y`` rows of 4 walkers at 0.1 / 0.3 / 0.5 / 0.7 m per 0.4 s step, all present in every frame."""
    rows = []
    for p, v in enumerate((0.1, 0.3, 0.5, 0.7)):
        for k in range(frames):
            rows.append((10 * k, p + 1, v * k + 0.05 * np.sin(0.3 * k + p), 2.0 * p))
    return np.asarray(rows)


@pytest.fixture()
def walker_root(tmp_path):
    """A one-fold data folder: held-out scene ``a``, training scene ``b`` (train and val files of walkers)."""
    import json

    from flowsci.domains.trajectories.data import write_trajectories

    for name in ("a.txt", "b_train.txt", "b_val.txt"):
        write_trajectories(tmp_path / name, _walkers())
    folds = {"a": {"test": ["a.txt"], "train_scenes": ["b"]}, "_train_file_pattern": "{scene}_train.txt"}
    folds["_val_file_pattern"] = "{scene}_val.txt"
    (tmp_path / "folds.json").write_text(json.dumps(folds))
    return tmp_path


def test_time_stride_windows_skip_every_other_frame(walker_root):
    """time_stride=2 windows are the positions at every other annotated frame, from both phases."""
    from flowsci.domains.trajectories.data import load_fold

    rows = _walkers()
    pos = {(int(f), int(p)): (x, y) for f, p, x, y in rows}
    one = load_fold(walker_root, "a", "val")
    two = load_fold(walker_root, "a", "val", time_stride=2)
    assert one.frame_step == 10 and two.frame_step == 20
    # 4 walkers x (50 - 19) stride-1 windows; per phase 25 frames -> 6 windows of 20 frames, two phases
    assert len(one) == 4 * 31 and len(two) == 4 * 2 * 6
    assert {int(f // 10) % 2 for f in two.frame} == {0, 1}
    for i in range(len(two)):
        track = np.concatenate([two.obs[i], two.fut[i]])
        want = [pos[(int(two.frame[i]) + 20 * t, int(two.ped[i]))] for t in range(20)]
        np.testing.assert_allclose(track, want, atol=1e-4)  # 4 decimals in the file
    # per-step speeds double
    from flowsci.domains.trajectories.benchmark import observed_step

    for p, v in enumerate((0.1, 0.3, 0.5, 0.7)):
        np.testing.assert_allclose(observed_step(two.obs[two.ped == p + 1]), 2 * v, atol=0.1)
    with pytest.raises(InputError, match="time_stride"):
        load_fold(walker_root, "a", "val", time_stride=0)


def test_validation_protocol_sets(walker_root):
    from flowsci.domains.trajectories.benchmark import FoldData, observed_step

    data = FoldData(str(walker_root), ("a",), 16, None, 64)
    sets = data.validation("a", min_step=0.4, cap=50)
    assert sets["val"] is data.modules["a"].windows("val")
    # fast: only the 0.5 and 0.7 m/step walkers; shift (0.8 s steps): 0.6, 1.0 and 1.4 m/step, all 20 frames apart
    assert set(sets["fast"].ped.tolist()) == {3, 4} and set(sets["shift"].ped.tolist()) == {2, 3, 4}
    assert len(sets["fast"]) == 50 and len(sets["shift"]) == 36
    assert sets["fast"].frame_step == 10 and sets["shift"].frame_step == 20
    for name in ("fast", "shift"):
        assert observed_step(sets[name].obs).min() >= 0.4
    assert all(set(w.scene) == {"b"} for w in sets.values())  # the training scene's val file, never the held-out one
    obs = np.zeros((1, 8, 2))
    obs[0, 5:, 0] = [0.0, 0.5, 1.5]
    np.testing.assert_allclose(observed_step(obs), [0.75])
