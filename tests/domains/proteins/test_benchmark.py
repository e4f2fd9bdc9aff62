"""The proteins BenchmarkSpec: construction, grid, sampler plumbing and the rotation-path stability check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("tmtools", reason="proteins extra (tmtools) not installed")

from flowsci.benchspec import BenchmarkSpec, SampleRequest  # noqa: E402
from flowsci.domains.proteins import benchmark as B  # noqa: E402
from flowsci.domains.proteins.data import Backbone  # noqa: E402
from flowsci.domains.proteins.metrics import evaluate  # noqa: E402

torch.set_num_threads(1)


def test_spec_for_every_suite():
    for suite in ("smoke", "quick", "full"):
        s = B.spec(suite)
        assert isinstance(s, BenchmarkSpec) and s.name == "proteins"
        names = [m.name for m in s.methods]
        igso3 = [] if suite == "quick" else ["qflow-igso3"]  # quick drops the third training run
        assert names == ["qflow", "qflow-x1", "qflow-linear", "reqflow", "reqflow-restraint", *igso3, "frameflow-path"]
        assert s.method("reqflow-restraint").weights_of == "reqflow"
        assert [m.name for m in s.methods if m.baseline] == ["frameflow-path"]
        # the reflow teacher NFE (or the candidates it is chosen from) is measured for the teacher too
        pair_nfe = B._SIZES[suite]["reflow_nfe"]
        assert set([pair_nfe] if isinstance(pair_nfe, int) else pair_nfe) <= set(s.nfe_grid)
    quick = B.spec("quick")
    cells = {m: [c.nfe for c in quick.cells() if c.method == m] for m in names}
    assert cells["qflow"] == cells["frameflow-path"] == [10, 20, 50, 100]
    assert cells["reqflow"] == [10, 20, 50] and cells["reqflow-restraint"] == [10]
    assert cells["qflow-x1"] == cells["qflow-linear"] == [10, 100]
    x1 = quick.methods[1].build(None)
    assert x1.final_step == "x1" and quick.methods[0].build(None).final_step == "euler"


def test_sample_lengths_cycle():
    assert B.sample_lengths(7) == [60, 80, 100, 60, 80, 100, 60]


def test_sampler_and_metrics_plumbing_on_untrained_model():
    s = B.spec("smoke")
    dm = s.datamodule()
    ref = s.reference_data(dm, s.num_samples, 0)
    assert len(ref["val"]) == 18 and len(ref["train_subset"]) == 40
    model = s.methods[0].build(dm)
    sol = s.sample(model, SampleRequest(dm, ref, 3, "euler", 2, 2, 0))
    samples = s.postprocess(sol)
    assert [len(b) for b in samples] == [60, 80, 100] and sol.nfe == 2
    geo = s.metrics[0].fn(samples, ref)
    assert set(geo) == set(B._GEOMETRY_KEYS) and geo["finite"] == 1.0
    nan = s.metrics[1].fn([Backbone(torch.full((5, 4, 3), float("nan")).numpy())], ref)
    assert all(v != v for v in nan.values())  # all NaN, no crash
    assert evaluate([]).summary["num_samples"] == 0.0


def test_path_stability_quaternion_beats_matrix_near_pi():
    r = B.path_stability(n=4000)
    assert r["quaternion_nonfinite_frac"] == 0.0
    assert r["quaternion_max_err_rad"] < 1e-5
    assert r["matrix_max_err_rad"] > 1e-2 > 100 * r["quaternion_max_err_rad"]


def test_teacher_best_nfe_scores_each_candidate_and_breaks_ties_by_fewest_steps():
    from flowsci.domains.proteins.data import bundled_backbones
    from flowsci.domains.proteins.flow import ANG_PER_NM, ReQFlow

    chain = next(c for c in bundled_backbones() if len(c) >= 100)
    q, tr = chain.frames()
    target = torch.cat([tr / ANG_PER_NM, q], -1)[None].double()

    class Oracle(torch.nn.Module):  # always predicts the real chain: every NFE gives the same backbones
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

        def forward(self, x_t, t, mask=None, res_idx=None, x_sc=None):
            return target[:, : x_t.shape[1]].expand(x_t.shape[0], -1, -1) + 0 * self.w

    model = ReQFlow(net=Oracle()).double()
    best, scores = B.teacher_best_nfe(model, (4, 2, 3), num=3)
    crops = [Backbone(chain.coords[:n]) for n in B.sample_lengths(3)]  # CA = frame origin: same CA-CA
    expected = evaluate(crops, diversity_per_length=False).summary["ca_ca_valid"]
    assert set(scores) == {2, 3, 4} and best == 2
    assert all(abs(v - expected) < 1e-3 for v in scores.values()) and expected > 0.8


class _Identity(torch.nn.Module):
    """Predicts x1-hat = x_t: exact at t = 1, and x_t's own geometry elsewhere."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, mask=None, res_idx=None, x_sc=None):
        return x_t + 0 * self.w


