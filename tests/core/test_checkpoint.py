"""The one checkpoint loader: nothing in a checkpoint runs, untrusted classes are refused, bad files are named."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from flowsci.checkpoint import load_module, read_checkpoint, save_module
from flowsci.errors import CheckpointError, MissingCheckpointError
from flowsci.module import FlowMatching
from flowsci.nets import MLP


class _Payload:
    """Unpickling this object would create a marker file (the ``__reduce__`` attack)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def good(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_module(FlowMatching(MLP(dim=2, hidden=8, depth=1), data_shape=[2]), tmp_path / "good.ckpt")


def test_a_pickled_payload_never_runs(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = torch.load(good, weights_only=True)
    ckpt["hyper_parameters"] = {"evil": _Payload(str(marker))}
    bad = tmp_path / "evil.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_module(bad)
    assert not marker.exists()


def test_the_cli_refuses_it_with_one_line(good: Path, tmp_path: Path, capsys) -> None:
    from flowsci.cli import main

    marker = tmp_path / "pwned"
    ckpt = torch.load(good, weights_only=True)
    ckpt["evil"] = _Payload(str(marker))
    bad = tmp_path / "evil.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--ckpt", str(bad), "--out", str(tmp_path / "s")])
    assert exc.value.code == 2 and not marker.exists() and not (tmp_path / "s").exists()
    err = capsys.readouterr().err
    assert err.startswith("flowsci sample: error:") and "evil.ckpt" in err and "Traceback" not in err


def test_fit_resume_refuses_it_before_lightning_loads_it(good: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    from flowsci.cli import main

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    ckpt = torch.load(good, weights_only=True)
    ckpt["evil"] = _Payload(str(marker))
    bad = tmp_path / "resume.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "toy2d/fm.yaml", "--trainer.max_steps=2", f"--ckpt_path={bad}"])
    assert exc.value.code == 2 and not marker.exists()
    err = capsys.readouterr().err
    assert err.startswith("flowsci fit: error:") and "resume.ckpt" in err and "never unpickles" in err


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("module", "subprocess.Popen"),
        ("net", "os.system"),
        ("config", "builtins.exec"),
    ],
)
def test_classes_outside_the_trusted_packages_are_not_imported(good: Path, tmp_path: Path, where, name) -> None:
    ckpt = torch.load(good, weights_only=True)
    if where == "module":
        ckpt["flowsci"]["module"] = name
    elif where == "net":
        ckpt["flowsci"]["net"]["class"] = name
    else:
        ckpt["hyper_parameters"] = {"_class_path": "flowsci.module.FlowMatching", "net": {"class_path": name}}
    bad = tmp_path / "untrusted.ckpt"
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError, match="refusing to import"):
        load_module(bad)


def test_a_genuine_checkpoint_loads_and_a_wrong_class_is_named(good: Path) -> None:
    from flowsci.domains.proteins import ReQFlow

    assert isinstance(load_module(good), FlowMatching)
    with pytest.raises(CheckpointError, match="not a ReQFlow"):
        ReQFlow.from_checkpoint(good)


def _truncated(good: Path, tmp: Path) -> Path:
    data = good.read_bytes()
    (tmp / "t.ckpt").write_bytes(data[: len(data) // 2])
    return tmp / "t.ckpt"


def _garbage(good: Path, tmp: Path) -> Path:
    (tmp / "g.ckpt").write_bytes(os.urandom(4096))
    return tmp / "g.ckpt"


def _empty(good: Path, tmp: Path) -> Path:
    (tmp / "e.ckpt").write_bytes(b"")
    return tmp / "e.ckpt"


def _old_pickle(good: Path, tmp: Path) -> Path:
    with open(tmp / "p.ckpt", "wb") as f:
        pickle.dump({"state_dict": {}}, f)
    return tmp / "p.ckpt"


def _zip_without_data(good: Path, tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "z.ckpt", "w") as z:
        z.writestr("archive/readme.txt", "not a checkpoint")
    return tmp / "z.ckpt"


def _not_a_model(good: Path, tmp: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, tmp / "n.ckpt")
    return tmp / "n.ckpt"


def _folder(good: Path, tmp: Path) -> Path:
    (tmp / "d.ckpt").mkdir()
    return tmp / "d.ckpt"


@pytest.mark.parametrize("make", [_truncated, _garbage, _empty, _old_pickle, _zip_without_data, _not_a_model, _folder])
def test_broken_files_end_in_one_error_naming_the_file(good: Path, tmp_path: Path, make) -> None:
    path = make(good, tmp_path)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(path)
    assert str(path) in str(exc.value)


def test_a_missing_file_is_also_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(MissingCheckpointError):
        load_module(tmp_path / "nope.ckpt")
    with pytest.raises(FileNotFoundError):
        load_module(tmp_path / "nope.ckpt")
