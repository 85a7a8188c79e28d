"""UUIDs and UTC timestamps from the text the stores hold, in fewer steps than the general parsers.

A session-cache miss builds four to six UUIDs and four to eight timestamps from text (the
session's JSON, the identity row and its children's JSON). ``uuid.UUID(text)`` is a Python
``__init__`` of string edits (about 0.75 µs); ``datetime.fromisoformat(text).replace(tzinfo=UTC)``
spends most of its time in ``replace``'s keyword parsing. Here the common shapes take a shorter
way to the very same values, and anything else the general parser (so errors are its errors).
JSON documents likewise skip ``json.loads``' two Python frames, encoding sniffing and two regex
matches when they are the compact text the stores write; and the model values read back are
built by ``sidecar.slotted.builder``, which writes their slots directly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

_UUID = uuid.UUID
_new = object.__new__
_set_int = _UUID.__dict__["int"].__set__  # UUID's slots, written as its __init__ writes them
_set_safe = _UUID.__dict__["is_safe"].__set__
_UNKNOWN = uuid.SafeUUID.unknown
_fromhex = bytes.fromhex
_from_bytes = int.from_bytes
_fromisoformat = datetime.fromisoformat


def parse_uuid(text: str) -> uuid.UUID:
    """``uuid.UUID(text)``: for 32 hex digits, or 36 characters with the four hyphens in place,
    without its string edits (``bytes.fromhex`` takes hex digits only: a 16-byte result means 32
    of them); anything else (braces, ``urn:uuid:``, bad text) goes to ``uuid.UUID``."""
    if type(text) is not str:
        return _UUID(text)  # its errors
    if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
        digits = text.replace("-", "")
    elif len(text) == 32:
        digits = text
    else:
        return _UUID(text)
    try:
        raw = _fromhex(digits)
    except ValueError:
        return _UUID(text)
    if len(raw) != 16:
        return _UUID(text)
    value = _new(_UUID)
    _set_int(value, _from_bytes(raw))
    _set_safe(value, _UNKNOWN)
    return value


def utc_from_text(value: str) -> datetime:
    """An ISO 8601 timestamp as an aware UTC datetime: text without an offset is UTC (SQLite's
    ``2026-12-07 05:38:51.525731``), text with one is converted (PostgreSQL's JSON)."""
    if len(value) in (19, 26):  # SQLite's shapes, whole seconds or microseconds: parsed with +00:00
        try:
            moment = _fromisoformat(value + "+00:00")
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is UTC:  # (a date alone would parse naive)
            return moment
    moment = _fromisoformat(value)
    if moment.tzinfo is UTC:
        return moment
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def json_value(value: str) -> Any:
    """``json.loads`` for JSON text without surrounding whitespace (what SQLite's JSON functions,
    SQLAlchemy's serializer and ``dumps_session`` write) minus its two Python frames and two regex
    matches: the same scanner call ``json.loads`` ends in; anything else goes to ``json.loads``."""
    try:
        found, end = _scan_json(value, 0)
    except (StopIteration, TypeError):  # not JSON text (json.loads raises its error), or bytes
        return json.loads(value)
    return found if end == len(value) else json.loads(value)


def json_document(raw: bytes) -> Any:
    """``json.loads(raw)`` for bytes: a document that opens with ``{`` and whose second byte is
    not NUL is UTF-8 to ``json.loads`` (``json.detect_encoding``), so it is decoded as that does
    (``surrogatepass``) and scanned as ``json_value`` scans; anything else goes to ``json.loads``."""
    if raw[:1] == b"{" and raw[1:2] not in (b"", b"\x00"):
        return json_value(raw.decode("utf-8", "surrogatepass"))
    return json.loads(raw)
