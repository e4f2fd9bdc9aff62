"""The proteins diagnostics: path stability, sweeps, denoiser, training curve, pretrain, reflow and speed CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("tmtools", reason="proteins extra (tmtools) not installed")

from flowsci.checkpoint import save_module  # noqa: E402
from flowsci.domains.proteins import benchmark as B  # noqa: E402
from flowsci.domains.proteins import diagnostics as D  # noqa: E402

torch.set_num_threads(1)


class _Identity(torch.nn.Module):
    """Predicts x1-hat = x_t: exact at t = 1, and x_t's own geometry elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, mask=None, res_idx=None, x_sc=None):
        return x_t + 0 * self.w


def test_path_stability_quaternion_beats_matrix_near_pi():
    r = D.path_stability(n=4000)
    assert r["quaternion_nonfinite_frac"] == 0.0
    assert r["quaternion_max_err_rad"] < 1e-5
    assert r["matrix_max_err_rad"] > 1e-2 > 100 * r["quaternion_max_err_rad"]


def test_denoiser_vs_t_is_exact_for_an_identity_denoiser_at_t1():
    from flowsci.domains.proteins.data import bundled_backbones
    from flowsci.domains.proteins.flow import ReQFlow

    chains = bundled_backbones()[:4]
    rows = D.denoiser_vs_t(ReQFlow(net=_Identity()), chains, times=(0.5, 1.0), crop_length=50)
    assert [r["t"] for r in rows] == [0.5, 1.0]
    real = float(np.mean([np.linalg.norm(np.diff(c.ca[:50], axis=0), axis=-1).mean() for c in chains]))
    for r in rows:  # the data's CA-CA is measured on the first 50 residues of each chain
        assert abs(r["data_ca_ca_mean"] - 3.80) < 0.05 and abs(r["data_ca_ca_mean"] - real) < 0.05
        assert abs(r["pred_ca_ca_mean"] - r["x_t_ca_ca_mean"]) < 1e-4  # identity: x1-hat is x_t
    assert rows[1]["ca_error"] < 1e-4 and abs(rows[1]["pred_ca_ca_mean"] - rows[1]["data_ca_ca_mean"]) < 1e-4
    assert rows[0]["ca_error"] > 1.0  # at t = 0.5 half of the 10 A prior remains


def test_sampling_sweep_and_training_curve_cli_smoke(capsys, tmp_path):
    from flowsci.domains.proteins.flow import ReQFlow

    rows = D.sampling_sweep(ReQFlow(net=_Identity()), nfes=(2, 3), seeds=(0, 1), num=3, final_steps=("euler", "x1"))
    assert len(rows) == 8 and {(r["nfe"], r["seed"], r["final_step"]) for r in rows} == {
        (n, s, f) for n in (2, 3) for s in (0, 1) for f in ("euler", "x1")
    }
    # an identity denoiser never moves the prior: the samples are the 10 A Gaussian cloud, not chains
    assert all(r["ca_ca_valid"] < 0.1 and r["ca_ca_mean"] > 10.0 for r in rows)
    out = tmp_path / "curve.json"
    D.main(["curve", "--checkpoints", "2,3", "--nfe", "2", "--num", "3", "--json", str(out)])

    curve = json.loads(out.read_text())
    assert [r["train_steps"] for r in curve] == [2, 3] and all(r["nfe"] == 2 for r in curve)
    assert "| train_steps | nfe |" in capsys.readouterr().out


