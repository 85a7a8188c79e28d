"""Which peers may speak for the client: ``serve.public.trusted_proxies``.

Only a request whose TCP peer is a trusted proxy may bring ``X-Forwarded-*`` / ``X-Original-*``
values, a client address in ``X-Forwarded-For`` or its own ``X-Request-ID``; from anyone else
those headers are the client's word and are ignored (proxy-conventions.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")


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
