"""The shipped LightningCLI configs for proteins parse, build and run one training + validation step."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gemmi", reason="proteins extra (gemmi) not installed")

from flowsci.cli import main  # noqa: E402

torch.set_num_threads(1)


@pytest.mark.parametrize(
    "config,extra",
    [
        ("proteins/qflow_tiny.yaml", []),
        ("proteins/qflow_small.yaml", ["--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]),
        (
            "proteins/reqflow_paper.yaml",
            # the paper trunk with one block and tiny batches, so one step fits in a CPU test
            [
                "--model.init_args.net.init_args.num_blocks",
                "1",
                "--data.init_args.batch_size",
                "2",
                "--data.init_args.crop_length",
                "32",
                "--data.init_args.num_workers",
                "0",
                "--data.init_args.max_coil",
                "null",
                "--data.init_args.max_rg_factor",
                "null",
            ],
        ),
    ],
)
def test_config_fast_dev_run(config, extra, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            config,
            "--trainer.fast_dev_run",
            "1",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            *extra,
        ]
    )


def test_cli_fit_then_sample_writes_pdbs(tmp_path, monkeypatch):
    """README's CLI path: `flowsci fit --config proteins/qflow_tiny.yaml`, then `flowsci sample --set lengths=[...]`."""
    from flowsci.domains.proteins.data import read_backbones

    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            "proteins/qflow_tiny.yaml",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    ckpt = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    main(["sample", "--ckpt", str(ckpt), "--steps", "3", "--set", "lengths=[20,30]", "--out", "samples"])
    pdbs = sorted((tmp_path / "samples").glob("*.pdb"))
    assert len(pdbs) == 2 and (tmp_path / "samples" / "samples.png").is_file()
    # a 2-step model is far from protein-like: keep broken chains whole
    assert sorted(len(bb) for p in pdbs for bb in read_backbones(p, split_breaks=False)) == [20, 30]
