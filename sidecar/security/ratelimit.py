"""Mail-bombing limits: messages sent per address and per client IP in a fixed window.

Every send counts (each one costs the recipient a mail), counted before anything is looked up
with the store's atomic ``incr``, so parallel requests are each counted. Windows are fixed (the
first send starts the TTL). Addresses are stored as digests, never in clear. Built by
``flows.service.send_limits`` from ``security.rate_limit.send_per_address`` / ``send_per_ip``.

Credential guessing is throttled elsewhere, by failures only: ``sidecar.security.throttle``.
Over the limit the flow shows message 4000429 (a sidecar id in Kratos' generic-validation range,
unused by Kratos) and the HTTP answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta

from sidecar.config.model import RateLimit
from sidecar.kv.store import KeyValueStore


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    """Seconds until the window that blocked this attempt closes (0 when allowed)."""


ALLOWED = Verdict(True)


def _identifier_key(flow: str, identifier: str) -> str:
    folded = identifier.strip().casefold().encode("utf-8", "surrogatepass")
    return f"ratelimit:{flow}:id:{hashlib.sha256(folded).hexdigest()}"


def _ip_key(flow: str, ip: str) -> str:
    return f"ratelimit:{flow}:ip:{ip}"


class RateLimiter:
    """Fixed-window counters per address and per client IP (``per_identifier`` / ``per_ip`` of the
    ``RateLimit`` it is given, set from the ``send_*`` keys)."""

    def __init__(self, kv: KeyValueStore, config: RateLimit) -> None:
        self._kv = kv
        self._config = config

    async def _over(self, key: str, limit: int) -> int:
        count = await self._kv.incr(key, self._config.window)
        if count <= limit:
            return 0
        left = await self._kv.ttl(key)
        window = left if left is not None and left > timedelta(0) else self._config.window
        return max(1, math.ceil(window.total_seconds()))

    async def hit(self, flow: str, *, identifier: str | None, ip: str | None) -> Verdict:
        """Count one submission; the verdict says whether it may go on."""
        if not self._config.enabled:
            return ALLOWED
        waits = []
        if ip:
            waits.append(await self._over(_ip_key(flow, ip), self._config.per_ip))
        if identifier:
            waits.append(await self._over(_identifier_key(flow, identifier), self._config.per_identifier))
        wait = max(waits, default=0)
        return Verdict(False, wait) if wait else ALLOWED
