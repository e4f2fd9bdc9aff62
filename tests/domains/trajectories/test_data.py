"""ETH/UCY reader, writer, window rule and data module."""

import json

import numpy as np
import pytest
import torch

from flowsci.domains.trajectories.data import (
    TrajectoryDataModule,
    TrajectoryWindows,
    find_root,
    load_fold,
    make_windows,
    read_trajectories,
    synthetic_scene,
    write_trajectories,
)
from flowsci.errors import InputError

from .conftest import ETH_UCY


def _track_rows(ped, start_frame, n, x0=0.0, y0=0.0, vx=1.0, step=10):
    return [(start_frame + k * step, ped, x0 + vx * k, y0) for k in range(n)]


def test_round_trip(tmp_path):
    rows = synthetic_scene(num_peds=5, seed=3)
    path = write_trajectories(tmp_path / "scene.txt", rows)
    back = read_trajectories(path)
    np.testing.assert_allclose(back, rows, atol=1e-4)
    assert path.read_text().splitlines()[0].count("\t") == 3


def test_synthetic_is_deterministic():
    np.testing.assert_array_equal(synthetic_scene(seed=1), synthetic_scene(seed=1))


@pytest.mark.parametrize(
    "text,problem",
    [
        ("", "empty"),
        ("10 1 0.0\n", "4 columns"),
        ("10 1 0.0 1.0 5\n", "4 columns"),
        ("10 1 abc 1.0\n", "not a number"),
        ("10 1 nan 1.0\n", "non-finite"),
        ("10 1 inf 1.0\n", "non-finite"),
        ("10.5 1 0.0 1.0\n", "whole numbers"),
        ("-10 1 0.0 1.0\n", "whole numbers"),
        ("10 1 1e9 1.0\n", "absurd"),
        ("10 1 0.0 1.0\n10 1 0.5 1.0\n", "duplicate"),
        ("# only a comment\n\n", "no data rows"),
    ],
)
def test_reader_rejects_bad_files(tmp_path, text, problem):
    p = tmp_path / "bad.txt"
    p.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        read_trajectories(p)
    assert str(p) in str(err.value)


def test_reader_names_the_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("10 1 0 0\n20 1 0 0\n20 2 x 0\n")
    with pytest.raises(InputError, match=r"bad.txt:3"):
        read_trajectories(p)


def test_reader_missing_and_binary(tmp_path):
    with pytest.raises(InputError, match="no such"):
        read_trajectories(tmp_path / "nope.txt")
    p = tmp_path / "bin.txt"
    p.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(InputError):
        read_trajectories(p)


def test_window_rule_counts_and_neighbours():
    rows = np.asarray(
        _track_rows(1, 0, 22)  # 3 windows (frames 0..210)
        + _track_rows(2, 0, 20, y0=1.0)  # 1 window, present in the first window of ped 1
        + _track_rows(3, 500, 10)  # too short
        + _track_rows(4, 1000, 12)
        + _track_rows(4, 1200, 12),  # a gap: 12 + 12 frames, never 20 consecutive
        dtype=float,
    )
    w = make_windows(rows, max_neighbours=4, scene="toy")
    assert len(w) == 4
    assert w.stats.tracks == 4 and w.stats.tracks_too_short == 2 and w.stats.track_gaps == 1
    first = np.flatnonzero((w.ped == 1) & (w.frame == 0))[0]
    assert w.nbr_mask[first].sum() == 1
    np.testing.assert_allclose(w.nbr_obs[first, 0, :, 1], 1.0)
    np.testing.assert_allclose(w.fut[first, :, 0], np.arange(8, 20))
    later = np.flatnonzero((w.ped == 1) & (w.frame == 10))[0]
    assert w.nbr_mask[later].sum() == 0  # ped 2 is not present in all 20 frames of this window
    assert set(w.scene) == {"toy"}


def test_max_neighbours_keeps_the_nearest():
    rows = []
    for i, y in enumerate([0.0, 5.0, 1.0, 3.0]):
        rows += _track_rows(i + 1, 0, 20, y0=y)
    w = make_windows(np.asarray(rows, float), max_neighbours=2)
    a = np.flatnonzero(w.ped == 1)[0]
    np.testing.assert_allclose(sorted(w.nbr_obs[a, :, -1, 1]), [1.0, 3.0])
    assert w.stats.neighbours_dropped == 4 * 1


def test_windows_subset_concat_and_tensors(sample_windows):
    w = sample_windows
    part = w.strided(10)
    assert len(part) == 10
    both = TrajectoryWindows.concat([part, part.subset(slice(0, 3))])
    assert len(both) == 13
    t = both.tensors(slice(0, 4))
    assert t["obs"].shape == (4, 8, 2) and t["nbr_mask"].dtype == torch.float32


def test_sample_folds_and_bad_arguments():
    assert len(load_fold("sample", "synth_b", "test")) > 100
    with pytest.raises(InputError, match="unknown fold"):
        load_fold("sample", "zara9", "test")
    with pytest.raises(InputError, match="split"):
        load_fold("sample", "synth_a", "dev")
    with pytest.raises(InputError, match="folds.json"):
        find_root("/nonexistent/folder")


def test_bad_folds_json(tmp_path):
    (tmp_path / "folds.json").write_text("{not json")
    with pytest.raises(InputError, match="JSON"):
        load_fold(tmp_path, "x", "test")
    (tmp_path / "folds.json").write_text(json.dumps({"x": {"test": ["missing.txt"], "train_scenes": []}}))
    with pytest.raises(InputError, match="no such"):
        load_fold(tmp_path, "x", "test")


def test_datamodule_batches():
    dm = TrajectoryDataModule(root="sample", fold="synth_a", batch_size=16, max_neighbours=6, max_train=100)
    dm.setup("fit")
    assert len(dm.windows("train")) == 100
    b = next(iter(dm.train_dataloader()))
    assert b["obs"].shape == (16, 8, 2) and b["fut"].shape == (16, 12, 2)
    assert b["nbr_obs"].shape == (16, 6, 8, 2) and b["nbr_fut"].shape == (16, 6, 12, 2)
    assert b["nbr_mask"].shape == (16, 6)
    with pytest.raises(InputError):
        TrajectoryDataModule(batch_size=0)


@pytest.mark.skipif(not (ETH_UCY / "folds.json").is_file(), reason="ETH/UCY research data not present")
def test_eth_ucy_window_counts():
    counts = {s: len(make_windows(read_trajectories(ETH_UCY / "all_data" / f"{s}.txt"))) for s in ("biwi_eth",)}
    assert counts == {"biwi_eth": 364}
    assert len(load_fold(ETH_UCY, "hotel", "test")) == 1197
