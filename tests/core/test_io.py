import os
import stat

import pytest

from flowsci.errors import InputError
from flowsci.io import atomic_dir, atomic_write, atomic_write_text, check_out_dir, default_mode


def test_atomic_write_replaces_and_cleans_up_on_failure(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    assert atomic_write_text(target, "first") == target and target.read_text() == "first"

    def broken(tmp):
        with open(tmp, "w") as fh:
            fh.write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "first"  # the old file survives a failed write
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary left behind


def test_atomic_write_gives_the_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        target = atomic_write_text(tmp_path / "a.txt", "x")
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        assert default_mode() == 0o644 and default_mode(directory=True) == 0o755
        os.umask(0o077)
        assert stat.S_IMODE(atomic_write_text(tmp_path / "b.txt", "x").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_atomic_dir_moves_into_place_only_on_success(tmp_path):
    out = tmp_path / "a" / "samples"
    with atomic_dir(out) as tmp:
        assert tmp.parent == out.parent and tmp != out and not out.exists()
        (tmp / "one.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["one.txt"]
    assert stat.S_IMODE(out.stat().st_mode) == default_mode(directory=True)

    with pytest.raises(InputError, match="not empty.*--overwrite") as err:  # refuses a used folder
        with atomic_dir(out, source="--out"):
            raise AssertionError("not reached")
    assert err.value.source == "--out" and str(out) in str(err.value)

    with pytest.raises(KeyboardInterrupt), atomic_dir(out, overwrite=True) as tmp:  # a failure halfway
        (tmp / "two.txt").write_text("2")
        raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["one.txt"]  # earlier files as they were
    assert sorted(p.name for p in out.parent.iterdir()) == ["samples"]  # no temporary left behind

    with atomic_dir(out, overwrite=True) as tmp:  # overwrite replaces: old and new files never mix
        (tmp / "two.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["two.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["samples"]

    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_dir(empty) as tmp:  # an existing empty folder is fine
        (tmp / "x").write_text("x")
    assert (empty / "x").read_text() == "x"


def test_out_pointing_at_or_below_a_file_is_an_input_error(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    with pytest.raises(InputError, match="is a file"):
        check_out_dir(f)
    with pytest.raises(InputError, match="below .*file.txt, which is a file") as err:
        with atomic_dir(f / "sub" / "out", source="--out"):
            raise AssertionError("not reached")
    assert err.value.source == "--out"
    assert f.read_text() == "keep"
