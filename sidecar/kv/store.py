"""Short-lived keyed values: flows, CSRF state, rate-limit counters, one-time secrets.

Backends: Redis (``sidecar.storage.redis``) or a table in the SQL database
(``sidecar.storage.sql``) when Redis is not configured. Values are bytes; callers serialise.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol


class KeyValueStore(Protocol):
    async def set(self, key: str, value: bytes, ttl: timedelta) -> None: ...

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def take(self, key: str) -> bytes | None:
        """Atomically read and delete: of many concurrent callers exactly one gets the value."""
        ...

    async def add(self, key: str, value: bytes, ttl: timedelta) -> bool:
        """Set only if absent (atomic); True when this call set it."""
        ...

    async def incr(self, key: str, ttl: timedelta, by: int = 1) -> int:
        """Atomically add ``by`` (one; -1 takes an increment back); the first increment starts the
        TTL window. Returns the new count."""
        ...

    async def ttl(self, key: str) -> timedelta | None:
        """Time left before ``key`` expires, None when absent."""
        ...

    async def ping(self) -> None: ...
