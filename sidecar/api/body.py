"""Reading request bodies safely: size cap, content type, JSON that is an object or array."""

from __future__ import annotations

import json
import math
from typing import Any

from starlette.requests import Request

from sidecar import errors

MAX_DEPTH = 64
MAX_NUMBER_DIGITS = 100
"""Longest integer accepted in a JSON body; no identity field needs more, and Python refuses
past 4300 digits with a ValueError that is not a JSON error (it was a 500)."""


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_NUMBER_DIGITS:
        raise ValueError(f"a number has more than {MAX_NUMBER_DIGITS} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_DIGITS * 4:
        raise ValueError("a number is too long")
    value = float(text)
    if not math.isfinite(value):
        # 1e999 is infinity to Python and not representable in JSON (or PostgreSQL jsonb).
        raise ValueError("a number is out of range")
    return value


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(raw: bytes | str) -> Any:
    """``json.loads`` for request bodies: every way a body can be bad is a ``BadRequest``.

    Numbers are bounded (digits, finite) and NaN/Infinity refused; ``check_document`` is the
    caller's (self-service flows answer NUL with a UI message instead).
    """
    try:
        value = json.loads(
            raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
        raise errors.BadRequest(f"the request body is not valid JSON: {exc}") from None
    return value


def check_document(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse documents nested deeper than ``limit`` and strings holding NUL.

    NUL cannot be stored in PostgreSQL text/JSON and has no place in an identity; refusing it
    here turns what would be a database error into a 400. Iterative, so a hostile 100k-deep
    document cannot blow the Python stack.
    """
    stack = [(value, 1)]
    while stack:
        node, d = stack.pop()
        if d > limit:
            raise errors.BadRequest(f"the JSON document is nested deeper than {limit} levels")
        if isinstance(node, str):
            if "\x00" in node:
                raise errors.BadRequest("strings must not contain NUL characters")
        elif isinstance(node, dict):
            for k, v in node.items():
                if "\x00" in k:
                    raise errors.BadRequest("keys must not contain NUL characters")
                stack.append((v, d + 1))
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)


async def read_body(request: Request, max_size: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > max_size:
                raise errors.PayloadTooLarge(f"request body exceeds {max_size} bytes")
        except ValueError:
            raise errors.BadRequest("invalid Content-Length header") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_size:
            raise errors.PayloadTooLarge(f"request body exceeds {max_size} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_size: int, *, allow_empty: bool = False) -> Any:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await read_body(request, max_size)
    if not raw.strip():
        if allow_empty:
            return None
        raise errors.BadRequest("the request body must not be empty")
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise errors.UnsupportedMediaType(f"expected Content-Type application/json, got {ctype}")
    value = parse_json(raw)
    check_document(value)
    return value
