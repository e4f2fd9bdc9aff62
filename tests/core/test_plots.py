"""flowsci.plots: panel validation and atomic PNG output."""

import numpy as np
import pytest

from flowsci.plots import Panel, save_panels


def test_panel_rejects_bad_specs_with_the_panel_named():
    with pytest.raises(ValueError, match="'a'.*kind"):
        Panel("a", {"x": [1.0]}, kind="violin")
    with pytest.raises(ValueError, match="'b'.*no series"):
        Panel("b", {})
    with pytest.raises(ValueError, match=r"'c'.*\[N, 2\]"):
        Panel("c", {"x": np.zeros((4, 3))}, kind="scatter")
    with pytest.raises(ValueError, match="'d'.*one value per category"):
        Panel("d", {"x": [0.1, 0.2]}, kind="bar", categories=("h", "e", "c"))


def test_save_panels_writes_one_png_atomically_and_skips_non_finite_values(tmp_path):
    rng = np.random.default_rng(0)
    panels = [
        Panel("hist", {"gen": np.r_[rng.normal(size=200), np.nan, np.inf], "ref": rng.normal(size=300)}, xlabel="x"),
        Panel("scatter", {"gen": rng.normal(size=(20, 2))}, kind="scatter", curve=("y=x", [-2, 2], [-2, 2])),
        Panel("bar", {"gen": [0.5, 0.2, 0.3], "ref": [0.4, 0.3, 0.3]}, kind="bar", categories=("H", "E", "C")),
        Panel("constant", {"gen": np.ones(5)}),  # zero-width range still gets bins
    ]
    out = save_panels(panels, tmp_path / "sub" / "f.png", title="t", ncols=2)
    assert out == tmp_path / "sub" / "f.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["f.png"]
    with pytest.raises(ValueError, match="no panels"):
        save_panels([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
