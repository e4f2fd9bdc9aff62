"""`flowsci bench --suite smoke` end to end on each landed domain (the CI proof that the pipeline runs)."""

from __future__ import annotations

import json

import pytest

from flowsci.benchmarks.schema import validate_result
from flowsci.cli import main


# crystals runs its smoke suites in tests/domains/crystals/test_configs_and_bench.py
@pytest.mark.parametrize("domain,extra", [("proteins", "gemmi")])
def test_domain_smoke_suite_through_the_cli(tmp_path, domain, extra):
    pytest.importorskip(extra, reason=f"the [{domain}] extra is not installed")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--suite", "smoke", "--domains", domain, "--out", str(tmp_path), "--threads", "1"])
    assert exc.value.code == 0
    doc = json.loads((tmp_path / "smoke" / f"{domain}.json").read_text())
    validate_result(doc)
    assert doc["status"] == "ok" and doc["cells"]
    assert all(c["status"] == "ok" and c["nfe_counted"] == c["nfe"] for c in doc["cells"])
    assert (tmp_path / "smoke" / f"{domain}.md").is_file()
