import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from flowsci.cli import main
from flowsci.cli.fit import resolve_config

FAST = [
    "--trainer.max_steps=30",
    "--trainer.val_check_interval=15",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_train=1024",
    "--data.init_args.num_val=256",
]


def test_fit_then_sample_writes_native_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", "toy2d/ot.yaml", *FAST])
    run = tmp_path / "runs" / "lightning_logs" / "version_0"
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["model"]["init_args"]["coupling"]["class_path"] == "flowsci.couplings.MinibatchOTCoupling"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    main(
        [
            "sample",
            "--ckpt",
            str(ckpt),
            "--num",
            "100",
            "--steps",
            "4",
            "--solver",
            "midpoint",
            "--out",
            "s",
            "--device",
            "cpu",
        ]
    )
    data = np.load(tmp_path / "s" / "samples.npz")
    assert data["x"].shape == (100, 2) and int(data["nfe"]) == 8
    assert (tmp_path / "s" / "samples.png").is_file()
    for device, why in (("gpu", "not a torch device"), ("cuda:0", "no CUDA device")):
        if device == "cuda:0" and torch.cuda.is_available():
            continue
        with pytest.raises(SystemExit) as exc:
            main(["sample", "--ckpt", str(ckpt), "--num", "2", "--device", device, "--out", "never"])
        assert exc.value.code == 2 and why in capsys.readouterr().err and not (tmp_path / "never").exists()
    # resume from the checkpoint with a dotted override (LightningCLI conventions)
    main(["fit", "--config", "toy2d/ot.yaml", *FAST, "--trainer.max_steps=40", f"--ckpt_path={ckpt}"])


def test_print_config_and_unknown_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "toy2d/fm.yaml", "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "flowsci.module.FlowMatching"
    bad = tmp_path / "bad.yaml"
    bad.write_text(resolve_config_text().replace("dataset: moons", "dataset: moons\n    colour: red"))
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(bad)])
    assert exc.value.code != 0
    assert "colour" in capsys.readouterr().err


def resolve_config_text():
    with open(resolve_config("toy2d/fm.yaml")) as f:
        return f.read()


def test_missing_config_and_checkpoint_are_clear_errors(tmp_path, capsys):
    from flowsci.errors import InputError

    with pytest.raises(InputError, match="nope.yaml"):
        resolve_config("nope.yaml")
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--ckpt", str(tmp_path / "missing.ckpt")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("flowsci sample: error:") and "missing.ckpt" in err and "Traceback" not in err


def test_help_does_not_import_domains():
    code = (
        "import sys; from flowsci.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'pymatgen', 'scanpy', 'e3nn') if m in sys.modules]\n"
        "assert not heavy, heavy"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "sample" in out.stdout and "bench" in out.stdout


def test_predict_writes_samples_with_sample_writer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", "toy2d/fm.yaml", *FAST, "--trainer.max_steps=10"])
    ckpt = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    main(
        [
            "predict",
            "--config",
            "toy2d/fm.yaml",
            *FAST,
            f"--ckpt_path={ckpt}",
            "--trainer.callbacks+=flowsci.callbacks.SampleWriter",
            "--trainer.callbacks.out_dir=pred",
            "--model.init_args.sample_steps=3",
        ]
    )
    x = np.load(tmp_path / "pred" / "samples.npz")["x"]
    assert x.shape == (256, 2) and np.isfinite(x).all()


def test_cfg_config_trains_and_guided_sampling_counts_both_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", "toy2d/cfg.yaml", *FAST])
    ckpt = tmp_path / "runs" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    main(
        [
            "sample",
            "--ckpt",
            str(ckpt),
            "--num",
            "3",
            "--steps",
            "4",
            "--cond",
            "y=[0,1,3]",
            "--cfg-scale",
            "2",
            "--out",
            "g",
        ]
    )
    data = np.load(tmp_path / "g" / "samples.npz")
    assert data["x"].shape == (3, 2) and int(data["nfe"]) == 8  # two network passes per guided evaluation
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--ckpt", str(ckpt), "--num", "3", "--cond", "y=[0,1]"])
    assert exc.value.code == 2
