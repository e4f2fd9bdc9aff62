"""The proteins BenchmarkSpec: construction, grid, sampler plumbing and the rotation-path stability check."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("tmtools", reason="proteins extra (tmtools) not installed")

from flowsci.benchspec import BenchmarkSpec, SampleRequest  # noqa: E402
from flowsci.domains.proteins import benchmark as B  # noqa: E402
from flowsci.domains.proteins import metrics as M  # noqa: E402
from flowsci.domains.proteins.data import Backbone  # noqa: E402
from flowsci.domains.proteins.metrics import evaluate  # noqa: E402

torch.set_num_threads(1)


def test_spec_for_every_suite():
    for suite in ("smoke", "quick", "full"):
        s = B.spec(suite)
        assert isinstance(s, BenchmarkSpec) and s.name == "proteins"
        names = [m.name for m in s.methods]
        igso3 = [] if suite == "quick" else ["qflow-igso3"]  # quick drops the third training run
        assert names == [
            "qflow",
            "qflow-x1",
            "qflow-linear",
            "reqflow",
            "reqflow-restraint",
            "reqflow-long",
            "reqflow-shipped",
            "reqflow-long-speed",
            *igso3,
            "frameflow-path",
        ]
        assert s.method("reqflow-restraint").weights_of == "reqflow"
        long = s.method("reqflow-long")
        assert long.init_from == "reqflow" and long.train_steps == B._SIZES[suite]["long_steps"]
        assert long.build(None).trans_prior == "rg" and s.method("reqflow").build(None).trans_prior == "fixed"
        assert long.fit.keywords["unroll"] == (0.25, 2) and long.num_samples == B._SIZES[suite]["long_samples"]
        shipped = s.method("reqflow-shipped")  # scores the shipped checkpoint: no training in the suite
        assert s.train_steps_of(shipped) == 0 and shipped.num_samples == long.num_samples
        assert shipped.build(None).unroll_prob == 0.25 and shipped.sample is long.sample
        speed = s.method("reqflow-long-speed")  # times the reqflow-long weights: no training of its own
        assert speed.weights_of == "reqflow-long" and speed.build(None).trans_prior == "rg"
        assert s.trained_by(speed).name == "reqflow-long"
        assert speed.sample.keywords["passes"] == (1 if suite == "smoke" else 2)  # smoke: plumbing, one pass
        assert [m.name for m in s.methods if m.baseline] == ["frameflow-path"]
        # the reflow teacher NFE (or the candidates it is chosen from) is measured for the teacher too
        pair_nfe = B._SIZES[suite]["reflow_nfe"]
        assert set([pair_nfe] if isinstance(pair_nfe, int) else pair_nfe) <= set(s.nfe_grid)
    quick = B.spec("quick")
    cells = {m: [c.nfe for c in quick.cells() if c.method == m] for m in names}
    assert cells["qflow"] == cells["frameflow-path"] == [10, 20, 50, 100]
    assert cells["reqflow"] == [10, 20, 50] and cells["reqflow-restraint"] == [10] == cells["reqflow-long"]
    assert cells["reqflow-long-speed"] == cells["reqflow-shipped"] == [10]
    assert B.bucket_lengths(quick.num_samples_of(quick.method("reqflow-long")))[7::8] == [95, 147, 198, 250]
    assert cells["qflow-x1"] == cells["qflow-linear"] == [10, 100]
    x1 = quick.methods[1].build(None)
    assert x1.final_step == "x1" and quick.methods[0].build(None).final_step == "euler"


def test_sample_lengths_cycle():
    assert B.sample_lengths(7) == [60, 80, 100, 60, 80, 100, 60]


def test_bucket_lengths_cover_50_to_250_evenly():
    assert B.bucket_lengths(12) == [50, 68, 86, 105, 123, 141, 159, 177, 195, 214, 232, 250]
    assert B.bucket_lengths(3, 100, 149) == [100, 124, 149] and B.bucket_lengths(1) == [50]
    lengths = B.bucket_lengths(12)
    for lo, hi in ((50, 99), (100, 149), (150, 199), (200, 250)):
        assert sum(lo <= n <= hi for n in lengths) == 3


def test_long_datamodule_gives_whole_chains_in_length_aware_batches():
    dm = B.long_datamodule()
    dm.setup("fit")
    loader = dm.train_dataloader()
    full = sorted(len(b) for b in dm.train_backbones)
    seen = []
    for batch in loader:
        n = batch["mask"].shape
        assert n[0] <= 8 and (n[0] == 1 or n[0] * n[1] ** 2 <= B.LONG_BATCH_PAIRS)
        seen += [int(v) for v in batch["mask"].sum(-1)]
    assert sorted(seen) == full and max(full) > 240  # every chain once per epoch, uncropped


def test_bucket_metric_reports_each_length_bucket_and_nan_for_empty_ones():
    from flowsci.domains.proteins.data import bundled_backbones

    s = B.spec("smoke")
    metric = next(m for m in s.metrics if m.name == "bucket")
    chains = [c for c in bundled_backbones() if 50 <= len(c) <= 149][:4]
    out = metric.fn(chains, None)
    assert set(out) == {f"{k}@{b}" for b in ("50-99", "100-149", "150-199", "200-250") for k in B._BUCKET_KEYS}
    by = evaluate(chains, diversity_per_length=False).by_length
    for b in ("50-99", "100-149"):
        if b in by:
            assert out[f"clash_free@{b}"] == by[b]["clash_free"] == 1.0
            assert out[f"rg_ratio_median@{b}"] == pytest.approx(by[b]["rg_ratio_median"])
    assert all(out[f"{k}@200-250"] != out[f"{k}@200-250"] for k in B._BUCKET_KEYS)  # no chain there: NaN
    assert metric.direction("clash_free@50-99") and not metric.direction("rg_ratio_median@50-99")


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
    # the table leaves out what is constant for idealised backbones and counts close CA pairs per chain
    assert not set(M.CONSTANT_WHEN_IDEALISED) & set(geo) and geo["num_ca_clashes_3A"] >= 0.0
    nan = next(m for m in s.metrics if m.name == "set").fn([Backbone(torch.full((5, 4, 3), float("nan")).numpy())], ref)
    assert all(v != v for v in nan.values())  # all NaN, no crash
    assert evaluate([]).summary["num_samples"] == 0.0
    # the runner's warm-up draw repeats the cell's seed on purpose: the cell sampler does not warn, a user call does
    import warnings

    from flowsci.domains.proteins.flow import RepeatedSeedWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s.sample(model, SampleRequest(dm, ref, 3, "euler", 2, 2, 0))
        assert not [w for w in caught if issubclass(w.category, RepeatedSeedWarning)]
        model.sample(lengths=[60], steps=2, seed=0)
        assert [w for w in caught if issubclass(w.category, RepeatedSeedWarning)]


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


class _ClockedSampler:
    """A stand-in model whose ``sample`` advances a fake clock by a known cost: 1 s per call plus 0.01 s per padded
    residue (chains × longest length) of each batch it would run."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.now, self.calls = 0.0, []

    def clock(self) -> float:
        return self.now

    def sample(self, lengths, steps, seed, solver, progress, bucket=True):
        from flowsci.domains.proteins.flow import CPU_BATCH_PAIRS, length_buckets

        groups = length_buckets(lengths, CPU_BATCH_PAIRS) if bucket else [list(range(len(lengths)))]
        self.now += 1.0 + 0.01 * sum(len(g) * max(lengths[i] for i in g) for g in groups)
        self.calls.append((tuple(lengths), bucket))
        return f"samples of {lengths}"


