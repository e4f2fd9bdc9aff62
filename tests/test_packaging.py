"""The wheel case: flowsci imports from an installed wheel (site-packages), configs included."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_installs_and_imports_outside_the_source_tree(tmp_path):
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheel_dir),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheel_dir.glob("flowsci-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], check=True
    )
    code = (
        "import flowsci, flowsci.domains, flowsci.benchmarks, flowsci.module\n"
        "from flowsci.cli.fit import resolve_config\n"
        "print(flowsci.__file__); print(resolve_config('toy2d/fm.yaml'))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    mod_file, cfg = out.stdout.split()
    assert mod_file.startswith(str(target)), mod_file
    assert cfg.startswith(str(target)) and cfg.endswith("fm.yaml")
