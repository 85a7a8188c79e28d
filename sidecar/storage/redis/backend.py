"""Redis for sessions and short-lived values (DESIGN.md §2): TTL-native and one round trip away."""

from __future__ import annotations

from sidecar.storage.redis.client import create_client, translate_errors
from sidecar.storage.redis.kv import RedisKeyValueStore
from sidecar.storage.redis.sessions import RedisSessionStore


class RedisBackend:
    """Both Redis-backed stores over one connection pool; constructing it connects to nothing.

    ``prefix`` namespaces every key, so several sidecars (or test runs) can share one Redis.
    """

    def __init__(self, url: str, prefix: str = "sidecar:") -> None:
        self.client = create_client(url)
        self.prefix = prefix
        self.sessions = RedisSessionStore(self.client, prefix)
        self.kv = RedisKeyValueStore(self.client, prefix)

    async def ping(self) -> None:
        """Raise ``ServiceUnavailable`` when Redis cannot be reached."""
        with translate_errors():
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
