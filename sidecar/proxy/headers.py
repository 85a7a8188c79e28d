"""Header facts and rewriting for the access path, on raw ``(bytes, bytes)`` pairs.

RFC 9110 §7.6.1: hop-by-hop headers (``Connection`` and every name it lists) end at each hop.
Identity headers are ours alone: a client copy in any case or with ``_`` for ``-`` (CGI/WSGI map
both to ``HTTP_X_USER_ID``) is removed before ours are added (proxy-conventions.md).
"""

from __future__ import annotations

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Never forwarded from a client: a method override would change the request after the rule ran.
METHOD_OVERRIDES = frozenset({b"x-http-method-override", b"x-http-method", b"x-method-override"})
FORWARDED = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
        b"x-real-ip",
    }
)
IDENTITY_PREFIX = b"x-user-"


def canonical(name: bytes) -> bytes:
    return name.lower().replace(b"_", b"-")


def connection_options(value: bytes) -> list[bytes]:
    """The field names one ``Connection`` header lists (RFC 9110 §7.6.1), in canonical form: each
    of them is hop-by-hop and ends at this hop, whichever way round the message goes."""
    return [canonical(token.strip()) for token in value.split(b",") if token.strip()]


def header_value_ok(value: str) -> bool:
    """No CR, LF, NUL or other control characters: a trait must not inject a header."""
    if value.isascii() and value.isprintable():  # " " to "~" only: checked in C (an email, an id)
        return True
    return all(c == "\t" or (c >= " " and c != "\x7f") for c in value)


def parse_cookie(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip().strip(b'"')
    return None


def drop_cookie(header: bytes, name: bytes) -> bytes:
    """The ``Cookie`` header without the sidecar's own session cookie."""
    parts = [p.strip() for p in header.split(b";")]
    return b"; ".join(p for p in parts if p and p.partition(b"=")[0] != name)
