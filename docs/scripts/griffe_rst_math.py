"""Griffe extension: turn the reST math of flowsci's docstrings into arithmatex Markdown for mkdocstrings.

The Google-style docstrings write formulas as ``:math:`x_t``` and ``.. math::`` blocks (as Meta's flow_matching
does, for Sphinx). The documentation site is Markdown with ``pymdownx.arithmatex``, so inline math becomes
``\\(x_t\\)`` and an indented ``.. math::`` block becomes a ``\\[ ... \\]`` display; ``:class:`~a.b.C``` and the other
reST roles become inline code. The docstrings themselves are unchanged.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

_INLINE = re.compile(r":math:`([^`]+)`")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|obj|data|exc|ref|py:\w+):`(~?)([^`]+)`")
_DOUBLE = re.compile(r"(?<!`)``(?!`)")


def _blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)\.\. math::\s*(.*)$", line)
        if not m:
            out.append(line)
            i += 1
            continue
        indent, first = m.group(1), m.group(2)
        body = [first] if first.strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(indent)):
            body.append(lines[i])
            i += 1
        formula = textwrap.dedent("\n".join(b for b in body if b.strip())).strip()
        formula = " ".join(part.strip() for part in formula.split("\n"))
        out += ["", f"{indent}\\[ {formula} \\]", ""]
    return "\n".join(out)


def convert(text: str) -> str:
    """Return ``text`` with reST math and roles rewritten for Markdown + arithmatex."""
    text = _blocks(text)
    text = _INLINE.sub(lambda m: f"\\({m.group(1)}\\)", text)
    text = _ROLE.sub(lambda m: f"`{m.group(2).split('.')[-1] if m.group(1) else m.group(2)}`", text)
    return _DOUBLE.sub("`", text)


class RstMath(griffe.Extension):
    """Rewrite every loaded docstring (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