def test_denoiser_vs_t_is_exact_for_an_identity_denoiser_at_t1():
    from flowsci.domains.proteins.data import bundled_backbones
    from flowsci.domains.proteins.flow import ReQFlow

    chains = bundled_backbones()[:4]
    rows = B.denoiser_vs_t(ReQFlow(net=_Identity()), chains, times=(0.5, 1.0), crop_length=50)
    assert [r["t"] for r in rows] == [0.5, 1.0]
    real = float(np.mean([np.linalg.norm(np.diff(c.ca[:50], axis=0), axis=-1).mean() for c in chains]))
    for r in rows:  # the data's CA-CA is measured on the first 50 residues of each chain
        assert abs(r["data_ca_ca_mean"] - 3.80) < 0.05 and abs(r["data_ca_ca_mean"] - real) < 0.05
        assert abs(r["pred_ca_ca_mean"] - r["x_t_ca_ca_mean"]) < 1e-4  # identity: x1-hat is x_t
    assert rows[1]["ca_error"] < 1e-4 and abs(rows[1]["pred_ca_ca_mean"] - rows[1]["data_ca_ca_mean"]) < 1e-4
    assert rows[0]["ca_error"] > 1.0  # at t = 0.5 half of the 10 A prior remains


def test_sampling_sweep_and_training_curve_cli_smoke(capsys, tmp_path):
    from flowsci.domains.proteins.flow import ReQFlow

    rows = B.sampling_sweep(ReQFlow(net=_Identity()), nfes=(2, 3), seeds=(0, 1), num=3, final_steps=("euler", "x1"))
    assert len(rows) == 8 and {(r["nfe"], r["seed"], r["final_step"]) for r in rows} == {
        (n, s, f) for n in (2, 3) for s in (0, 1) for f in ("euler", "x1")
    }
    # an identity denoiser never moves the prior: the samples are the 10 A Gaussian cloud, not chains
    assert all(r["ca_ca_valid"] < 0.1 and r["ca_ca_mean"] > 10.0 for r in rows)
    out = tmp_path / "curve.json"
    B.main(["curve", "--checkpoints", "2,3", "--nfe", "2", "--num", "3", "--json", str(out)])
    import json

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
    meta = B.pretrain(str(out), suite="tiny-test", qflow_out=str(tmp_path / "q.pt"))
    assert meta["qflow_steps"] == 20 and meta["reflow"]["steps"] in (2, 4) and meta["parameters"] > 1e5
    assert set(meta["reflow"]["teacher_probe"]) == {2, 4}
    assert out.stat().st_size < 2e6
    model = ReQFlow.from_checkpoint(out)
    sol = model.sample(lengths=[20, 30], steps=2, seed=0)
    assert [len(b) for b in sol] == [20, 30] and np.isfinite(sol.x.numpy()).all()
    teacher = ReQFlow.from_checkpoint(tmp_path / "q.pt")
    pairs = zip(teacher.state_dict().values(), model.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # the reflow fine-tuning changed the weights
    with pytest.raises(FileNotFoundError, match="pretrain"):
        ReQFlow.pretrained("no-such-model")


def test_real_reference_row_scores_real_chains_as_real():
    r = B.real_reference(num=3)
    assert r["num"] == 3.0 and r["ca_ca_valid"] > 0.9 and r["clash_free"] == 1.0 and r["peptide_break_rate"] == 0.0


def test_reflow_checkpoint_and_speed_cli_turn_a_saved_qflow_into_a_loadable_reqflow(tmp_path, capsys):
    from flowsci.domains.proteins.flow import ReQFlow
    from flowsci.domains.proteins.model import IPAFrameNet

    torch.manual_seed(0)
    teacher = ReQFlow(net=IPAFrameNet.tiny())
    B._save_small(teacher, str(tmp_path / "q.pt"), {"test": True})
    out = tmp_path / "r.pt"
    B.main(
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
    blob = torch.load(out, weights_only=False)
    assert blob["meta"]["pairs"]["generated"] == 4 and blob["meta"]["pairs"]["kept"] == 4
    assert set(blob["meta"]["teacher_probe"]) == {2, 3}  # several NFE: pairs at the teacher's best of them
    best = max(blob["meta"]["teacher_probe"].items(), key=lambda kv: (kv[1], -kv[0]))[0]
    assert blob["meta"]["reflow_steps"] == 2 and blob["meta"]["pairs"]["nfe_per_sample"] == best
    student = ReQFlow.from_checkpoint(out)
    pairs = zip(teacher.state_dict().values(), student.state_dict().values(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)  # the fine-tuning moved the weights
    rows = B.sampling_speed(student, lengths=(10, 20), batch_sizes=(1, 2), steps=2, repeats=1)
    assert [(r["length"], r["batch"]) for r in rows] == [(10, 1), (10, 2), (20, 1), (20, 2)]
    assert all(r["s_per_backbone"] > 0 and r["ms_per_nfe"] == pytest.approx(500 * r["s_per_backbone"]) for r in rows)
    capsys.readouterr()
    B.main(["speed", "--ckpt", str(out), "--lengths", "10", "--batches", "1", "--nfe", "2"])
    assert "| length | batch | nfe | s_per_backbone | ms_per_nfe |" in capsys.readouterr().out
