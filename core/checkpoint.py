"""The one checkpoint loader: ``torch.load(weights_only=True)``, trusted classes only, errors that name the file.

Every part of flowsci that reads a checkpoint goes through here: the CLI (``sample``, ``reflow``), the benchmark
runner's weight cache, and every domain's ``from_checkpoint``/``pretrained``. Nothing a user hands in is
unpickled: the file is read with ``weights_only=True`` (tensors, containers and plain values; extra classes only
if a domain allow-lists them with :func:`allow_globals`), and every class the checkpoint names (module, network,
the ``class_path`` entries of a ``flowsci fit`` config) must live in flowsci, torch, Lightning or a registered
domain package before it is imported, unless the caller passes ``trust=True``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flowsci.errors import CheckpointError, MissingCheckpointError

__all__ = [
    "allow_globals",
    "allowed_globals",
    "class_paths",
    "load_module",
    "read_checkpoint",
    "resolve_class",
    "save_module",
]

_SAFE_GLOBALS: list[Any] = []
_INSTANTIATORS = {"pytorch_lightning.cli.instantiate_module", "lightning.pytorch.cli.instantiate_module"}


def allow_globals(*objects: Any) -> None:
    """Allow-list classes (or functions) that a domain's checkpoints may contain for ``weights_only`` loading."""
    for obj in objects:
        if obj not in _SAFE_GLOBALS:
            _SAFE_GLOBALS.append(obj)


def allowed_globals() -> contextlib.AbstractContextManager[None]:
    """Context in which ``torch.load(weights_only=True)`` (Lightning's resume included) accepts the allow-list."""
    return torch.serialization.safe_globals(_SAFE_GLOBALS)


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing, empty, a folder, truncated or not a torch file, holding objects that are not
            allow-listed, or not a dict with a ``state_dict``.

    """
    p = Path(path)
    if not p.exists():
        raise MissingCheckpointError(p, "no such checkpoint file")
    if p.is_dir():
        raise CheckpointError(p, "is a folder, not a checkpoint file (pass e.g. <run>/checkpoints/last.ckpt)")
    if p.stat().st_size == 0:
        raise CheckpointError(p, "is empty (0 bytes): the checkpoint was not written completely")
    try:
        with allowed_globals():
            ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            p, f"holds objects other than tensors and plain values, which flowsci never unpickles ({first[:200]})"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as err:
        raise CheckpointError(p, f"not a readable torch checkpoint (truncated or another format): {err}") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(p, "not a model checkpoint (no 'state_dict'); write one with flowsci fit")
    return ckpt


def class_paths(obj: Any) -> Iterator[str]:
    """Every ``class_path`` value in a nested config (dicts and lists), depth first."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ("class_path", "_class_path") and isinstance(value, str):
                yield value
            else:
                yield from class_paths(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from class_paths(value)


def resolve_class(path: str, source: str | os.PathLike, trust: bool = False) -> Any:
    """Import the class named ``"package.module.Class"`` after checking its package is trusted.

    Raises:
        CheckpointError: untrusted package (without ``trust``), or the class cannot be imported.

    """
    _check_trusted(path, source, trust)
    module_name, _, name = path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise CheckpointError(source, f"names {path!r}, which cannot be imported ({err})") from err
    return obj


def _check_trusted(path: str, source: str | os.PathLike, trust: bool) -> None:
    from flowsci.registry import trusted_packages

    if trust:
        return
    top = path.split(".")[0]
    if top not in trusted_packages():
        raise CheckpointError(
            source,
            f"names {path!r}, outside flowsci, torch, Lightning and the registered domains; refusing to import it "
            "(pass trust=True, or --trust on the command line, only for files you made yourself)",
        )


def load_module(
    path: str | os.PathLike,
    expected: type | None = None,
    map_location: str | torch.device = "cpu",
    trust: bool = False,
) -> Any:
    """Rebuild a trained LightningModule from a checkpoint and return it in eval mode.

    A checkpoint written by ``flowsci fit`` records its config (``_class_path`` and ``class_path`` entries);
    one written from Python by a :class:`~flowsci.contract.GenerativeModule` records its class and its network's
    class and ``config`` under the key ``"flowsci"``.

    Args:
        path: The ``.ckpt`` file.
        expected: A class the module must be (a subclass of); also the class used when the file names none.
        map_location: Device to load the tensors on.
        trust: Import classes outside the trusted packages (only for files you made yourself).

    Raises:
        CheckpointError: unreadable, wrong class, untrusted code, or weights that do not fit the class.

    """
    import pytorch_lightning as pl

    p = Path(path)
    ckpt = read_checkpoint(p, map_location=map_location)
    hparams = ckpt.get("hyper_parameters") or {}
    record = ckpt.get("flowsci") or {}
    class_path = hparams.get("_class_path") or record.get("module")
    if class_path is None:
        if expected is None:
            raise CheckpointError(p, "does not record its model class; load it with YourModule.from_checkpoint(path)")
        class_path = f"{expected.__module__}.{expected.__qualname__}"
    instantiator = hparams.get("_instantiator")
    if instantiator is not None and instantiator not in _INSTANTIATORS:
        raise CheckpointError(p, f"names an unknown instantiator {instantiator!r}; refusing to import it")
    for named in [class_path, *class_paths(hparams), *([record["net"]["class"]] if "net" in record else [])]:
        _check_trusted(named, p, trust)
    cls = resolve_class(class_path, p, trust)
    if not (isinstance(cls, type) and issubclass(cls, pl.LightningModule)):
        raise CheckpointError(p, f"{class_path} is not a LightningModule")
    if expected is not None and not issubclass(cls, expected):
        raise CheckpointError(p, f"holds a {cls.__name__}, not a {expected.__name__}")
    try:
        if "_class_path" in hparams:  # written by flowsci fit: Lightning rebuilds it from the config
            with allowed_globals():
                model = cls.load_from_checkpoint(p, map_location=map_location, weights_only=True)
        else:  # written from Python: the record holds the network and plain constructor options
            kwargs = dict(record.get("init") or {})
            if "net" in record:
                kwargs["net"] = resolve_class(record["net"]["class"], p, trust)(**record["net"]["config"])
            model = cls(**kwargs)
            model.load_state_dict(ckpt["state_dict"])
            model.on_load_checkpoint(ckpt)
    except (RuntimeError, TypeError, KeyError, ValueError) as err:
        raise CheckpointError(p, f"does not fit {cls.__name__}: {str(err).splitlines()[0][:300]}") from err
    return model.to(map_location).eval()


def save_module(module: Any, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write a small checkpoint of ``module`` (weights + the loader's record + ``meta``) atomically.

    The file loads with :func:`load_module` / ``Module.from_checkpoint`` like a Lightning checkpoint, without
    optimizer state (for shipped models and caches).
    """
    from flowsci.io import atomic_write

    blob: dict[str, Any] = {"state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    module.on_save_checkpoint(blob)
    if meta is not None:
        blob["meta"] = meta
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))
