"""`benchmark.seed_study`: training-seed means, standard errors and paired differences."""

import math

import pytest
import torch


def test_paired_difference_on_known_numbers():
    from flowsci.benchspec import mean_se
    from flowsci.domains.crystals.benchmark import paired_difference

    a, b = [0.62, 0.58, 0.66], [0.55, 0.57, 0.50]  # differences 0.07, 0.01, 0.16
    mean, se = paired_difference(a, b)
    assert mean == pytest.approx(0.08)
    assert se == pytest.approx(math.sqrt(0.0114 / 2) / math.sqrt(3))  # squared deviations sum to 0.0114
    # a seed effect shared by both methods cancels in the paired SE but not in the SEs of the two means
    shared = [0.0, 0.3, -0.2]
    a2 = [x + s for x, s in zip(a, shared, strict=True)]
    b2 = [x + s for x, s in zip(b, shared, strict=True)]
    assert paired_difference(a2, b2) == pytest.approx((mean, se))
    unpaired = math.hypot(mean_se(a2)[1], mean_se(b2)[1])
    assert unpaired > 2 * se
    with pytest.raises(ValueError, match="shapes"):
        paired_difference([1.0, 2.0], [1.0])


def test_seed_study_smoke_trains_per_seed_and_reuses_the_cache(tmp_path):
    from flowsci.checkpoint import read_checkpoint
    from flowsci.domains.crystals.benchmark import seed_study

    torch.set_num_threads(1)
    kw = dict(methods=("crysbfn", "fm-torus"), seeds=(0, 1), nfe=2, num=4, suite="smoke", cache_dir=tmp_path)
    out = seed_study(**kw)
    per_seed, summary, paired = out["per_seed"], out["summary"], out["paired"]
    assert list(zip(per_seed.method, per_seed.seed, strict=True)) == [
        ("crysbfn", 0),
        ("fm-torus", 0),
        ("crysbfn", 1),
        ("fm-torus", 1),
    ]
    assert (per_seed.match_rate <= per_seed.match_rate_ungated).all()
    assert per_seed[["match_rate", "match_rate_ungated", "valid"]].apply(lambda c: c.between(0, 1)).all().all()
    for (method, metric), row in summary.set_index(["method", "metric"]).iterrows():
        values = per_seed[per_seed.method == method][metric]
        assert row["n"] == 2
        assert row["mean"] == pytest.approx(values.mean(), nan_ok=True)
    diffs = (
        per_seed[per_seed.method == "crysbfn"].match_rate.to_numpy()
        - per_seed[per_seed.method == "fm-torus"].match_rate.to_numpy()
    )
    row = paired.set_index("metric").loc["match_rate"]
    assert row["mean"] == pytest.approx(diffs.mean())
    assert row["se"] == pytest.approx(abs(diffs[0] - diffs[1]) / 2)  # n = 2: sd/√2 = |d0 − d1|/2
    # one cache file per (method, seed), and the seed changes the trained weights
    files = sorted(tmp_path.glob("crysbfn-*.pt"))
    assert len(files) == 2 and len(list(tmp_path.glob("fm-torus-*.pt"))) == 2
    w0, w1 = (read_checkpoint(f)["state_dict"] for f in files)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0 if w0[k].is_floating_point())
    # a second call loads the cached weights and scores the same crystals the same way
    again = seed_study(**kw)["per_seed"]
    cols = ["method", "seed", "match_rate", "match_rate_ungated", "valid"]
    assert again[cols].equals(per_seed[cols])


def test_seed_study_rejects_bad_arguments():
    from flowsci.domains.crystals.benchmark import seed_study

    with pytest.raises(ValueError, match="exceeds"):
        seed_study(num=17, suite="smoke")
    with pytest.raises(ValueError, match="unknown dataset"):
        seed_study(dataset="mp_20", suite="smoke")