def test_pretrain_writes_a_small_checkpoint_that_pretrained_style_loading_reads(tmp_path, monkeypatch):
    from flowsci.domains.proteins.flow import ReQFlow

    monkeypatch.setitem(
        B._SIZES,
        "tiny-test",
        dict(B._SIZES["smoke"], reflow_nfe=(2, 4), reflow_steps=2),
    )
    out = tmp_path / "m.pt"
    meta = D.pretrain(str(out), suite="tiny-test", qflow_out=str(tmp_path / "q.pt"))
    assert meta["qflow_steps"] == 20 and meta["reflow"]["steps"] in (2, 4) and meta["parameters"] > 1e5
    assert set(meta["reflow"]["teacher_probe"]) == {2, 4}
    assert out.stat().st_size < 2e6
    model = ReQFlow.from_checkpoint(out)
    sol = model.sample(lengths=[20, 30], steps=2, seed=0)
    assert [len(b) for b in sol] == [20, 30] and np.isfinite(sol.x.numpy()).all()
    teacher = ReQFlow.from_checkpoint(tmp_path / "q.pt")
    pairs = zip(teacher.state_dict().values(), model.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # the reflow fine-tuning changed the weights
    with pytest.raises(FileNotFoundError, match="no shipped model"):
        ReQFlow.pretrained("no-such-model")


def test_real_reference_row_scores_real_chains_as_real():
    r = D.real_reference(num=3)
    assert r["num"] == 3.0 and r["ca_ca_valid"] > 0.9 and r["clash_free"] == 1.0 and r["peptide_break_rate"] == 0.0


def test_reflow_checkpoint_and_speed_cli_turn_a_saved_qflow_into_a_loadable_reqflow(tmp_path, capsys):
    from flowsci.domains.proteins.flow import ReQFlow
    from flowsci.domains.proteins.model import IPAFrameNet

    torch.manual_seed(0)
    teacher = ReQFlow(net=IPAFrameNet.tiny())
    save_module(teacher, str(tmp_path / "q.pt"), {"test": True})
    out = tmp_path / "r.pt"
    D.main(
        [
            "reflow",
            "--ckpt",
            str(tmp_path / "q.pt"),
            "--out",
            str(out),
            "--pairs",
            "4",
            "--nfe",
            "2,3",
            "--steps",
            "2",
            "--lengths",
            "12,16",
            "--max-coil",
            "1.0",
        ]
    )
    blob = torch.load(out, weights_only=True)
    assert blob["meta"]["pairs"]["generated"] == 4 and blob["meta"]["pairs"]["kept"] == 4
    assert set(blob["meta"]["teacher_probe"]) == {2, 3}  # several NFE: pairs at the teacher's best of them
    best = max(blob["meta"]["teacher_probe"].items(), key=lambda kv: (kv[1], -kv[0]))[0]
    assert blob["meta"]["reflow_steps"] == 2 and blob["meta"]["pairs"]["nfe_per_sample"] == best
    student = ReQFlow.from_checkpoint(out)
    pairs = zip(teacher.state_dict().values(), student.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # the fine-tuning moved the weights
    rows = D.sampling_speed(student, lengths=(10, 20), batch_sizes=(1, 2), steps=2, repeats=1)
    assert [(r["length"], r["batch"]) for r in rows] == [(10, 1), (10, 2), (20, 1), (20, 2)]
    assert all(r["s_per_backbone"] > 0 and r["ms_per_nfe"] == pytest.approx(500 * r["s_per_backbone"]) for r in rows)
    capsys.readouterr()
    D.main(["speed", "--ckpt", str(out), "--lengths", "10", "--batches", "1", "--nfe", "2"])
    assert "| length | batch | nfe | s_per_backbone | ms_per_nfe |" in capsys.readouterr().out


def test_long_curve_fine_tunes_with_the_length_aware_prior_and_scores_every_bucket(tmp_path, capsys):
    from flowsci.domains.proteins.flow import ReQFlow
    from flowsci.domains.proteins.model import IPAFrameNet

    torch.manual_seed(0)
    base = ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1))
    save_module(base, tmp_path / "base.pt", {})
    out = tmp_path / "long.pt"
    rows = D.long_curve(str(tmp_path / "base.pt"), checkpoints=(1,), per_bucket=1, out=str(out))
    assert [(r["train_steps"], r["bucket"]) for r in rows] == [
        (s, b) for s in (0, 1) for b in ("50-99", "100-149", "150-199", "200-250")
    ]
    assert all(r["num"] == 1 and 0 <= r["clash_free"] <= 1 and r["rg_ratio_median"] > 0 for r in rows)
    tuned = ReQFlow.from_checkpoint(out)
    assert tuned.trans_prior == "rg" and base.trans_prior == "fixed"
    pairs = zip(base.state_dict().values(), tuned.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # the fine-tuning changed the weights
    D.main(["buckets", "--ckpt", str(out), "--num", "1", "--nfe", "2"])
    assert "| seed | bucket | num | ca_ca_valid |" in capsys.readouterr().out


def test_long_curve_grows_the_trunk_without_changing_step_0_and_records_the_flags(tmp_path, capsys):
    from flowsci.checkpoint import read_checkpoint
    from flowsci.domains.proteins.flow import ReQFlow
    from flowsci.domains.proteins.model import IPAFrameNet

    torch.manual_seed(0)
    base = ReQFlow(net=IPAFrameNet(c_s=16, c_z=8, c_hidden=4, num_heads=2, num_blocks=1, relpos_k=8))
    save_module(base, tmp_path / "base.pt", {})
    plain = D.long_curve(str(tmp_path / "base.pt"), checkpoints=(1,), per_bucket=1)
    flags = [
        "--blocks",
        "2",
        "--relpos-k",
        "16",
        "--max-dist",
        "40",
        "--centroid",
        "--length-feats",
        "--rg-weight",
        "1",
        "--loss-chains",
        "4",
        "--grad-clip",
        "50",
        "--unroll",
        "0.5",
        "--unroll-steps",
        "2",
    ]
    out = tmp_path / "grown.pt"
    D.main(["long", "--ckpt", str(tmp_path / "base.pt"), "--checkpoints", "1", "--num", "1", "--out", str(out), *flags])
    capsys.readouterr()
    grown = ReQFlow.from_checkpoint(out)
    net = grown.net
    assert len(net.blocks) == 2 and net.relpos_k == 16 and net.max_dist == 40.0 and net.centroid_feats
    assert net.length_feats
    assert grown.rg_weight == 1.0 and grown.trans_prior == "rg" and grown.loss_chains == 4
    assert (grown.unroll_prob, grown.unroll_steps, grown.unroll_nfe) == (0.5, 2, 10)
    meta = read_checkpoint(out)["meta"]
    assert meta["parameters"] > sum(p.numel() for p in base.net.parameters())
    for flag in (
        "--blocks 2",
        "--relpos-k 16",
        "--max-dist 40.0",
        "--rg-weight 1.0",
        "--loss-chains 4",
        "--grad-clip 50.0",
        "--unroll 0.5",
        "--unroll-steps 2",
        "--centroid",
        "--length-feats",
    ):
        assert flag in meta["command"]
    # step 0 is the same function: the grown model's samples score exactly as the base model's
    kw = {"num_blocks": 2, "centroid_feats": True, "length_feats": True, "seeds": (0, 3)}
    rows = D.long_curve(str(tmp_path / "base.pt"), checkpoints=(1,), per_bucket=1, **kw)
    assert [r["seed"] for r in rows] == [0] * 4 + [3] * 4 + [0] * 4 + [3] * 4
    assert [r["rg_ratio_median"] for r in rows[:4]] != [r["rg_ratio_median"] for r in rows[4:8]]  # other prior draws
    for a, b in zip(plain[:4], rows[:4], strict=True):
        assert a["train_steps"] == b["train_steps"] == 0 and b["parameters"] > a["parameters"]
        assert a["rg_ratio_median"] == pytest.approx(b["rg_ratio_median"], rel=1e-4)
        assert a["num_ca_clashes_3A"] == b["num_ca_clashes_3A"]
