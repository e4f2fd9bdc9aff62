"""Trajectories: GoalFlow (goal-driven rectified flow, Xing et al., CVPR 2025) for multimodal pedestrian
trajectory prediction on ETH/UCY, with constant-velocity baselines and the field's metrics.

Example:
    >>> from flowsci.domains.trajectories import GoalFlow
    >>> model = GoalFlow.from_checkpoint("runs/.../last.ckpt")  # doctest: +SKIP
    >>> futures = model.predict(history, neighbours, num_samples=20, steps=1)  # [20, 12, 2] metres  # doctest: +SKIP

The ETH/UCY files are research-use data and are not shipped: point the data module at a folder holding them
(``root``); ``root="sample"`` uses the shipped synthetic scenes.
"""

from flowsci.contract import Domain
from flowsci.domains.trajectories.data import TrajectoryDataModule, TrajectoryWindows, read_trajectories
from flowsci.domains.trajectories.driving import (
    DrivingGoalFlow,
    DrivingGoalFlowNet,
    DrivingWindows,
    FlowPlanner,
    HighwayConfig,
    HighwayDataModule,
    closed_loop,
    collect_highway,
    rollout,
)
from flowsci.domains.trajectories.flow import ConstantVelocity, GoalFlow, TrajectorySolution, scene_windows
from flowsci.domains.trajectories.metrics import evaluate, plot_scene
from flowsci.domains.trajectories.model import GoalFlowNet

__all__ = [
    "DOMAIN",
    "ConstantVelocity",
    "DrivingGoalFlow",
    "DrivingGoalFlowNet",
    "DrivingWindows",
    "FlowPlanner",
    "HighwayConfig",
    "HighwayDataModule",
    "GoalFlow",
    "GoalFlowNet",
    "TrajectoryDataModule",
    "TrajectorySolution",
    "TrajectoryWindows",
    "closed_loop",
    "collect_highway",
    "evaluate",
    "plot_scene",
    "read_trajectories",
    "reference",
    "rollout",
]


def reference(num: int) -> TrajectoryWindows:
    """``num`` evenly spaced windows of the shipped synthetic held-out scene ``synth_a`` (what ``flowsci sample``
    predicts for by default; ``evaluate`` matches windows by scene, frame and pedestrian).
    """
    return scene_windows(None, num, 8, 12)


DOMAIN = Domain(
    name="trajectories",
    module=GoalFlow,
    datamodule=TrajectoryDataModule,
    evaluate=evaluate,
    plot=plot_scene,
    reference=reference,
    tiny_config="trajectories/goalflow_eth_ucy.yaml",
    extra="trajectories",
    sample_args=("--num", "4", "--steps", "2"),
    smoke_benchmark="trajectories",
    modules=(ConstantVelocity,),
    fit_args=("--data.init_args.root", "sample", "--data.init_args.fold", "synth_a"),
)
