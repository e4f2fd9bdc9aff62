"""The exceptions flowsci raises for bad input, unsafe checkpoints, missing extras and non-finite numbers.

Every reader and every CLI verb reports a problem with its input as one :class:`InputError` whose message starts
with the file or argument at fault, so a user sees one clear line (the CLI prints it without a traceback).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

__all__ = [
    "CheckpointError",
    "FlowsciError",
    "InputError",
    "MissingCheckpointError",
    "MissingExtraError",
    "NonFiniteError",
    "check_finite",
    "require",
    "require_extra",
]


class FlowsciError(Exception):
    """Base class of the errors flowsci raises on purpose."""


class InputError(FlowsciError, ValueError):
    """Bad input: a malformed file, an impossible argument. The message is ``"<source>: <problem>"``.

    Args:
        source: The file (path) or argument (``--num``) at fault.
        problem: What is wrong, in words a user can act on.

    """

    def __init__(self, source: str | os.PathLike, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:  # keep picklable across processes (DDP, dask)
        return (type(self), (self.source, self.problem))


class CheckpointError(InputError):
    """A checkpoint that cannot be read, is not flowsci's, or names code outside the trusted packages."""


class MissingCheckpointError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist (also a ``FileNotFoundError``)."""


class NonFiniteError(FlowsciError, FloatingPointError):
    """A loss, gradient or sample that is NaN or infinite (training and sampling stop instead of going on)."""


class MissingExtraError(FlowsciError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``pip install 'flowsci[extra]'``.

    Args:
        module: Importable name (``"anndata"``).
        extra: The flowsci extra that lists it (``"singlecell"``).

    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingExtraError(
            f"{module!r} is not installed; it comes with the {extra!r} extra: pip install 'flowsci[{extra}]'"
        ) from err


def require_extra(extra: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` if any of ``modules`` is not installed, without importing them.

    Domains call it first in their ``__init__``, so a missing package is one error naming
    ``pip install 'flowsci[extra]'`` while importing the domain stays as cheap as its own lazy imports.
    """
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(
                f"{module!r} is not installed; it comes with the {extra!r} extra: pip install 'flowsci[{extra}]'"
            )


def check_finite(values: Any, source: str | os.PathLike, what: str = "values") -> None:
    """Raise :class:`InputError` if ``values`` (tensor or array-like) holds NaN or infinity.

    Args:
        values: A ``torch.Tensor`` or anything ``numpy.asarray`` accepts.
        source: File or argument named in the message.
        what: What the values are (``"coordinates"``), named in the message.

    """
    import numpy as np

    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.dtype.kind in "fc":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0].tolist()
            raise InputError(source, f"{int(bad.sum())} non-finite {what} (NaN or Inf; first at index {first})")
