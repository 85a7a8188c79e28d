"""Secret tokens: generation (CSPRNG), storage digests and constant-time comparison.

Stores only ever see ``digest(token)``: a dump of Redis or the database yields no usable token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

_ALPHABET = string.ascii_letters + string.digits

SESSION_TOKEN_PREFIX = "ory_st_"
LOGOUT_TOKEN_PREFIX = "ory_lo_"


def random_alnum(length: int = 32) -> str:
    """32 alphanumerics carry ~190 bits, well above the 128-bit floor."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_session_token() -> str:
    return SESSION_TOKEN_PREFIX + random_alnum(32)


def new_logout_token() -> str:
    return LOGOUT_TOKEN_PREFIX + random_alnum(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def equal(a: str | bytes, b: str | bytes) -> bool:
    if isinstance(a, str):
        a = a.encode("utf-8", "surrogatepass")
    if isinstance(b, str):
        b = b.encode("utf-8", "surrogatepass")
    return hmac.compare_digest(a, b)
