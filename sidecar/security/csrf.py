"""Anti-CSRF tokens for browser flows (Kratos uses nosurf: kratos-api.md §6, §11.12).

The cookie ``csrf_token_<sha256(public base URL)>`` holds a random base token. Every rendered
form carries a *masked* copy, ``base64url(pad || pad XOR token)`` with a fresh random pad, so the
hidden value differs on every render (no BREACH-style compression oracle) while any masked copy
still unmasks to the cookie's token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

TOKEN_BYTES = 32
HEADER = "x-csrf-token"


def cookie_name(public_base_url: str) -> str:
    return "csrf_token_" + hashlib.sha256(public_base_url.encode()).hexdigest()


def _encode(raw: bytes) -> str:
    # URL-safe and unpadded: the cookie value needs no quoting.
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(value: str) -> bytes | None:
    try:
        data = value.encode("ascii")
        return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def new_token() -> str:
    return _encode(secrets.token_bytes(TOKEN_BYTES))


def is_well_formed(token: str | None) -> bool:
    raw = _decode(token) if token else None
    return raw is not None and len(raw) == TOKEN_BYTES


def mask(token: str) -> str:
    raw = _decode(token)
    if raw is None or len(raw) != TOKEN_BYTES:
        raise ValueError("not a CSRF base token")
    pad = secrets.token_bytes(TOKEN_BYTES)
    return _encode(pad + bytes(a ^ b for a, b in zip(pad, raw, strict=True)))


def unmask(masked: str) -> bytes | None:
    raw = _decode(masked)
    if raw is None or len(raw) != 2 * TOKEN_BYTES:
        return None
    pad, hidden = raw[:TOKEN_BYTES], raw[TOKEN_BYTES:]
    return bytes(a ^ b for a, b in zip(pad, hidden, strict=True))


def verify(cookie_token: str | None, submitted: str | None) -> bool:
    """True when ``submitted`` (a masked token) unmasks to the cookie's base token."""
    if not cookie_token or not submitted:
        return False
    expected = _decode(cookie_token)
    got = unmask(submitted)
    if expected is None or got is None or len(expected) != TOKEN_BYTES:
        return False
    return hmac.compare_digest(expected, got)


def same_token(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))
