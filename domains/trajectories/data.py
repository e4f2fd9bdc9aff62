"""ETH/UCY pedestrian trajectories: the ``frame ped_id x y`` text format, 20-frame windows and the data module.

File format (Social-GAN / Trajectron++ / MID / LED all read the same files): one row per (frame, pedestrian),
whitespace separated ``frame_id ped_id x y``, world coordinates in metres, frame ids stepping by 10 = 0.4 s.

**Window rule** (the one this package reproduces, per scene): a window is 20 consecutive frames (8 observed +
12 predicted, frame ids ``f, f + 10, ..., f + 190``, stride one frame); every pedestrian present in all 20 frames
is one evaluation agent of that window; its neighbours are the *other* pedestrians present in all 20 frames
(Social-GAN's rule). Windows that contain a single pedestrian are kept (Social-GAN's loader drops them, so its
counts are smaller on eth/hotel/zara). Counts on the shared files: biwi_eth 364, biwi_hotel 1197, crowds_zara01
2356, crowds_zara02 5910, students001 14295, students003 10039 (univ = 24334). Tracks shorter than 20 frames and
frames of a track that are separated by a gap give no window; both are counted in :class:`WindowStats`, never
silently dropped. Neighbours beyond ``max_neighbours`` are dropped nearest-first (the farthest go; counted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from flowsci.errors import InputError
from flowsci.io import atomic_write

__all__ = [
    "FOLDS",
    "SAMPLE_ROOT",
    "TrajectoryDataModule",
    "TrajectoryWindows",
    "WindowDataset",
    "WindowStats",
    "find_root",
    "load_fold",
    "make_windows",
    "read_trajectories",
    "synthetic_scene",
    "write_sample_data",
    "write_trajectories",
]

FOLDS = ("eth", "hotel", "univ", "zara1", "zara2")
"""The five ETH/UCY leave-one-scene-out folds (``folds.json``)."""

SAMPLE_ROOT = Path(__file__).parent / "sample_data"
"""Shipped synthetic scenes (``root="sample"``, a flat folder with its own ``folds.json``); see its PROVENANCE.md."""

DEFAULT_ROOT = "../shared/data/trajectories/eth_ucy"
_MAX_FILE_BYTES = 200 * 2**20
_MAX_ABS_COORD = 1e5


# ----------------------------------------------------------------------------------------------------- text files
def read_trajectories(path: str | os.PathLike) -> np.ndarray:
    """Read a ``frame ped_id x y`` text file.

    Args:
        path: The file (tab or space separated, one row per pedestrian and frame, metres).

    Returns:
        ``[R, 4]`` float64 rows ``(frame, ped, x, y)`` sorted by frame then pedestrian.

    Raises:
        InputError: missing/empty/oversized file, a line without 4 numbers, NaN/Inf or absurd coordinates,
            non-integer frame or pedestrian ids, or a duplicate (frame, pedestrian) row; the message names the
            file and line.

    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such trajectory file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(p, "is empty (0 bytes)")
    if size > _MAX_FILE_BYTES:
        raise InputError(p, f"is {size / 2**20:.0f} MiB; trajectory text files over 200 MiB are refused")
    try:
        text = p.read_text()
    except UnicodeDecodeError as err:
        raise InputError(p, f"is not a text file ({err})") from err
    rows: list[tuple[float, float, float, float]] = []
    seen: dict[tuple[int, int], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        where = f"{p}:{lineno}"
        if len(parts) != 4:
            raise InputError(where, f"expected 4 columns 'frame ped_id x y', got {len(parts)}: {line.strip()[:80]!r}")
        try:
            frame, ped, x, y = (float(v) for v in parts)
        except ValueError as err:
            raise InputError(where, f"not a number ({err}): {line.strip()[:80]!r}") from err
        if not all(np.isfinite(v) for v in (frame, ped, x, y)):
            raise InputError(where, f"non-finite value (NaN or Inf): {line.strip()[:80]!r}")
        if frame != int(frame) or ped != int(ped) or frame < 0:
            raise InputError(where, f"frame and pedestrian ids must be whole numbers >= 0: {line.strip()[:80]!r}")
        if abs(x) > _MAX_ABS_COORD or abs(y) > _MAX_ABS_COORD:
            raise InputError(where, f"coordinates beyond {_MAX_ABS_COORD:g} m are absurd: {line.strip()[:80]!r}")
        key = (int(frame), int(ped))
        if key in seen:
            raise InputError(
                where, f"duplicate row for frame {key[0]}, pedestrian {key[1]} (first at line {seen[key]})"
            )
        seen[key] = lineno
        rows.append((frame, ped, x, y))
    if not rows:
        raise InputError(p, "holds no data rows")
    arr = np.asarray(rows, dtype=np.float64)
    return arr[np.lexsort((arr[:, 1], arr[:, 0]))]


def write_trajectories(path: str | os.PathLike, rows: np.ndarray) -> Path:
    """Write ``[R, 4]`` rows ``(frame, ped, x, y)`` in the tab-separated ETH/UCY format (atomic write).

    Ids are written as ``780.0``/``1.0`` like the original files, coordinates with 4 decimals (0.1 mm).
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise InputError("rows", f"must be [R, 4] (frame, ped, x, y), got shape {rows.shape}")
    if not np.isfinite(rows).all():
        raise InputError("rows", "hold NaN or Inf")
    lines = [f"{f:.1f}\t{pid:.1f}\t{x:.4f}\t{y:.4f}" for f, pid, x, y in rows]
    return atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


# ---------------------------------------------------------------------------------------------------- windows
@dataclass
class WindowStats:
    """What :func:`make_windows` kept and skipped (reported, never silent).

    Attributes:
        windows: Agent windows made.
        tracks: Pedestrian tracks in the file.
        tracks_too_short: Tracks with fewer than ``obs_len + pred_len`` consecutive frames anywhere (no window).
        track_gaps: Places where a track skips a frame (windows never span them).
        neighbours_dropped: Neighbour slots dropped because a window had more than ``max_neighbours``.
    """

    windows: int = 0
    tracks: int = 0
    tracks_too_short: int = 0
    track_gaps: int = 0
    neighbours_dropped: int = 0

    def __add__(self, other: WindowStats) -> WindowStats:
        return WindowStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


@dataclass
class TrajectoryWindows:
    """A set of agent windows (world coordinates, metres), the batch format of the whole domain.

    Attributes:
        obs: ``[N, obs_len, 2]`` observed positions of the agent.
        fut: ``[N, pred_len, 2]`` ground-truth future.
        nbr_obs: ``[N, M, obs_len, 2]`` observed positions of its neighbours (zero where absent).
        nbr_fut: ``[N, M, pred_len, 2]`` their futures (zero where absent).
        nbr_mask: ``[N, M]`` bool, which neighbour slots are real.
        frame: ``[N]`` frame id of the first observed frame.
        ped: ``[N]`` pedestrian id.
        scene: ``[N]`` scene name of each window.
        frame_step: Frame-id increment between consecutive positions (10 for ETH/UCY = 0.4 s).
        stats: What was kept and skipped while windowing.
    """

    obs: np.ndarray
    fut: np.ndarray
    nbr_obs: np.ndarray
    nbr_fut: np.ndarray
    nbr_mask: np.ndarray
    frame: np.ndarray
    ped: np.ndarray
    scene: np.ndarray
    frame_step: int = 10
    stats: WindowStats = field(default_factory=WindowStats)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def max_neighbours(self) -> int:
        """Neighbour slots ``M``."""
        return int(self.nbr_mask.shape[1])

    def subset(self, index: Sequence[int] | np.ndarray | slice) -> TrajectoryWindows:
        """The windows at ``index`` (same neighbour slots)."""
        arrays = {n: getattr(self, n)[index] for n in _ARRAYS}
        return TrajectoryWindows(**arrays, frame_step=self.frame_step, stats=self.stats)

    def strided(self, max_windows: int | None) -> TrajectoryWindows:
        """At most ``max_windows`` windows, evenly spaced over the set (``None``: all)."""
        if max_windows is None or max_windows >= len(self):
            return self
        return self.subset(np.linspace(0, len(self) - 1, max_windows).round().astype(int))

    @staticmethod
    def concat(parts: Sequence[TrajectoryWindows]) -> TrajectoryWindows:
        """Concatenate window sets, padding neighbour slots to the largest ``M``."""
        if not parts:
            raise ValueError("concat needs at least one TrajectoryWindows")
        m = max(w.max_neighbours for w in parts)
        padded = [_pad_neighbours(w, m) for w in parts]
        arrays = {n: np.concatenate([getattr(w, n) for w in padded]) for n in _ARRAYS}
        stats = WindowStats()
        for w in parts:
            stats = stats + w.stats
        return TrajectoryWindows(**arrays, frame_step=parts[0].frame_step, stats=stats)

    def tensors(self, index: int | slice | np.ndarray) -> dict[str, torch.Tensor]:
        """The model inputs of ``index`` as float32 tensors (``nbr_mask`` as 0./1. floats)."""
        return {
            "obs": torch.as_tensor(self.obs[index], dtype=torch.float32),
            "fut": torch.as_tensor(self.fut[index], dtype=torch.float32),
            "nbr_obs": torch.as_tensor(self.nbr_obs[index], dtype=torch.float32),
            "nbr_fut": torch.as_tensor(self.nbr_fut[index], dtype=torch.float32),
            "nbr_mask": torch.as_tensor(self.nbr_mask[index], dtype=torch.float32),
        }


_ARRAYS = ("obs", "fut", "nbr_obs", "nbr_fut", "nbr_mask", "frame", "ped", "scene")


def _pad_neighbours(w: TrajectoryWindows, m: int) -> TrajectoryWindows:
    extra = m - w.max_neighbours
    if extra == 0:
        return w
    n = len(w)
    return TrajectoryWindows(
        obs=w.obs,
        fut=w.fut,
        nbr_obs=np.concatenate([w.nbr_obs, np.zeros((n, extra, *w.nbr_obs.shape[2:]), w.nbr_obs.dtype)], 1),
        nbr_fut=np.concatenate([w.nbr_fut, np.zeros((n, extra, *w.nbr_fut.shape[2:]), w.nbr_fut.dtype)], 1),
        nbr_mask=np.concatenate([w.nbr_mask, np.zeros((n, extra), bool)], 1),
        frame=w.frame,
        ped=w.ped,
        scene=w.scene,
        frame_step=w.frame_step,
        stats=w.stats,
    )


def make_windows(
    rows: np.ndarray,
    obs_len: int = 8,
    pred_len: int = 12,
    frame_step: int | None = 10,
    max_neighbours: int = 16,
    scene: str = "",
) -> TrajectoryWindows:
    """Cut ``frame ped x y`` rows into agent windows (the window rule of the module docstring).

    Args:
        rows: ``[R, 4]`` rows as :func:`read_trajectories` returns.
        obs_len: Observed steps.
        pred_len: Predicted steps.
        frame_step: Frame-id increment between consecutive steps (``None``: the most common increment).
        max_neighbours: Neighbour slots ``M`` (the nearest at the last observed frame are kept).
        scene: Scene name stored with each window.

    Returns:
        The windows (float32 coordinates); ``stats`` counts what was skipped.

    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != 4 or len(rows) == 0:
        raise InputError(scene or "rows", f"must be a non-empty [R, 4] array, got shape {rows.shape}")
    if obs_len < 2 or pred_len < 1:
        raise InputError("obs_len/pred_len", f"need obs_len >= 2 and pred_len >= 1, got {obs_len}, {pred_len}")
    seq = obs_len + pred_len
    frames = np.unique(rows[:, 0]).astype(np.int64)
    if frame_step is None:
        diffs = np.diff(frames)
        frame_step = int(np.bincount(diffs).argmax()) if len(diffs) else 1
    peds = np.unique(rows[:, 1]).astype(np.int64)
    fi = np.searchsorted(frames, rows[:, 0].astype(np.int64))
    pi = np.searchsorted(peds, rows[:, 1].astype(np.int64))
    pos = np.full((len(frames), len(peds), 2), np.nan, dtype=np.float64)
    pos[fi, pi] = rows[:, 2:4]
    present = ~np.isnan(pos[..., 0])

    stats = WindowStats(tracks=len(peds))
    for j in range(len(peds)):
        f = frames[present[:, j]]
        gaps = np.flatnonzero(np.diff(f) != frame_step)
        stats.track_gaps += len(gaps)
        runs = np.diff(np.concatenate([[-1], gaps, [len(f) - 1]]))
        if runs.max(initial=0) < seq:
            stats.tracks_too_short += 1

    obs_l, fut_l, nobs_l, nfut_l, mask_l, frame_l, ped_l = [], [], [], [], [], [], []
    for i in range(len(frames) - seq + 1):
        if frames[i + seq - 1] - frames[i] != (seq - 1) * frame_step:
            continue  # the frames are not consecutive: no window spans a gap
        full = np.flatnonzero(present[i : i + seq].all(0))
        if len(full) == 0:
            continue
        track = pos[i : i + seq, full].transpose(1, 0, 2)  # [P, seq, 2]
        for a in range(len(full)):
            others = np.delete(np.arange(len(full)), a)
            if len(others) > max_neighbours:
                d = np.linalg.norm(track[others, obs_len - 1] - track[a, obs_len - 1], axis=-1)
                stats.neighbours_dropped += len(others) - max_neighbours
                others = others[np.argsort(d, kind="stable")[:max_neighbours]]
            nb = np.zeros((max_neighbours, seq, 2))
            nb[: len(others)] = track[others]
            mask = np.zeros(max_neighbours, bool)
            mask[: len(others)] = True
            obs_l.append(track[a, :obs_len])
            fut_l.append(track[a, obs_len:])
            nobs_l.append(nb[:, :obs_len])
            nfut_l.append(nb[:, obs_len:])
            mask_l.append(mask)
            frame_l.append(frames[i])
            ped_l.append(peds[full[a]])
    n = len(obs_l)
    stats.windows = n
    m = max_neighbours

    def stack(xs: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        return np.stack(xs).astype(np.float32) if xs else np.zeros((0, *shape), np.float32)

    return TrajectoryWindows(
        obs=stack(obs_l, (obs_len, 2)),
        fut=stack(fut_l, (pred_len, 2)),
        nbr_obs=stack(nobs_l, (m, obs_len, 2)),
        nbr_fut=stack(nfut_l, (m, pred_len, 2)),
        nbr_mask=np.stack(mask_l) if mask_l else np.zeros((0, m), bool),
        frame=np.asarray(frame_l, dtype=np.int64),
        ped=np.asarray(ped_l, dtype=np.int64),
        scene=np.asarray([scene] * n, dtype=object),
        frame_step=int(frame_step),
        stats=stats,
    )


# ------------------------------------------------------------------------------------------------------- folds
def find_root(root: str | os.PathLike) -> Path:
    """Resolve a data folder: ``"sample"`` (shipped synthetic scenes), a folder, or a path relative to the repo.

    Raises:
        InputError: no such folder, or it has no ``folds.json``.

    """
    if str(root) == "sample":
        return SAMPLE_ROOT
    p = Path(root)
    candidates = [p] if p.is_absolute() else [p, Path(__file__).resolve().parents[2] / p]
    for c in candidates:
        if (c / "folds.json").is_file():
            return c
    raise InputError(
        root,
        "no ETH/UCY folder with folds.json here (the research-use data are not shipped: point --data.init_args.root "
        f"at a copy, e.g. {DEFAULT_ROOT} from the repository root, or use root: sample for the synthetic scenes)",
    )


def _read_folds(root: Path) -> dict[str, Any]:
    path = root / "folds.json"
    try:
        folds = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(path, f"not readable JSON ({err})") from err
    if not isinstance(folds, dict):
        raise InputError(path, "must hold a JSON object of folds")
    return folds


def load_fold(
    root: str | os.PathLike,
    fold: str,
    split: str,
    max_neighbours: int = 16,
    obs_len: int = 8,
    pred_len: int = 12,
    time_stride: int = 1,
) -> TrajectoryWindows:
    """The windows of one split of a leave-one-scene-out fold.

    Args:
        root: Data folder holding ``folds.json`` (see :func:`find_root`).
        fold: Fold name (``eth``, ``hotel``, ``univ``, ``zara1``, ``zara2``; synthetic: ``synth_a``...).
        split: ``train`` (the ``*_train.txt`` of the training scenes), ``val`` (their ``*_val.txt``) or ``test``
            (the full recording(s) of the held-out scene).
        max_neighbours: Neighbour slots per window.
        obs_len: Observed steps.
        pred_len: Predicted steps.
        time_stride: Keep every ``time_stride``-th annotated frame (each phase in turn, so no frame is wasted):
            steps of ``time_stride`` x 0.4 s, on which walkers move ``time_stride`` times farther per step — a
            speed-shifted split of the same scenes (a validation set for speed generalisation; 1 = the data as is).

    Raises:
        InputError: unknown fold or split, missing or malformed files, ``time_stride < 1``.

    """
    base = find_root(root)
    folds = _read_folds(base)
    names = [k for k, v in folds.items() if isinstance(v, dict) and "test" in v]
    if fold not in names:
        raise InputError("fold", f"unknown fold {fold!r}; {base / 'folds.json'} lists {names}")
    entry = folds[fold]
    if split == "test":
        files = [base / f for f in entry["test"]]
    elif split in ("train", "val"):
        pattern = folds.get(f"_{split}_file_pattern", f"{split}/{{scene}}_{split}.txt")
        files = [base / pattern.format(scene=s) for s in entry["train_scenes"]]
    else:
        raise InputError("split", f"must be train, val or test, got {split!r}")
    step = int(folds.get("frame_step", 10))
    if time_stride < 1:
        raise InputError("time_stride", f"must be >= 1, got {time_stride}")
    parts = []
    for f in files:
        rows = read_trajectories(f)
        phase = (rows[:, 0].astype(np.int64) // step) % time_stride
        for r in range(time_stride):
            sub = rows[phase == r]
            if len(sub):
                w = make_windows(sub, obs_len, pred_len, step * time_stride, max_neighbours, scene=_scene_name(f))
                parts.append(w)
    return TrajectoryWindows.concat(parts)


def _scene_name(path: Path) -> str:
    stem = path.stem
    for suffix in ("_train", "_val"):
        stem = stem.removesuffix(suffix)
    return stem


# ------------------------------------------------------------------------------------------------- data module
class WindowDataset(Dataset):
    """Rows of a :class:`TrajectoryWindows` as dicts of float32 tensors (see :meth:`TrajectoryWindows.tensors`)."""

    def __init__(self, windows: TrajectoryWindows) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.windows.tensors(i)


class WindowLoaders:
    """Data loaders over the data module's own ``windows(split)``: shuffled ``train``, and ``val``; ``test`` and
    ``predict`` read the split :attr:`test_split`. Shared by the pedestrian and driving data modules.
    """

    test_split = "test"
    batch_size: int
    num_workers: int

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = WindowDataset(self.windows(split))
        drop = shuffle and len(ds) > self.batch_size
        return DataLoader(ds, batch_size=self.batch_size, shuffle=shuffle, drop_last=drop, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows."""
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        """Validation windows."""
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        """The windows of :attr:`test_split`."""
        return self._loader(self.test_split, False)

    def predict_dataloader(self) -> DataLoader:
        """The windows of :attr:`test_split`."""
        return self._loader(self.test_split, False)


class TrajectoryDataModule(WindowLoaders, pl.LightningDataModule):
    """ETH/UCY leave-one-scene-out data (or the shipped synthetic scenes) as agent-window batches.

    Batches are dicts of float32 tensors in world coordinates (metres): ``obs [B, 8, 2]``, ``fut [B, 12, 2]``,
    ``nbr_obs [B, M, 8, 2]``, ``nbr_fut [B, M, 12, 2]``, ``nbr_mask [B, M]`` (1. where a neighbour is real).
    Normalisation to the agent frame, noise and times are the model's business (drawn per rank in the step).

    Args:
        root: Folder with ``folds.json`` (the research-use data: ``../shared/data/trajectories/eth_ucy`` from the
            repository root), or ``"sample"`` for the shipped synthetic scenes.
        fold: Held-out scene (``eth``, ``hotel``, ``univ``, ``zara1``, ``zara2``; synthetic: ``synth_a``,
            ``synth_b``, ``synth_c``).
        batch_size: Windows per batch.
        max_neighbours: Neighbour slots ``M`` per window.
        max_train: Use at most this many training windows, evenly spaced (``None``: all).
        max_val: Same for validation.
        max_test: Same for the test scene.
        num_workers: DataLoader workers.
        obs_len: Observed steps.
        pred_len: Predicted steps.

    """

    def __init__(
        self,
        root: str = DEFAULT_ROOT,
        fold: str = "zara1",
        batch_size: int = 128,
        max_neighbours: int = 16,
        max_train: int | None = None,
        max_val: int | None = 1024,
        max_test: int | None = None,
        num_workers: int = 0,
        obs_len: int = 8,
        pred_len: int = 12,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise InputError("batch_size", f"must be >= 1, got {batch_size}")
        self.root, self.fold, self.batch_size = root, fold, batch_size
        self.max_neighbours, self.num_workers = max_neighbours, num_workers
        self.max_train, self.max_val, self.max_test = max_train, max_val, max_test
        self.obs_len, self.pred_len = obs_len, pred_len
        self._windows: dict[str, TrajectoryWindows] = {}

    def windows(self, split: str) -> TrajectoryWindows:
        """The (cached) windows of ``split`` (``train``, ``val`` or ``test``), subsampled by ``max_<split>``."""
        if split not in self._windows:
            w = load_fold(self.root, self.fold, split, self.max_neighbours, self.obs_len, self.pred_len)
            if len(w) == 0:
                raise InputError(f"{self.root}:{self.fold}:{split}", "no 20-frame windows in these files")
            self._windows[split] = w.strided({"train": self.max_train, "val": self.max_val}.get(split, self.max_test))
        return self._windows[split]

    def setup(self, stage: str | None = None) -> None:
        """Read the splits the stage needs (every rank reads the same files)."""
        if stage in (None, "fit"):
            self.windows("train")
            self.windows("val")
        if stage in (None, "validate"):
            self.windows("val")
        if stage in (None, "test", "predict"):
            self.windows("test")


# ------------------------------------------------------------------------------------------------ synthetic
def synthetic_scene(num_peds: int = 40, seed: int = 0, frame_step: int = 10, extent: float = 12.0) -> np.ndarray:
    """A synthetic multimodal pedestrian scene in the ETH/UCY row format (the shipped sample data).

    Pedestrians enter on the left edge of an ``extent``-metre square plaza at staggered frames, walk right at
    1.0-1.6 m/s and, at a random point, turn towards one of three exits (up-right, straight, down-right), with
    0.03 m position noise: the futures are genuinely multimodal.

    Returns:
        ``[R, 4]`` rows ``(frame, ped, x, y)`` sorted by frame then pedestrian.

    """
    rng = np.random.default_rng(seed)
    dt = 0.4
    rows = []
    exits = np.deg2rad([35.0, 0.0, -35.0])
    for ped in range(1, num_peds + 1):
        start = int(rng.integers(0, 150)) * frame_step
        speed = rng.uniform(1.0, 1.6)
        p = np.array([0.0, rng.uniform(-extent / 4, extent / 4)])
        heading = rng.normal(0.0, 0.1)
        turn_at = rng.uniform(2.0, extent / 2)
        target = exits[rng.integers(0, 3)]
        steps = int(rng.integers(24, 34))
        for k in range(steps):
            if p[0] > turn_at:
                heading += np.clip(target - heading, -0.25, 0.25)
            p = p + speed * dt * np.array([np.cos(heading), np.sin(heading)])
            noisy = p + rng.normal(0.0, 0.03, 2)
            rows.append((start + k * frame_step, ped, noisy[0], noisy[1]))
    arr = np.asarray(rows, dtype=np.float64)
    arr[:, 2:] = arr[:, 2:].round(4)
    return arr[np.lexsort((arr[:, 1], arr[:, 0]))]


def write_sample_data(out: str | os.PathLike = SAMPLE_ROOT) -> list[Path]:
    """Regenerate the shipped synthetic folder: three scenes, each as a full recording plus a temporal 80/20
    train/val split, and a ``folds.json`` in the ETH/UCY convention (flat layout, so the files ship as package data).
    """
    out = Path(out)
    written = []
    scenes = {"synth_a": 0, "synth_b": 1, "synth_c": 2}
    for name, seed in scenes.items():
        rows = synthetic_scene(seed=seed)
        written.append(write_trajectories(out / f"{name}.txt", rows))
        cut = np.quantile(np.unique(rows[:, 0]), 0.8)
        written.append(write_trajectories(out / f"{name}_train.txt", rows[rows[:, 0] <= cut]))
        written.append(write_trajectories(out / f"{name}_val.txt", rows[rows[:, 0] > cut]))
    folds: dict[str, Any] = {
        "_comment": "Synthetic scenes made by flowsci.domains.trajectories.data.write_sample_data (see PROVENANCE.md).",
    }
    folds.update({name: {"test": [f"{name}.txt"], "train_scenes": [s for s in scenes if s != name]} for name in scenes})
    folds.update({"_train_file_pattern": "{scene}_train.txt", "_val_file_pattern": "{scene}_val.txt"})
    folds.update({"obs_len": 8, "pred_len": 12, "dt_seconds": 0.4, "frame_step": 10})
    text = json.dumps(folds, indent=1) + "\n"
    written.append(atomic_write(out / "folds.json", lambda tmp: Path(tmp).write_text(text)))
    return written


if __name__ == "__main__":  # python -m flowsci.domains.trajectories.data  (regenerates the sample data)
    for f in write_sample_data():
        print(f)
