"""Shared fixtures of the trajectories tests (seeded, one thread; the ETH/UCY data are optional)."""

from pathlib import Path

import pytest
import torch

ETH_UCY = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "trajectories" / "eth_ucy"


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def sample_windows():
    from flowsci.domains.trajectories.data import load_fold

    return load_fold("sample", "synth_a", "train")


@pytest.fixture(scope="session")
def trained_model(sample_windows):
    """A tiny GoalFlow fitted for 30 steps on the synthetic scenes (shared by several tests)."""
    import pytorch_lightning as pl

    from flowsci.domains.trajectories import GoalFlow, GoalFlowNet, TrajectoryDataModule
    from flowsci.module import QUIET_TRAINER

    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    net = GoalFlowNet(d_model=32, num_layers=1, num_heads=2, scorer_d_model=32, time_dim=32)
    model = GoalFlow(net, num_goals=16)
    dm = TrajectoryDataModule(root="sample", fold="synth_a", batch_size=64)
    pl.Trainer(**QUIET_TRAINER, max_steps=30, accelerator="cpu").fit(model, datamodule=dm)
    return model.eval()
