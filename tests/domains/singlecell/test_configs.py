"""The shipped configs parse and train through `flowsci fit`; `flowsci sample` writes h5ad + PNG."""

from __future__ import annotations

import pytest
import torch

from flowsci.cli import main


@pytest.mark.parametrize(
    "config,extra",
    [
        ("singlecell/wbdit_ddpm_pbmc.yaml", []),
        ("singlecell/latent_mlp_pbmc.yaml", []),
        (
            "singlecell/wbdit_pbmc.yaml",
            # the opt-in class-wise OT coupling (measured, not adopted: docs/domains/singlecell.md)
            [
                "--model.init_args.coupling=flowsci.couplings.MinibatchOTCoupling",
                "--model.init_args.coupling.group_key=y",
            ],
        ),
        (
            "singlecell/wbdit_paper.yaml",
            # the paper's block at a CPU-test size: one block, the shipped 765 genes
            [
                "--data.init_args.n_top_genes=null",
                "--data.init_args.num_workers=0",
                "--model.init_args.net.init_args.n_genes=765",
                "--model.init_args.net.init_args.depth=1",
                "--model.init_args.net.init_args.hidden=64",
            ],
        ),
    ],
)
def test_config_fast_dev_run(config, extra, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", config, "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", *extra])


def test_cli_fit_then_sample_cells(tmp_path, monkeypatch):
    import anndata as ad

    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            "singlecell/wbdit_pbmc.yaml",
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    ckpt = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["singlecell"]["cell_types"][0] == "CD14+ Monocyte"
    main(
        [
            "sample",
            "--ckpt",
            str(ckpt),
            "--steps",
            "2",
            "--set",
            'cells={"CD14+ Monocyte": 5, "CD19+ B": 3}',
            "--out",
            "gen",
        ]
    )
    adata = ad.read_h5ad(tmp_path / "gen" / "samples.h5ad")
    assert adata.shape == (8, 765) and (tmp_path / "gen" / "samples.png").is_file()
    assert adata.obs["cell_type"].astype(str).value_counts().to_dict() == {"CD14+ Monocyte": 5, "CD19+ B": 3}


# Training under `--trainer.strategy ddp --trainer.devices 2` on two CPU processes is checked for this domain by
# tests/test_domain_contract.py (test_tiny_config_trains_under_ddp_on_two_cpu_processes).
