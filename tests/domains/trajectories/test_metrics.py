"""Prediction metrics on data with known answers, the PDMS aggregate, evaluate and plot_scene."""

import numpy as np
import pytest

from flowsci.domains.trajectories.metrics import (
    collision_rate,
    comfort_ok,
    diversity,
    evaluate,
    kde_nll,
    min_ade_fde,
    miss_rate,
    pdm_score,
    plot_scene,
)
from flowsci.errors import InputError


def _straight(n=12, dx=1.0):
    return np.stack([np.arange(1, n + 1) * dx, np.zeros(n)], -1)


def test_min_ade_fde_known_answer_and_separate_minimisers():
    gt = _straight()[None]  # [1, 12, 2]
    a = gt[0] + np.array([0.0, 1.0])  # ADE 1, FDE 1
    b = gt[0].copy()
    b[:-1] += np.array([0.0, 2.0])  # ADE 2 * 11 / 12, FDE 0
    pred = np.stack([a, b])[None]
    ade, fde = min_ade_fde(pred, gt)
    assert ade == pytest.approx(min(1.0, 22 / 12))
    assert fde == pytest.approx(0.0)  # the FDE minimiser is the other sample


def test_miss_rate():
    gt = np.zeros((2, 12, 2))
    pred = np.zeros((2, 3, 12, 2))
    pred[1, :, -1] = [3.0, 0.0]
    assert miss_rate(pred, gt) == 0.5
    assert miss_rate(pred, gt, threshold=5.0) == 0.0


def test_collision_rate():
    pred = np.zeros((1, 4, 12, 2))
    pred[0, :2, :, 0] = 5.0  # samples 0, 1 far away
    nbr = np.zeros((1, 2, 12, 2))
    nbr[0, 0] = 0.05  # within 0.1 m of samples 2, 3
    nbr[0, 1, :, 0] = 5.0  # masked out: would hit samples 0, 1
    mask = np.array([[True, False]])
    assert collision_rate(pred, nbr, mask) == 0.5
    assert collision_rate(pred, nbr, np.array([[True, True]])) == 1.0
    assert collision_rate(pred, nbr, mask, radius=0.01) == 0.0


def test_diversity_two_points():
    pred = np.zeros((1, 2, 12, 2))
    pred[0, 1, :, 1] = 3.0
    apd, fpd = diversity(pred)
    assert apd == pytest.approx(3.0) and fpd == pytest.approx(3.0)


def test_kde_nll_prefers_the_truth():
    rng = np.random.default_rng(0)
    gt = np.zeros((3, 12, 2))
    near = rng.normal(0, 0.3, (3, 50, 12, 2))
    far = near + 2.0
    assert kde_nll(near, gt) < kde_nll(far, gt)
    same = np.zeros((1, 5, 12, 2))
    assert kde_nll(same, gt[:1]) == pytest.approx(20.0)  # degenerate KDE: the floor


def test_bad_shapes():
    with pytest.raises(InputError):
        min_ade_fde(np.zeros((2, 12, 2)), np.zeros((2, 12, 2)))
    with pytest.raises(InputError):
        min_ade_fde(np.zeros((2, 3, 12, 2)), np.zeros((3, 12, 2)))
    bad = np.zeros((1, 3, 12, 2))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError):
        min_ade_fde(bad, np.zeros((1, 12, 2)))


def test_pdm_score_formula():
    assert pdm_score(1, 1, 1, 1, 1) == pytest.approx(1.0)
    assert pdm_score(1, 1, 0, 1, 0.5) == pytest.approx((2 + 2.5) / 12)
    assert pdm_score([1, 0], [1, 1], [1, 1], [1, 1], [1, 1]) == pytest.approx(0.5)
    with pytest.raises(InputError):
        pdm_score([1, 1], 1, 1, 1, 1)
    with pytest.raises(InputError):
        pdm_score(1, 1, 1, 1, 1.5)


def test_comfort():
    t = np.arange(10) * 0.5
    cruise = np.stack([10.0 * t, np.zeros_like(t)], -1)
    assert comfort_ok(cruise, np.zeros_like(t), 0.5)
    brake = np.stack([10.0 * t - 4.0 * t**2, np.zeros_like(t)], -1)  # -8 m/s^2
    assert not comfort_ok(brake, np.zeros_like(t), 0.5)


def test_evaluate_and_plot(tmp_path):
    from flowsci.domains.trajectories import ConstantVelocity, reference

    ref = reference(400)
    sol = ConstantVelocity(25.0).sample(8, seed=0, max_agents=5)
    table = evaluate(sol, ref)
    assert list(table.index) == ["all"]
    assert table.loc["all", "agents"] == 5 and table.loc["all", "K"] == 8
    for col in ("minADE", "minFDE", "miss_rate_2m", "collision_rate", "APD", "FPD", "kde_nll"):
        assert np.isfinite(table.loc["all", col])
    arr = evaluate(sol.x.numpy(), sol.windows, kde=False)
    assert arr.loc["all", "minADE"] == pytest.approx(table.loc["all", "minADE"])
    with pytest.raises(InputError):
        evaluate(sol, reference(1).subset(slice(1, 1)))
    png = plot_scene(sol, None, tmp_path / "scene.png", title="cvm-s")
    assert png.read_bytes()[:4] == b"\x89PNG"
