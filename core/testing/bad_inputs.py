"""A reusable bad-input suite for file readers: every malformed variant must end in one documented error.

Given a valid file and a reader, :func:`check_reader` writes corrupted variants of the file (empty, truncated,
binary garbage, NaN / Inf / overflowing numbers, oversized garbage) next to each other and calls the reader on
each. A variant passes if the reader raises :class:`flowsci.errors.InputError` whose message names the file (its
full path); a variant that may still be valid (a truncation at a line boundary) may instead return a result,
which must then hold only finite numbers. Any other exception (a library traceback), a message without the file,
or a NaN in a returned result is a failure. :func:`fuzz_reader` does the same for random truncations and byte
edits (hypothesis), :func:`check_values` for readers of strings (compositions, arguments).

Every present and future domain reader goes through it (``tests/test_bad_inputs.py``)::

    report = check_reader(read_backbones, valid_pdb, tmp_path)
    report.assert_ok()
    print(report.summary())  # "read_backbones: 14 cases, 14 in the documented error, 0 accepted, 0 failures"
"""

from __future__ import annotations

import dataclasses
import gzip
import lzma
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowsci.errors import InputError

__all__ = [
    "BadInput",
    "Outcome",
    "Report",
    "bad_variants",
    "check_reader",
    "check_values",
    "fuzz_reader",
    "is_finite_result",
]

#: A decimal number with a fractional part or an exponent (``12.345``, ``-0.5``, ``1e-3``), not part of a word.
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d*(?:[eE][-+]?\d+)?(?![\w.])")


@dataclass(frozen=True)
class BadInput:
    """One corrupted variant of a valid file.

    Attributes:
        name: Short identifier (``"nan@3"``, ``"truncated-50%"``), also used in the file name.
        data: The file's bytes (before any compression of the original's suffix).
        must_fail: ``True`` if the reader must raise; ``False`` if a finite result is acceptable too.
    """

    name: str
    data: bytes
    must_fail: bool = True


@dataclass
class Outcome:
    """What the reader did with one variant."""

    case: str
    path: str
    status: str  # "input-error", "accepted", or "failure"
    detail: str = ""


@dataclass
class Report:
    """Counts and outcomes of a run of the suite."""

    reader: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def cases(self) -> int:
        """Number of variants tried."""
        return len(self.outcomes)

    @property
    def input_errors(self) -> int:
        """Variants that ended in :class:`~flowsci.errors.InputError` naming the file (the documented error)."""
        return sum(o.status == "input-error" for o in self.outcomes)

    @property
    def accepted(self) -> int:
        """Variants that may be valid and were read with finite results."""
        return sum(o.status == "accepted" for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        """Tracebacks from libraries, messages without the file, NaN results, accepted must-fail variants."""
        return [o for o in self.outcomes if o.status == "failure"]

    def merge(self, other: Report) -> Report:
        """Add the outcomes of another report (returns ``self``)."""
        self.outcomes.extend(other.outcomes)
        return self

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{self.reader}: {self.cases} cases, {self.input_errors} in the documented error, "
            f"{self.accepted} accepted with finite results, {len(self.failures)} failures"
        )

    def assert_ok(self) -> None:
        """Raise :class:`AssertionError` listing every failure."""
        if self.failures:
            lines = "\n".join(f"  {o.case} ({o.path}): {o.detail}" for o in self.failures)
            raise AssertionError(f"{self.summary()}:\n{lines}")


# --------------------------------------------------------------------------------------------------- variants
def _replace_number(text: str, match: re.Match[str], value: str) -> str:
    width = match.end() - match.start()
    return text[: match.start()] + value.rjust(width) + text[match.end() :]  # keep fixed columns (PDB) aligned


