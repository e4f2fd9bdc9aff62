"""Callbacks: EMA warm-up, the non-finite gradient stop, resumable checkpoints (intervals, end of fit, signals)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from flowsci.callbacks import EMA, ResumableCheckpoint, StopOnNonFiniteGradient, ema_decay
from flowsci.data import Toy2DDataModule, sample_toy
from flowsci.errors import NonFiniteError
from flowsci.module import FlowMatching
from flowsci.nets import MLP


def _trainer(tmp_path, steps, **kw):
    kw = {
        "max_steps": steps,
        "default_root_dir": tmp_path,
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "limit_val_batches": 0,
        **kw,
    }
    return pl.Trainer(**kw)


def _swd(a, b, n_proj=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(2, n_proj, generator=g)
    proj = proj / proj.norm(dim=0)
    pa, pb = (a @ proj).sort(0).values, (b @ proj).sort(0).values
    return ((pa - pb) ** 2).mean().sqrt().item()


class Regression(pl.LightningModule):
    """A linear model on a fixed random regression problem; ``nan_grad_at`` makes one step's gradient infinite."""

    def __init__(self, nan_grad_at: int | None = None, sleep: float = 0.0) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)
        self.nan_grad_at, self.sleep = nan_grad_at, sleep

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.lin(x) - y) ** 2).mean()
        if self.global_step == self.nan_grad_at:  # finite loss (0 is added), infinite gradient: d sqrt(u)/du at 0
            w = self.lin.weight
            loss = loss + torch.sqrt(w - w.detach()).sum()
        if self.sleep:
            time.sleep(self.sleep)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loader(n=80, batch=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return DataLoader(TensorDataset(x, x @ torch.arange(1.0, 5.0)[:, None]), batch_size=batch)


# ----------------------------------------------------------------------------------------------------- EMA
def test_ema_decay_ramps_up_to_the_final_decay():
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 90) == pytest.approx(0.91)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.999, 1, warmup=False) == 0.999
    left = 1.0  # weight of the initial parameters left after n updates: ~10 / (10 + n) instead of 0.999**n
    for n in range(1, 1000):
        left *= ema_decay(0.999, n)
    assert left < 0.02 < 0.999**1000


class _RawAndConstantEMA(pl.Callback):
    """Keeps the raw final weights and a constant-decay (no warm-up) EMA, for comparison. Must precede EMA."""

    def __init__(self, decay):
        self.decay, self.avg, self.raw = decay, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        if self.avg is None:
            self.avg = state
        else:
            for k, v in state.items():
                if v.is_floating_point():
                    self.avg[k].lerp_(v, 1 - self.decay)

    def on_train_end(self, trainer, pl_module):
        self.raw = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_short_run_ema_samples_are_no_worse_than_the_raw_weights(tmp_path):
    """300 steps on two moons: the warmed-up EMA samples as well as the raw weights; a constant 0.999 EMA does not."""
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = Toy2DDataModule("moons", num_train=4096, num_val=256, batch_size=256)
    model = FlowMatching(MLP(2, 128, 3))
    spy = _RawAndConstantEMA(0.999)
    _trainer(tmp_path, 300, callbacks=[spy, EMA(decay=0.999)]).fit(model, dm)
    ref = sample_toy("moons", 2000, seed=99)

    def swd_of(state):
        if state is not None:
            model.load_state_dict(state)
        return _swd(model.sample(2000, steps=20, solver="midpoint", seed=1).x, ref)

    ema_swd = swd_of(None)  # fit ends with the averaged weights in the module
    raw_swd, constant_swd = swd_of(spy.raw), swd_of(spy.avg)
    print(f"sliced W2 after 300 steps: EMA {ema_swd:.3f}, raw {raw_swd:.3f}, constant-decay EMA {constant_swd:.3f}")
    assert ema_swd <= 1.1 * raw_swd, (ema_swd, raw_swd)
    assert constant_swd > 1.5 * ema_swd, (constant_swd, ema_swd)  # the failure the warm-up removes


