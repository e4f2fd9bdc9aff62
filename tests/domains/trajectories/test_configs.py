"""Shipped configs parse and the tiny config fits and samples through the CLI on the synthetic scenes."""

from importlib import resources
from pathlib import Path

import pytest
import yaml

CONFIGS = ["goalflow_eth_ucy.yaml", "goalflow_eth_ucy_paper.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_names_real_classes(name):
    cfg = yaml.safe_load(resources.files("flowsci.configs").joinpath("trajectories", name).read_text())
    assert cfg["model"]["class_path"] == "flowsci.domains.trajectories.GoalFlow"
    assert cfg["data"]["class_path"] == "flowsci.domains.trajectories.TrajectoryDataModule"
    from flowsci.domains.trajectories import GoalFlowNet

    GoalFlowNet(**cfg["model"]["init_args"]["net"]["init_args"])


def test_tiny_config_fit_and_sample(tmp_path, monkeypatch):
    from flowsci.cli import main

    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            "trajectories/goalflow_eth_ucy.yaml",
            "--data.init_args.root",
            "sample",
            "--data.init_args.fold",
            "synth_b",
            "--trainer.max_steps",
            "3",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.limit_val_batches",
            "1",
        ]
    )
    ckpt = next(Path("runs").rglob("last.ckpt"))
    main(["sample", "--ckpt", str(ckpt), "--out", "preds", "--num", "3", "--steps", "1", "--set", "max_agents=2"])
    assert (tmp_path / "preds" / "scene.png").is_file()
    assert len(list((tmp_path / "preds" / "predictions").glob("sample_*.txt"))) == 3
    from flowsci.domains.trajectories import GoalFlow

    assert float(GoalFlow.from_checkpoint(ckpt).fitted) == 1.0


@pytest.mark.parametrize("name", ["goalflow_highway.yaml", "goalflow_intersection.yaml"])
def test_driving_configs_name_real_classes(name):
    cfg = yaml.safe_load(resources.files("flowsci.configs").joinpath("trajectories", name).read_text())
    assert cfg["model"]["class_path"] == "flowsci.domains.trajectories.DrivingGoalFlow"
    assert cfg["data"]["class_path"] == "flowsci.domains.trajectories.HighwayDataModule"
    from flowsci.domains.trajectories import DrivingGoalFlow, DrivingGoalFlowNet, HighwayDataModule

    net = DrivingGoalFlowNet(**cfg["model"]["init_args"]["net"]["init_args"])
    kw = {k: v for k, v in cfg["model"]["init_args"].items() if k not in ("net", "optimizer")}
    model = DrivingGoalFlow(net, **kw)
    dm = HighwayDataModule(**cfg["data"]["init_args"])  # collects nothing until setup
    assert model.frame_mode == "lane" and dm.cfg.scenario == ("intersection" if "inter" in name else "highway")