def bad_variants(
    valid: bytes,
    *,
    number_pattern: re.Pattern[str] | None = NUMBER,
    numbers: Sequence[int] | None = None,
    seed: int = 0,
) -> list[BadInput]:
    """The corrupted variants of a valid file's (uncompressed) bytes.

    Args:
        valid: The content of a file the reader accepts.
        number_pattern: Regex of the numbers to corrupt (default: decimals with a fractional part); ``None``
            skips the NaN/Inf/overflow variants.
        numbers: Indices (into the pattern's matches) of the numbers to corrupt; default: the first, the middle
            and the last match. Choose numbers the reader uses (coordinates, lattice lengths).
        seed: Seed of the garbage bytes.

    Returns:
        ``empty``, ``whitespace``, ``truncated-*`` (cut inside a line; may parse), ``binary-garbage``,
        ``nul-bytes``, ``garbage-after-header``, ``oversized-garbage`` (2 MB of text), ``nan@i``, ``inf@i``,
        ``-inf@i``, ``overflow@i`` (``1e999``, infinite when parsed) and ``not-a-number@i``.
    """
    rng = random.Random(seed)
    out = [
        BadInput("empty", b""),
        BadInput("whitespace", b"   \n\n\t\n"),
        BadInput("binary-garbage", bytes(rng.randrange(256) for _ in range(4096))),
        BadInput("nul-bytes", b"\x00" * 1024),
        BadInput("garbage-after-header", valid[: max(1, len(valid) // 20)] + b"\xff\xfe\x00garbage\x00" * 64, False),
        BadInput("oversized-garbage", b"ABCDEFGHIJ" * 200_000),
    ]
    for frac in (0.5, 0.9):
        cut = int(len(valid) * frac)
        nl = valid.rfind(b"\n", 0, cut)
        cut = cut if nl < 0 or cut - nl > 3 else nl + 3  # cut inside a line, a few bytes after its start
        out.append(BadInput(f"truncated-{int(frac * 100)}%", valid[:cut], must_fail=False))
    if number_pattern is not None:
        text = valid.decode("utf-8", errors="surrogateescape")
        matches = list(number_pattern.finditer(text))
        if matches:
            picks = sorted(set(numbers)) if numbers is not None else sorted({0, len(matches) // 2, len(matches) - 1})
            for i in picks:
                m = matches[i]
                for label, value in (
                    ("nan", "nan"),
                    ("inf", "inf"),
                    ("-inf", "-inf"),
                    ("overflow", "1e999"),
                    ("not-a-number", "1.2x3"),
                ):
                    bad = _replace_number(text, m, value).encode("utf-8", errors="surrogateescape")
                    out.append(BadInput(f"{label}@{i}", bad))
    return out


def _compress_like(path: Path, data: bytes) -> bytes:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.compress(data)
    if name.endswith(".xz"):
        return lzma.compress(data)
    return data


def _read_like(path: Path) -> bytes:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.decompress(path.read_bytes())
    if name.endswith(".xz"):
        return lzma.decompress(path.read_bytes())
    return path.read_bytes()


# --------------------------------------------------------------------------------------------------- checks
def is_finite_result(value: Any, _depth: int = 0) -> bool:
    """Whether every number reachable in ``value`` (tensors, arrays, floats, containers, dataclasses, pymatgen
    structures) is finite.
    """
    if _depth > 6:
        return True
    if isinstance(value, (bool, int, str, bytes)) or value is None:
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if hasattr(value, "detach") and hasattr(value, "is_floating_point"):  # torch.Tensor
        import torch

        return bool(torch.isfinite(value).all()) if (value.is_floating_point() or value.is_complex()) else True
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return bool(np.isfinite(value).all()) if value.dtype.kind in "fc" else True
        if isinstance(value, np.generic):
            return bool(np.isfinite(value)) if value.dtype.kind in "fc" else True
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, Mapping):
        return all(is_finite_result(v, _depth + 1) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(is_finite_result(v, _depth + 1) for v in value)
    if dataclasses.is_dataclass(value):
        return all(is_finite_result(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value))
    lattice = getattr(value, "lattice", None)  # pymatgen Structure / ASE-like
    if lattice is not None and hasattr(value, "frac_coords"):
        return is_finite_result(getattr(lattice, "matrix", None), _depth + 1) and is_finite_result(
            value.frac_coords, _depth + 1
        )
    return True


def _classify(
    reader: Callable[[Any], Any], arg: Any, name: str, must_fail: bool, case: str, result_ok: Callable[[Any], bool]
) -> Outcome:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = reader(arg)
    except InputError as exc:
        if name not in str(exc):
            return Outcome(case, name, "failure", f"InputError does not name {name!r}: {exc}")
        return Outcome(case, name, "input-error", str(exc))
    except Exception as exc:  # noqa: BLE001 - anything else is what the suite exists to find
        return Outcome(case, name, "failure", f"{type(exc).__module__}.{type(exc).__name__}: {exc}"[:500])
    if must_fail:
        return Outcome(case, name, "failure", f"accepted a bad input (returned {type(result).__name__})")
    if not result_ok(result):
        return Outcome(case, name, "failure", "returned non-finite numbers")
    return Outcome(case, name, "accepted")


def check_reader(
    reader: Callable[[str], Any],
    valid_path: str | os.PathLike,
    tmp_dir: str | os.PathLike,
    *,
    variants: Iterable[BadInput] | None = None,
    number_pattern: re.Pattern[str] | None = NUMBER,
    numbers: Sequence[int] | None = None,
    result_ok: Callable[[Any], bool] = is_finite_result,
    name: str | None = None,
) -> Report:
    """Run ``reader`` on every bad variant of ``valid_path`` and classify what happens.

    The valid file is read first and must succeed with finite results. Each variant is written to
    ``tmp_dir/<case>/<same file name>`` (compressed like the original for ``.gz``/``.xz``), and the reader is
    called with that path as a ``str``.

    Args:
        reader: ``reader(path) -> result``; must raise :class:`~flowsci.errors.InputError` naming ``path``.
        valid_path: A file the reader accepts.
        tmp_dir: Folder for the variants.
        variants: The variants (default :func:`bad_variants` of the file's content).
        number_pattern: See :func:`bad_variants`.
        numbers: See :func:`bad_variants`.
        result_ok: Check of a returned result (default: all numbers finite).
        name: Reader name in the report (default ``reader.__qualname__``).

    Returns:
        A :class:`Report`; call :meth:`Report.assert_ok`.
    """
    valid_path = Path(valid_path)
    report = Report(name or getattr(reader, "__qualname__", repr(reader)))
    good = reader(str(valid_path))
    if not result_ok(good):
        raise AssertionError(f"{report.reader}: the valid file {valid_path} gives non-finite results")
    if variants is None:
        variants = bad_variants(_read_like(valid_path), number_pattern=number_pattern, numbers=numbers)
    for v in variants:
        folder = Path(tmp_dir) / re.sub(r"[^\w@%.-]", "_", v.name)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / valid_path.name
        path.write_bytes(_compress_like(valid_path, v.data))
        report.outcomes.append(_classify(reader, str(path), str(path), v.must_fail, v.name, result_ok))
    return report


def fuzz_reader(
    reader: Callable[[str], Any],
    valid_path: str | os.PathLike,
    tmp_dir: str | os.PathLike,
    *,
    max_examples: int = 25,
    result_ok: Callable[[Any], bool] = is_finite_result,
    name: str | None = None,
) -> Report:
    """Property-based cases (hypothesis): random truncations and random byte edits of the valid file.

    The property: the reader returns finite results or raises :class:`~flowsci.errors.InputError` naming the
    file; never another exception, never NaN. Every example is an outcome of the report.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    valid_path = Path(valid_path)
    data = _read_like(valid_path)
    report = Report(f"{name or getattr(reader, '__qualname__', repr(reader))} (fuzz)")
    folder = Path(tmp_dir) / "fuzz"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / valid_path.name
    edits = st.lists(
        st.tuples(st.integers(0, max(0, len(data) - 1)), st.binary(min_size=0, max_size=4)), min_size=1, max_size=4
    )

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(st.integers(0, len(data)).map(lambda n: ("cut", n)), edits.map(lambda e: ("edit", e))))
    def run(change: tuple[str, Any]) -> None:
        kind, arg = change
        if kind == "cut":
            new, case = data[:arg], f"fuzz-cut@{arg}"
        else:
            buf = bytearray(data)
            for pos, chunk in sorted(arg, reverse=True):
                buf[pos : pos + 1] = chunk
            new, case = bytes(buf), f"fuzz-edit{[(p, c.hex()) for p, c in arg]}"
        path.write_bytes(_compress_like(valid_path, new))
        report.outcomes.append(_classify(reader, str(path), str(path), False, case, result_ok))

    run()
    return report


def check_values(
    parse: Callable[[Any], Any],
    bad: Iterable[Any],
    *,
    source: str | None = None,
    result_ok: Callable[[Any], bool] = is_finite_result,
    name: str | None = None,
) -> Report:
    """Run a string (or value) reader on bad values, each of which must raise :class:`InputError`.

    Args:
        parse: ``parse(value) -> result``.
        bad: The bad values (``"Xx2O3"``, ``""``, ``"NaCl-"``).
        source: Text the error must contain (the argument name, e.g. ``"composition"``); default: ``repr`` of
            the value must appear (it names what was wrong).
        result_ok: Unused for must-fail values (kept for symmetry).
        name: Reader name in the report.
    """
    del result_ok
    report = Report(name or getattr(parse, "__qualname__", repr(parse)))
    for value in bad:
        needle = source if source is not None else repr(value)
        report.outcomes.append(_classify(parse, value, needle, True, repr(value), is_finite_result))
    return report
