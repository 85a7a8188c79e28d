"""Path normalisation, done once per request on the raw path bytes (DESIGN §5.1).

The rules match, and the upstream receives, the same string: the raw path with percent-encoded
unreserved characters decoded (RFC 3986 §6.2.2.2), hex digits upper-cased, duplicate slashes
collapsed and dot segments removed (§5.2.4). Anything a later decoder could read differently
from us is refused instead of guessed at: encoded ``/`` and ``\\`` (``%2f``, ``%5c``), double
encoding (``%25xx``), NUL and other control bytes, raw ``\\``, malformed escapes, non-ASCII bytes,
escapes that do not decode (once) to UTF-8 (``%C0%AF`` is an overlong ``/`` that lenient decoders
accept, ``%FF`` is nothing at all) and, unless configured otherwise, ``;`` path parameters (Java
containers strip them, so ``/admin;x`` and ``/admin`` would be two paths to us and one to them).
"""

from __future__ import annotations

import re

_HEX = frozenset(b"0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Bytes that must never appear decoded or encoded: a decoder downstream would turn them into a
# separator or a terminator the matcher never saw.
_FORBIDDEN_ESCAPES = frozenset({0x2F, 0x5C, 0x00})
# Allowed raw in a path (RFC 3986 pchar + "/"), minus "%" which is handled separately.
_PCHAR = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")
_PCHAR_BYTES = bytes(sorted(_PCHAR))
_PCHAR_NO_PARAMETERS = _PCHAR_BYTES.replace(b";", b"")
# An escape left after one percent-decode: a second decoder would decode it again.
_ESCAPE_AFTER_ONE_DECODE = re.compile(rb"%[0-9A-Fa-f]{2}")


class BadPath(ValueError):
    """The path is ambiguous or malformed; the request is answered with 400."""


def normalise_path(raw: bytes, *, reject_parameters: bool = True) -> str:
    """The canonical form of a raw request path (no query), or ``BadPath``."""
    if raw[:1] != b"/":  # not ``startswith``: its argument parsing costs ~1k instructions
        raise BadPath("the path must start with '/'")
    # Fast path: the common case has nothing to decode and no dot segment or double slash.
    # Every byte a pchar (checked in C) is also ASCII, no "%" and no "\\"; with parameters
    # refused, ";" is left out of the pchars, so a path with one takes the full way (which refuses it).
    # ``find``, not ``in``: CPython 3.11's ``bytes in bytes`` first tries the needle as an int,
    # raising and clearing a TypeError, which costs four times the search (~1.2k instructions).
    if (
        not raw.translate(None, _PCHAR_NO_PARAMETERS if reject_parameters else _PCHAR_BYTES)
        and raw.find(b"//") == -1
        and raw.find(b"/.") == -1
    ):
        return raw.decode("ascii")
    out = bytearray()
    decoded = bytearray()  # the path after one percent-decode: it must be UTF-8
    non_ascii = False
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # "%"
            if i + 2 >= n:
                raise BadPath("truncated percent-encoding")
            h1, h2 = raw[i + 1], raw[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise BadPath("malformed percent-encoding")
            value = int(raw[i + 1 : i + 3], 16)
            if value in _FORBIDDEN_ESCAPES or value < 0x20 or value == 0x7F:
                raise BadPath("encoded '/', '\\' or control character in the path")
            if value == 0x3B and reject_parameters:
                raise BadPath("';' path parameters are not accepted")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            decoded.append(value)
            non_ascii = non_ascii or value >= 0x80
            i += 3
            continue
        if c not in _PCHAR:
            raise BadPath("invalid character in the path")
        if c == 0x3B and reject_parameters:
            raise BadPath("';' path parameters are not accepted")
        out.append(c)
        decoded.append(c)
        i += 1
    # Double encoding, checked on the decoded path: ``%2541`` and also ``%25%341``, whose second
    # and third characters are themselves escapes (decoded once: ``%41``; twice: ``A``).
    if 0x25 in decoded and _ESCAPE_AFTER_ONE_DECODE.search(decoded):
        raise BadPath("double percent-encoding in the path")
    if non_ascii:
        try:
            decoded.decode("utf-8")  # strict: overlong forms, surrogates and stray bytes fail
        except UnicodeDecodeError:
            raise BadPath("the path is not UTF-8 after percent-decoding") from None
    return _remove_dot_segments(out.decode("ascii"))


def _remove_dot_segments(path: str) -> str:
    segments = path.split("/")
    stack: list[str] = []
    for seg in segments[1:]:
        if seg in ("", "."):
            continue  # duplicate slash or "." segment
        if seg == "..":
            if stack:
                stack.pop()
            continue
        stack.append(seg)
    result = "/" + "/".join(stack)
    # A trailing "/", "/." or "/.." keeps the path a directory, as RFC 3986 §5.2.4 does.
    if len(stack) > 0 and segments[-1] in ("", ".", ".."):
        result += "/"
    return result
