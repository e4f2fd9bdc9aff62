"""One recipe: `flowsci fit --config crystals/<tiny>.yaml` trains the same model as the quick benchmark row."""

import pytest
import torch


@pytest.mark.parametrize("config", ["crysbfn_csp_tiny", "fm_csp_tiny"])
def test_cli_config_trains_the_benchmark_model(config, tmp_path, monkeypatch):
    """A few steps of the shipped config and of the benchmark's own training give bit-identical weights."""
    import pytorch_lightning as pl

    from flowsci.benchspec import fit_method
    from flowsci.cli import main
    from flowsci.domains.crystals import benchmark as B

    torch.set_num_threads(1)
    steps, max_train = 4, 96
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            f"crystals/{config}.yaml",
            f"--trainer.max_steps={steps}",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--data.init_args.max_train={max_train}",
        ]
    )
    ckpt = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=False, map_location="cpu")["state_dict"]
    spec = B.spec("quick")
    method = spec.method("crysbfn" if config.startswith("crysbfn") else "fm-torus")
    size = {**B._SIZES["quick"], "max_train": max_train}
    dm = B.bundled_datamodule(size)
    pl.seed_everything(spec.seed, workers=True, verbose=False)  # as benchmarks.runner._train
    model = method.build(dm)
    fit_method(spec, method, model, dm, steps, torch.device("cpu"))
    ours = model.state_dict()
    assert set(ours) == set(ckpt)
    for k, v in ours.items():
        torch.testing.assert_close(ckpt[k], v, rtol=0, atol=0, msg=k)
