import pytest

from flowsci.io import atomic_write, atomic_write_text


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