# ----------------------------------------------------------------------------------------------------- non-finite
def test_nonfinite_gradient_stops_before_the_step_and_keeps_the_last_checkpoint(tmp_path, capsys):
    pl.seed_everything(0)
    model = Regression(nan_grad_at=5)
    ckpt = ResumableCheckpoint(dirpath=tmp_path / "ck", every_n_steps=2, every_n_minutes=None)
    seen = {}

    class Snap(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen[trainer.global_step] = pl_module.lin.weight.detach().clone()

    trainer = _trainer(tmp_path, 50, callbacks=[Snap(), StopOnNonFiniteGradient(), ckpt])
    with pytest.raises(NonFiniteError, match=r"non-finite gradient at global step 5 .*lin\.weight"):
        trainer.fit(model, _loader())
    assert torch.isfinite(model.lin.weight).all()
    torch.testing.assert_close(model.lin.weight, seen[5])  # the optimiser did not step
    saved = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 4 and ckpt.last_step == 4
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert "last good checkpoint is" in capsys.readouterr().err


def test_checkpoint_with_nonfinite_weights_is_not_written(tmp_path):
    model = Regression()
    ckpt = ResumableCheckpoint(dirpath=tmp_path, every_n_steps=3, every_n_minutes=None)
    trainer = _trainer(tmp_path, 3, callbacks=[ckpt])
    trainer.fit(model, _loader())
    before = (tmp_path / "last.ckpt").read_bytes()
    with torch.no_grad():
        model.lin.weight.fill_(float("nan"))
    assert ckpt.save(trainer, model, "test") is None
    assert (tmp_path / "last.ckpt").read_bytes() == before


# ----------------------------------------------------------------------------------------------------- intervals
def test_last_ckpt_on_step_interval_and_when_max_steps_stops_mid_epoch(tmp_path):
    pl.seed_everything(0)
    saves = []

    class Record(ResumableCheckpoint):
        def save(self, trainer, pl_module, reason):
            saves.append((trainer.global_step, reason))
            return super().save(trainer, pl_module, reason)

    mc = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True, every_n_train_steps=5)
    trainer = _trainer(tmp_path, 15, callbacks=[EMA(0.9), Record(every_n_steps=4, every_n_minutes=None), mc])
    trainer.fit(Regression(), _loader())  # 10 batches per epoch: max_steps stops the second epoch at batch 5
    assert saves == [(4, "interval"), (8, "interval"), (12, "interval"), (15, "end of fit")]
    last = tmp_path / "ck" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 15
    assert not list((tmp_path / "ck").glob("last-v*.ckpt"))  # ModelCheckpoint writes the same last.ckpt
    assert oct(last.stat().st_mode & 0o777) == oct(0o666 & ~_umask())

    resumed = _trainer(tmp_path, 20, callbacks=[EMA(0.9), ResumableCheckpoint(every_n_minutes=None)])
    resumed.fit(Regression(), _loader(), ckpt_path=last)
    assert resumed.global_step == 20
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 20


def test_time_interval(tmp_path):
    ckpt = ResumableCheckpoint(dirpath=tmp_path, every_n_minutes=0.05 / 60)  # 50 ms
    _trainer(tmp_path, 6, callbacks=[ckpt]).fit(Regression(sleep=0.06), _loader())
    assert ckpt.last_step == 6 and (tmp_path / "last.ckpt").is_file()


def _umask():
    from flowsci.io import default_mode

    return 0o666 & ~default_mode()


# ----------------------------------------------------------------------------------------------------- signals
_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import pytorch_lightning as pl
    import torch
    sys.path.insert(0, {tests!r})
    from test_callbacks import Regression, _loader
    from flowsci.callbacks import EMA, ResumableCheckpoint

    class Ready(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 20:
                print("READY", flush=True)

    pl.seed_everything(0)
    ckpt = ResumableCheckpoint(dirpath={ckdir!r}, every_n_minutes=None)
    trainer = pl.Trainer(max_steps=100000, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir={ckdir!r},
                         callbacks=[EMA(0.99), Ready(), ckpt])
    trainer.fit(Regression(sleep=0.02), _loader())
    print(json.dumps({{"step": trainer.global_step, "signal": ckpt.interrupted_by, "path": str(ckpt.last_path)}}))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_saves_stops_cleanly_and_resumes_from_the_saved_step(tmp_path, signum):
    ckdir = tmp_path / "ck"
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(tests=str(Path(__file__).parent), ckdir=str(ckdir)))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "READY", (line, proc.stderr.read() if proc.poll() is not None else "")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["signal"] == int(signum) and result["path"] == str(ckdir / "last.ckpt")
    assert 20 <= result["step"] < 100000
    assert f"saved to {ckdir / 'last.ckpt'}" in err
    saved = torch.load(ckdir / "last.ckpt", weights_only=True)
    assert saved["global_step"] == result["step"]

    resumed = _trainer(tmp_path, result["step"] + 5, callbacks=[EMA(0.99)])
    model = Regression()
    resumed.fit(model, _loader(), ckpt_path=ckdir / "last.ckpt")
    assert resumed.global_step == result["step"] + 5
