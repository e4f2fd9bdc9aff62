import json
from importlib import resources

import pytest
import yaml

from flowsci.benchspec import SUITES
from flowsci.domains.shapes.benchmark import spec

CONFIGS = ["msdf_procedural.yaml", "msdf_paper.yaml", "msdf_pybullet.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_dimensions_are_consistent(name):
    cfg = yaml.safe_load(resources.files("flowsci.configs").joinpath("shapes", name).read_text())
    net = cfg["model"]["init_args"]["net"]["init_args"]
    data = cfg["data"]["init_args"]
    assert net["dim"] == 4 + data["k"] ** 3
    drop = cfg["model"]["init_args"].get("cond_dropout")
    if net["num_classes"]:
        assert drop["init_args"]["null_label"] == net["num_classes"]
        assert data["source"] == "procedural"
    else:
        assert drop is None


@pytest.mark.parametrize("suite", SUITES)
def test_spec_builds_for_every_suite(suite):
    s = spec(suite)
    names = [m.name for m in s.methods]
    assert {"msdf", "msdf-cfg2", "msdf-fit"} <= set(names)
    assert s.primary_metric == "1nna_cd" and s.noise_floor
    if suite != "smoke":
        assert {"grid-sdf", "pointcloud"} <= set(names)
        assert {c.nfe for c in s.cells() if c.method == "msdf"} == {5, 10, 20, 50}


def test_unknown_suite():
    with pytest.raises(ValueError):
        spec("huge")


def test_quick_suite_has_a_few_step_reflow_row():
    s = spec("quick")
    reflow = s.method("msdf-reflow")
    assert reflow.init_from == "msdf" and reflow.fit is not None
    assert {c.nfe for c in s.cells() if c.method == "msdf-reflow"} == {1, 2}
    assert "init_from" in json.dumps(s.describe())
