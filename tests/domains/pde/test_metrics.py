import math

import numpy as np
import pytest
import torch

from flowsci.domains.pde.metrics import (
    control_cost,
    evaluate,
    frmse,
    plot_fields,
    rel_l2,
    rel_l2_per_step,
    shock_rmse,
    simulation_metrics,
)
from flowsci.errors import InputError


def test_rel_l2_known_values():
    true = torch.ones(2, 3, 4)
    pred = true.clone()
    pred[0] *= 1.5  # 50 % error on the first sample, none on the second
    assert rel_l2(pred, true) == pytest.approx(0.25)
    np.testing.assert_allclose(rel_l2_per_step(pred, true), [0.25, 0.25, 0.25])
    with pytest.raises(InputError):
        rel_l2(pred[:, :2], true)


def test_frmse_puts_a_single_mode_in_its_band():
    nx = 64
    x = torch.arange(nx, dtype=torch.float64) / nx
    true = torch.zeros(3, 2, nx, dtype=torch.float64)
    for k, band in ((2, "low"), (7, "mid"), (20, "high")):
        pred = true + 0.1 * torch.cos(2 * math.pi * k * x)
        out = frmse(pred, true)
        # |rfft| of 0.1 cos(2 pi k x) is 0.1 * nx / 2 at mode k; /nx => 0.05, averaged over the band's modes
        width = {"low": 4, "mid": 8, "high": nx // 2 + 1 - 12}[band]
        assert out[f"frmse_{band}"] == pytest.approx(0.05 / width)
        assert sum(v for key, v in out.items() if key != f"frmse_{band}") == pytest.approx(0.0, abs=1e-15)


def test_shock_rmse_looks_at_steep_points_only():
    x = torch.linspace(0, 1, 100, dtype=torch.float64)
    true = torch.tanh((x - 0.5) / 0.01)[None, None].repeat(1, 2, 1)
    pred = true.clone()
    pred[..., :20] += 1.0  # error far from the front
    assert shock_rmse(pred, true) == 0.0
    pred = true.clone()
    pred[..., 48:52] += 1.0
    assert shock_rmse(pred, true) > 0.5


def test_control_cost_closed_form():
    u = torch.zeros(2, 3, 4, dtype=torch.float64)
    u[:, -1] = 1.0
    f = torch.full((2, 2, 4), 2.0, dtype=torch.float64)
    out = control_cost(u, f, torch.zeros(2, 4), dt=0.5, dx=0.25, control_weight=0.1)
    torch.testing.assert_close(out["J"], torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(out["energy"], torch.full((2,), 4.0 * 8 * 0.125, dtype=torch.float64))
    torch.testing.assert_close(out["objective"], 1 + 0.1 * out["energy"])


def test_evaluate_and_plot(tmp_path, small_burgers):
    ds = small_burgers.copy(deep=True)
    ds["u_solver"] = ds["u"].copy()
    ds["u"] = ds["u"] * 1.1
    table = evaluate(ds, small_burgers)
    values = dict(zip(table.metric, table.value, strict=True))
    assert values["rel_l2"] == pytest.approx(0.1, rel=1e-5)
    assert values["final_rel_l2"] == pytest.approx(0.1, rel=1e-5)
    same = evaluate(small_burgers, small_burgers)  # no u_solver: the reference is the truth
    assert float(same.set_index("metric").loc["mse", "value"]) == 0.0
    with pytest.raises(InputError, match="reference"):
        evaluate(small_burgers.drop_vars("f"))
    png = plot_fields(ds, tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert simulation_metrics(small_burgers.u, small_burgers.u)["rel_l2"] == 0.0
