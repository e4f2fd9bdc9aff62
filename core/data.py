"""Built-in 2-D toy distributions and their LightningDataModule."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

__all__ = ["TOY_DATASETS", "sample_toy", "Toy2DDataModule"]


def _eight_gaussians(n: int, g: torch.Generator) -> Tensor:
    """Mixture of 8 Gaussians (std 0.1·scale) on a circle of radius 5 (torchcfm's geometry, scaled)."""
    k = torch.randint(0, 8, (n,), generator=g)
    angle = k.double() * (2 * math.pi / 8)
    centers = 5.0 * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return (centers + math.sqrt(0.1) * torch.randn(n, 2, generator=g, dtype=torch.float64)).float()


def _moons(n: int, g: torch.Generator) -> Tensor:
    """Two interleaved half circles with noise 0.2, rescaled by ×3 − 1 (torchcfm's tutorial geometry)."""
    n_out = n // 2
    n_in = n - n_out
    a_out = math.pi * torch.rand(n_out, generator=g, dtype=torch.float64)
    a_in = math.pi * torch.rand(n_in, generator=g, dtype=torch.float64)
    outer = torch.stack([torch.cos(a_out), torch.sin(a_out)], dim=1)
    inner = torch.stack([1 - torch.cos(a_in), 1 - torch.sin(a_in) - 0.5], dim=1)
    x = torch.cat([outer, inner]) + 0.2 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = x[torch.randperm(n, generator=g)]
    return (3 * x - 1).float()


def _checkerboard(n: int, g: torch.Generator) -> Tensor:
    """4×4 checkerboard on [-4, 4]^2 (flow_matching's example geometry)."""
    x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
    x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g).double() * 2
    x2 = x2 + torch.floor(x1) % 2
    return (torch.stack([x1, x2], dim=1) * 2).float()


def _gaussian(n: int, g: torch.Generator) -> Tensor:
    """Standard normal in 2-D (a source distribution)."""
    return torch.randn(n, 2, generator=g)


TOY_DATASETS = {"8gaussians": _eight_gaussians, "moons": _moons, "checkerboard": _checkerboard, "gaussian": _gaussian}


def sample_toy(name: str, n: int, seed: int = 0) -> Tensor:
    """Draw ``n`` points ``[n, 2]`` from a named toy distribution with a fixed seed.

    Args:
        name: One of :data:`TOY_DATASETS`.
        n: Number of points.
        seed: Seed of the draw.

    """
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name](n, torch.Generator().manual_seed(seed))


class Toy2DDataModule(pl.LightningDataModule):
    """Seeded 2-D toy data (8 gaussians, two moons, checkerboard) for tests, quickstart and benchmarks.

    Train, validation and test sets are independent draws (seeds ``seed``, ``seed+1``, ``seed+2``).

    Args:
        dataset: Name in :data:`TOY_DATASETS`.
        num_train: Training points.
        num_val: Validation (and test, and predict) points.
        batch_size: Batch size.
        seed: Base seed.
        labels: Yield ``(x, y)`` pairs with ``y`` the sign-quadrant class (for conditional/CFG demos).

    """

    def __init__(
        self,
        dataset: str = "moons",
        num_train: int = 20_000,
        num_val: int = 2_000,
        batch_size: int = 256,
        seed: int = 0,
        labels: bool = False,
    ) -> None:
        super().__init__()
        if dataset not in TOY_DATASETS:
            raise ValueError(f"unknown toy dataset {dataset!r}; choose one of {sorted(TOY_DATASETS)}")
        self.dataset, self.num_train, self.num_val = dataset, num_train, num_val
        self.batch_size, self.seed, self.labels = batch_size, seed, labels
        self.dim = 2

    def _make(self, n: int, seed: int) -> TensorDataset:
        x = sample_toy(self.dataset, n, seed)
        if not self.labels:
            return TensorDataset(x)
        return TensorDataset(x, quadrant_label(x))

    def setup(self, stage: str | None = None) -> None:
        """Draw the splits (deterministic)."""
        self.train_set = self._make(self.num_train, self.seed)
        self.val_set = self._make(self.num_val, self.seed + 1)
        self.test_set = self._make(self.num_val, self.seed + 2)

    def _loader(self, ds: TensorDataset, shuffle: bool) -> DataLoader:
        # whole batches are sliced from the tensors at once (no per-sample collation)
        sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
        return DataLoader(ds, sampler=BatchSampler(sampler, self.batch_size, drop_last=shuffle), batch_size=None)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches."""
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches."""
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """One generated sample per validation row (and its label, when labelled)."""
        return self._loader(self.val_set, shuffle=False)


def quadrant_label(x: Tensor) -> Tensor:
    """Class of a 2-D point by the signs of its coordinates: 0..3 (``[B]`` long)."""
    return (x[:, 0] > 0).long() * 2 + (x[:, 1] > 0).long()
