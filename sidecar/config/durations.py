"""Kratos' value syntaxes: Go durations (``1h30m``, ``500ms``) and byte sizes (``64MB``)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> timedelta:
    """Go-style duration ("1h30m", "500ms") or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 15m or 1h")
    if isinstance(value, int | float):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):  # ValueError: NaN
            raise ValueError(f"duration {value!r} is out of range") from None
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 30s, 15m or 1h")
    text = value.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 15m, 1h30m")
    try:
        return timedelta(seconds=total)
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long") from None


def parse_bytes(value: Any) -> int:
    """Sizes such as ``128MB`` / ``64KB`` / plain integers (bytes)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*", value)
        if m:
            mult = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2}
            mult["GiB"] = 1024**3
            return int(m.group(1)) * mult[m.group(2) or "B"]
    raise ValueError(f"invalid size {value!r}: expected e.g. 64MB")


# What the YAML may hold, for the JSON Schema (``sidecar config schema``): the validators accept more
# than the Python types say.
_DURATION_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+\s*$"},
        {"type": "number", "minimum": 0},
    ]
}
_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "string", "pattern": r"^\s*\d+\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$"},
        {"type": "integer", "minimum": 0},
    ]
}
Duration = Annotated[timedelta, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]
ByteSize = Annotated[int, BeforeValidator(parse_bytes), WithJsonSchema(_SIZE_SCHEMA)]
