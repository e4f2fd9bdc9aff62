"""flowsci.errors: one error type per failure, with the file or argument and the extra to install."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from flowsci.errors import (
    CheckpointError,
    InputError,
    MissingCheckpointError,
    MissingExtraError,
    check_finite,
    require,
    require_extra,
)


def test_input_error_names_its_source_and_survives_pickling() -> None:
    import pickle

    err = InputError("data.csv", "row 3: NaN coordinate")
    assert str(err) == "data.csv: row 3: NaN coordinate" and isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert (back.source, back.problem) == ("data.csv", "row 3: NaN coordinate")
    assert issubclass(MissingCheckpointError, FileNotFoundError) and issubclass(MissingCheckpointError, CheckpointError)


def test_check_finite_reports_count_and_first_index() -> None:
    check_finite(np.zeros(3), "x")
    with pytest.raises(InputError, match=r"x: 2 non-finite coordinates .*first at index \[1, 0\]"):
        check_finite(np.array([[0.0, 1.0], [np.nan, 2.0], [np.inf, 0.0]]), "x", "coordinates")


def test_require_names_the_extra() -> None:
    assert require("numpy", "core") is np
    with pytest.raises(MissingExtraError, match=r"pip install 'flowsci\[shapes\]'"):
        require("no_such_package_xyz", "shapes")
    require_extra("core", "numpy", "scipy")
    with pytest.raises(MissingExtraError, match=r"'no_such_package_xyz'.*flowsci\[pde\]"):
        require_extra("pde", "numpy", "no_such_package_xyz")


def test_a_domain_without_its_extra_fails_with_one_clear_error() -> None:
    code = (
        "import sys; sys.modules['gemmi'] = None\n"
        "try:\n    import flowsci.domains.proteins\n"
        "except ImportError as e:\n    print(type(e).__name__, e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("MissingExtraError") and "flowsci[proteins]" in out.stdout, out.stdout + out.stderr
