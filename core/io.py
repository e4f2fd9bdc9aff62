"""Atomic outputs: a file is written to a temporary sibling and renamed; a folder is filled aside and moved in.

Nothing a command writes is ever left half-written, and a command that fails leaves earlier outputs as they
were. Files get the usual permissions (``0666`` minus the umask, i.e. ``0644`` by default, like ``open``),
not the ``0600`` of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowsci.errors import InputError

__all__ = ["atomic_dir", "atomic_write", "atomic_write_text", "check_out_dir", "default_mode"]


def default_mode(directory: bool = False) -> int:
    """Permissions a new file (``0o666``) or folder (``0o777``) gets under the current umask."""
    mask = None
    try:  # Linux reports it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                mask = int(line.split()[1], 8)
                break
    except (OSError, ValueError):
        pass
    if mask is None:
        mask = os.umask(0o022)
        os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Write a file atomically: ``write(tmp_path)`` fills a temp file in the same folder, then it is renamed.

    The file ends with the permissions :func:`open` would give it (``0644`` under the usual umask).

    Args:
        path: Destination.
        write: Callable taking the temporary path (a ``str`` ending with the destination's suffix).

    Returns:
        The destination path.

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def check_out_dir(path: str | os.PathLike, overwrite: bool = False, source: str | None = None) -> Path:
    """Check that ``path`` can become an output folder; raise :class:`~flowsci.errors.InputError` if not.

    Call it before any long work (training, sampling) so a bad ``--out`` fails at once.

    Args:
        path: The output folder (it may not exist yet).
        overwrite: Accept a non-empty folder (its contents will be replaced).
        source: What to name in the message (``"--out"``); the path by default.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``path`` is a file, lies below a file, or is a non-empty folder and ``overwrite`` is false.

    """
    path = Path(path)
    where = "" if source is None else f"{path}: "
    src = str(path) if source is None else source
    if path.exists() and not path.is_dir():
        raise InputError(src, f"{where}is a file, not a folder; choose a folder for the outputs")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(src, f"{where}cannot create a folder below {parent}, which is a file")
            break
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(
            src, f"{where}the folder is not empty; choose a new folder or pass overwrite (--overwrite) to replace it"
        )
    return path


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False, source: str | None = None) -> Iterator[Path]:
    """Fill an output folder atomically: write into a temporary sibling, move it into place only on success.

    Example::

        with atomic_dir("samples", overwrite=args.overwrite, source="--out") as tmp:
            write_pdbs(tmp)  # an exception here leaves "samples" as it was and removes tmp

    On success the temporary folder replaces ``path`` (with ``overwrite``, the old contents are removed, so
    old and new files never mix); on any exception (also ``KeyboardInterrupt``) it is deleted and ``path`` is
    untouched.

    Args:
        path: The output folder.
        overwrite: Replace a non-empty folder.
        source: What error messages name (``"--out"``); the path by default.

    Yields:
        The temporary folder to write into (same file system as ``path``).

    Raises:
        InputError: As :func:`check_out_dir`, checked before anything is written.

    """
    path = check_out_dir(path, overwrite=overwrite, source=source)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    except OSError as err:
        raise InputError(str(path) if source is None else source, f"cannot create the output folder: {err}") from err
    os.chmod(tmp, default_mode(directory=True))
    try:
        yield tmp
        check_out_dir(path, overwrite=overwrite, source=source)  # nothing appeared meanwhile
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old-"))
            os.replace(path, old / "d")
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old / "d", path)  # put the old folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
