"""Redis for sessions and short-lived values (DESIGN.md §2): TTL-native and one round trip away."""

from __future__ import annotations

from typing import Any

from sidecar.config.model import RedisConfig
from sidecar.storage.redis.channel import ClusterChannel
from sidecar.storage.redis.client import create_client
from sidecar.storage.redis.kv import RedisKeyValueStore
from sidecar.storage.redis.sessions import RedisSessionStore


def session_key_prefix(config: RedisConfig) -> str:
    """Where the session store's keys live.

    Its scripts touch a session, its token pointer, its identity's set and the expiry index in
    one atomic step, so on Redis Cluster they must share a hash slot: one hash tag per sidecar
    deployment (``{<prefix>sessions}``). Flows, one-time codes and counters are single-key
    operations and spread over the whole cluster. Other modes keep the untagged layout, so an
    existing Redis keeps its sessions across an upgrade."""
    if config.mode == "cluster":
        return f"{config.key_prefix}{{{config.key_prefix}sessions}}:"
    return config.key_prefix


class RedisBackend:
    """Both Redis-backed stores over one connection pool; constructing it connects to nothing.

    ``target`` is the ``redis`` config, or a plain ``redis://`` URL (a standalone server). The
    key prefix namespaces every key, so several sidecars (or test runs) can share one Redis.
    """

    def __init__(self, target: RedisConfig | str, prefix: str | None = None) -> None:
        if isinstance(target, str):
            target = RedisConfig(url=target, key_prefix=prefix if prefix is not None else "sidecar:")
        elif prefix is not None:
            target = target.model_copy(update={"key_prefix": prefix})
        self.config = target
        self.client: Any = create_client(target)
        self.prefix = target.key_prefix
        self.sessions = RedisSessionStore(self.client, session_key_prefix(target))
        self.kv = RedisKeyValueStore(self.client, self.prefix)
        # The revocation channel: sharded pub/sub on a cluster; otherwise the client itself
        # (classic PUBLISH/SUBSCRIBE; under Sentinel it follows the master across failovers).
        self.channel: Any = ClusterChannel(self.client) if target.mode == "cluster" else self.client

    async def ping(self) -> None:
        """Raise ``ServiceUnavailable`` when Redis cannot be reached."""
        await self.kv.ping()

    async def close(self) -> None:
        await self.sessions.close()
        await self.client.aclose()
