"""JSON schema of ``results/<suite>/<domain>.json`` and a validator.

:data:`RESULT_SCHEMA` is a JSON Schema (draft 2020-12). :func:`validate_result` checks a document with
``jsonschema`` when it is installed and otherwise with a small built-in validator covering the subset of JSON
Schema the schema uses (``type``, ``properties``, ``required``, ``additionalProperties``, ``items``, ``enum``,
``minimum``, ``minLength``, ``const``); both give the same verdicts on this schema.
``python -m flowsci.benchmarks.schema`` prints the schema.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["RESULT_SCHEMA", "SCHEMA_VERSION", "SchemaError", "validate_result"]

SCHEMA_VERSION = 1

_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}

_CELL = {
    "type": "object",
    "required": [
        "id",
        "method",
        "baseline",
        "solver",
        "nfe_target",
        "steps",
        "status",
        "error",
        "seed",
        "fingerprint",
        "num_samples",
        "nfe",
        "nfe_counted",
        "train_time_s",
        "train_steps",
        "train_steps_per_s",
        "train_cached",
        "sample_time_s",
        "sample_time_per_sample_s",
        "peak_memory_mb",
        "memory_method",
        "metrics",
        "finished_at",
    ],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "method": {"type": "string", "minLength": 1},
        "baseline": {"type": "boolean"},
        "solver": {"type": "string", "minLength": 1},
        "nfe_target": _INT_OR_NULL,
        "steps": _INT_OR_NULL,
        "status": {"enum": ["ok", "error"]},
        "error": _STR_OR_NULL,
        "traceback": _STR_OR_NULL,
        "seed": {"type": "integer"},
        "fingerprint": {"type": "string", "minLength": 1},
        "num_samples": {"type": "integer", "minimum": 1},
        "nfe": _INT_OR_NULL,
        "nfe_counted": _INT_OR_NULL,
        "train_time_s": _NUM_OR_NULL,
        "train_steps": _INT_OR_NULL,
        "train_steps_per_s": _NUM_OR_NULL,
        "train_cached": {"type": "boolean"},
        "train_peak_memory_mb": _NUM_OR_NULL,
        "sample_time_s": _NUM_OR_NULL,
        "sample_time_per_sample_s": _NUM_OR_NULL,
        "metric_time_s": _NUM_OR_NULL,
        "peak_memory_mb": _NUM_OR_NULL,
        "peak_memory_delta_mb": _NUM_OR_NULL,
        "memory_method": {"type": "string"},
        "metrics": {"type": "object", "additionalProperties": _NUM_OR_NULL},
        "finished_at": {"type": "string"},
    },
}

_REFERENCE = {
    "type": "object",
    "required": ["kind", "method", "metrics", "source", "scale"],
    "additionalProperties": False,
    "properties": {
        "kind": {"const": "reported"},
        "method": {"type": "string", "minLength": 1},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "source": {"type": "string", "minLength": 1},
        "scale": {"type": "string", "minLength": 1},
        "nfe": _INT_OR_NULL,
        "solver": _STR_OR_NULL,
        "note": {"type": "string"},
    },
}

RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://flowsci.invalid/schemas/bench-result-v1.json",
    "title": "flowsci bench result (one domain, one suite)",
    "type": "object",
    "required": [
        "schema_version",
        "suite",
        "domain",
        "status",
        "error",
        "spec",
        "environment",
        "columns",
        "cells",
        "reference",
        "updated_at",
    ],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "suite": {"enum": ["smoke", "quick", "full"]},
        "domain": {"type": "string", "minLength": 1},
        "status": {"enum": ["ok", "partial", "error"]},
        "error": _STR_OR_NULL,
        "spec": {"type": ["object", "null"]},
        "environment": {
            "type": "object",
            "required": ["versions", "device", "platform", "python", "torch_threads"],
            "properties": {
                "versions": {"type": "object", "additionalProperties": _STR_OR_NULL},
                "device": {"type": "string"},
                "platform": {"type": "string"},
                "python": {"type": "string"},
                "torch_threads": {"type": "integer"},
                "cpu_count": _INT_OR_NULL,
            },
        },
        "columns": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["higher_is_better"],
                "properties": {"higher_is_better": {"type": "boolean"}, "description": {"type": "string"}},
            },
        },
        "cells": {"type": "array", "items": _CELL},
        "reference": {"type": "array", "items": _REFERENCE},
        "noise_floor": {"type": "object", "additionalProperties": _NUM_OR_NULL},
        "updated_at": {"type": "string"},
    },
}


class SchemaError(ValueError):
    """A results document does not match :data:`RESULT_SCHEMA`."""


_TYPES = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def _check(value: Any, schema: Mapping[str, Any], path: str) -> list[str]:
    errs: list[str] = []
    if "const" in schema and value != schema["const"]:
        return [f"{path}: expected {schema['const']!r}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{path}: {value!r} is not one of {schema['enum']}"]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: expected type {'/'.join(types)}, got {type(value).__name__}"]
    if isinstance(value, Mapping):
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{path}: missing required key {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, sub in value.items():
            if key in props:
                errs += _check(sub, props[key], f"{path}.{key}")
            elif extra is False:
                errs.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, Mapping):
                errs += _check(sub, extra, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errs += _check(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, str) and len(value) < schema.get("minLength", 0):
        errs.append(f"{path}: string shorter than {schema['minLength']}")
    if _TYPES["number"](value) and "minimum" in schema and value < schema["minimum"]:
        errs.append(f"{path}: {value} < minimum {schema['minimum']}")
    return errs


def _non_finite(value: Any, path: str) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{path}: non-finite number {value!r} (write null instead)"]
    if isinstance(value, Mapping):
        return [e for k, v in value.items() for e in _non_finite(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _non_finite(v, f"{path}[{i}]")]
    return []


def validate_result(doc: Mapping[str, Any], source: str = "<result>", use_jsonschema: bool | None = None) -> None:
    """Validate a results document against :data:`RESULT_SCHEMA` (and reject NaN/inf, which JSON cannot hold).

    Args:
        doc: The parsed JSON document.
        source: Name used in the error message (usually the file path).
        use_jsonschema: Force (``True``) or forbid (``False``) the ``jsonschema`` package; ``None`` uses it when
            installed.

    Raises:
        SchemaError: Naming ``source`` and every violation found.

    """
    errs: list[str] = []
    validator = None
    if use_jsonschema is not False:
        try:
            import jsonschema
        except ImportError:
            if use_jsonschema:
                raise
        else:
            validator = jsonschema.Draft202012Validator(RESULT_SCHEMA)
    if validator is not None:
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
            errs.append(f"$.{'.'.join(map(str, e.absolute_path))}: {e.message}")
    else:
        errs = _check(doc, RESULT_SCHEMA, "$")
    errs += _non_finite(doc, "$")
    if errs:
        shown = "\n  ".join(errs[:20]) + (f"\n  ... and {len(errs) - 20} more" if len(errs) > 20 else "")
        raise SchemaError(f"{source} does not match the flowsci bench result schema:\n  {shown}")


if __name__ == "__main__":
    print(json.dumps(RESULT_SCHEMA, indent=2))
