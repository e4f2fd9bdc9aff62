"""Find the code examples of the documentation that the tests execute.

A fenced ``python`` block runs when the line just before it is a marker comment::

    <!-- test -->
    <!-- test: max_steps=3000 => max_steps=30; sample(2000 => sample(200 -->

The second form applies plain-text substitutions first, so a page can show the real sizes while the test runs a
small version of the same code. The blocks of one page run in order in one namespace (later blocks may use names
from earlier ones), in a temporary working directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^\s*<!--\s*test(?::(?P<subs>.*?))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```python\s*$")


@dataclass
class Example:
    """One executable block: its page, first line number and the code after substitutions."""

    page: Path
    line: int
    code: str


def _substitutions(spec: str | None) -> list[tuple[str, str]]:
    if not spec:
        return []
    pairs = []
    for part in spec.split(";"):
        if part.strip():
            old, new = part.split("=>")
            pairs.append((old.strip(), new.strip()))
    return pairs


def examples(page: Path) -> list[Example]:
    """The marked ``python`` blocks of ``page``, substitutions applied (each must match, or ValueError)."""
    lines = page.read_text().splitlines()
    found = []
    for i, line in enumerate(lines[:-1]):
        m = MARKER.match(line)
        if not m:
            continue
        f = FENCE.match(lines[i + 1])
        if not f:
            raise ValueError(f"{page}:{i + 1}: a test marker must be followed by a ```python fence")
        indent = len(f.group("indent"))
        body = []
        for j in range(i + 2, len(lines)):
            if lines[j].strip() == "```":
                break
            body.append(lines[j][indent:])
        code = "\n".join(body) + "\n"
        for old, new in _substitutions(m.group("subs")):
            if old not in code:
                raise ValueError(f"{page}:{i + 1}: substitution {old!r} does not occur in the block")
            code = code.replace(old, new)
        found.append(Example(page, i + 3, code))
    return found


def pages() -> list[Path]:
    """Documentation pages (and the README) that hold at least one marked block."""
    candidates = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
    return [p for p in candidates if p.is_file() and any(MARKER.match(x) for x in p.read_text().splitlines())]
