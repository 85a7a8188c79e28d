"""Header facts and rewriting for the access path, on raw ``(bytes, bytes)`` pairs.

RFC 9110 §7.6.1: hop-by-hop headers (``Connection`` and every name it lists) end at each hop.
Identity headers are ours alone: a client copy in any case or with ``_`` for ``-`` (CGI/WSGI map
both to ``HTTP_X_USER_ID``) is removed before ours are added (proxy-conventions.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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
DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")


def canonical(name: bytes) -> bytes:
    return name.lower().replace(b"_", b"-")


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(canonical(t.strip()) for t in value.split(b",") if t.strip())
    return frozenset(tokens)


def is_identity_header(canon: bytes, strip: frozenset[bytes]) -> bool:
    return canon in strip or canon.startswith(IDENTITY_PREFIX)


def header_value_ok(value: str) -> bool:
    """No CR, LF, NUL or other control characters: a trait must not inject a header."""
    return all(c == "\t" or (c >= " " and c != "\x7f") for c in value)


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """``serve.public.trusted_proxies``: absent means loopback only (the documented default), an
    explicit empty list means nobody."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    # Parsing an address costs more than the rest of a cached decision; peers repeat (keep-alive,
    # a front proxy), so the answer is memoised per peer (keyed by the peer alone: hashing the
    # networks on every lookup cost as much as the lookup).
    _memo: dict[str, bool] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def parse(cls, cidrs: Sequence[str] | None) -> TrustedProxies:
        items = list(DEFAULT_TRUSTED_PROXIES if cidrs is None else cidrs)
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in items))

    def trusts(self, peer: str | None) -> bool:
        if not peer:
            return False
        memo = self._memo
        known = memo.get(peer)
        if known is not None:
            return known
        try:
            addr = ipaddress.ip_address(peer)
        except ValueError:
            return False
        result = any(addr in net for net in self.networks)
        if len(memo) > 4096:  # bounded: peers are many only under attack
            memo.clear()
        memo[peer] = result
        return result

    def client_address(self, peer: str | None, xff: bytes | None) -> str:
        """Walk ``X-Forwarded-For`` from the right past trusted hops (werkzeug ProxyFix)."""
        if not peer:
            return ""
        if not xff or not self.trusts(peer):
            return peer
        hops = [h.strip().decode("latin-1") for h in xff.split(b",") if h.strip()]
        current = peer
        while hops and self.trusts(current):
            current = hops.pop()
        return current


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