def test_mixed_length_speed_accounts_each_variant_in_mirrored_order():
    fake = _ClockedSampler()
    lengths = [40, 200, 40, 100]
    sol, speed = B.mixed_length_speed(fake, lengths, steps=3, seed=0, passes=2, clock=fake.clock)
    assert sol == f"samples of {lengths}" and set(speed) == set(B._SPEED_KEYS)
    bucketed, padded = (tuple(lengths), True), (tuple(lengths), False)
    singles = [((40, 40), True), ((200,), True), ((100,), True)]  # one call per distinct length, first-seen order
    assert fake.calls == [bucketed, *singles, padded, padded, *singles, bucketed]  # A B C C B A
    # costs: bucketed = one call, buckets {200}, {100}, {40, 40}; per length = three calls; padded = 4 x 200
    cost = {"bucketed": 1 + 0.01 * (200 + 100 + 80), "per_length": 3 + 0.01 * 380, "padded": 1 + 0.01 * 800}
    for k, c in cost.items():
        assert speed[f"s_per_backbone_{k}"] == pytest.approx(c / 4)  # both passes / (2 passes x 4 backbones)
    assert speed["speedup_vs_per_length"] == pytest.approx(cost["per_length"] / cost["bucketed"])
    assert speed["speedup_vs_padded"] == pytest.approx(cost["padded"] / cost["bucketed"])
    with pytest.raises(ValueError, match="passes"):
        B.mixed_length_speed(fake, lengths, steps=3, seed=0, passes=0)


def test_speed_cell_returns_the_bucketed_chains_and_reports_timings_in_the_set_metric():
    s = B.spec("smoke")
    dm = s.datamodule()
    ref = s.reference_data(dm, s.num_samples, 0)
    torch.manual_seed(0)
    method = s.method("reqflow-long-speed")
    model = method.build(dm)
    sol = method.sample(model, SampleRequest(dm, ref, 3, "euler", 2, 2, 0))
    from flowsci.domains.proteins.flow import RepeatedSeedWarning

    with pytest.warns(RepeatedSeedWarning):  # the cell's own calls were silenced, this repeat is a user's
        direct = model.sample(lengths=B.bucket_lengths(3), steps=2, seed=0)
    assert [len(b) for b in sol] == [50, 150, 250] and sol.extras["batches"] == direct.extras["batches"]
    assert torch.equal(sol.x, direct.x)  # the returned samples are the bucketed call's: same chains as a plain call
    samples = s.postprocess(sol)
    out = next(m for m in s.metrics if m.name == "set").fn(samples, ref)
    assert {k: out[k] for k in B._SPEED_KEYS} == sol.extras["speed"]
    assert all(out[f"s_per_backbone_{k}"] > 0 for k in B.SPEED_VARIANTS)
    assert out["speedup_vs_padded"] == pytest.approx(out["s_per_backbone_padded"] / out["s_per_backbone_bucketed"])
    plain = s.postprocess(s.sample(model, SampleRequest(dm, ref, 3, "euler", 2, 2, 0)))
    assert not set(B._SPEED_KEYS) & set(next(m for m in s.metrics if m.name == "set").fn(plain, ref))
