"""The revocation channel's transport: classic pub/sub, or sharded pub/sub on Redis Cluster.

``sidecar.session.invalidation.RedisInvalidation`` drives either through the same small surface:
``publish(channel, message)`` and ``pubsub()`` (``subscribe``, ``get_message``, ``aclose``). It
drops its whole cache on every subscription confirmation, so a subscription that reconnects
(messages were lost meanwhile) is never silently trusted.

On a cluster, ``SPUBLISH`` reaches the subscribers of the shard that owns the channel's slot (its
master and replicas) instead of every node over the cluster bus. The subscription is one plain
connection to that master with client-side retries off: when the master dies or the slot moves
(the server then sends ``sunsubscribe``), the read fails, the listener's loop asks the cluster
for its current topology and subscribes on the new owner.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis import exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class ShardSubscription:
    """A sharded subscription on the master that currently owns the channel's slot."""

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._node_client: redis.Redis | None = None
        self._pubsub: Any = None

    async def subscribe(self, channel: str) -> None:
        # A fresh slot map each time: this runs after the previous owner failed us.
        await self._cluster.nodes_manager.initialize()
        node = self._cluster.get_node_from_key(channel)
        if node is None:
            raise exceptions.ConnectionError(f"no node serves the slot of {channel!r}")
        kwargs = {**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        pool = redis.ConnectionPool(connection_class=node.connection_class, **kwargs)
        self._node_client = redis.Redis(connection_pool=pool)
        self._pubsub = self._node_client.pubsub()
        await self._pubsub.ssubscribe(channel)

    async def get_message(self, *, ignore_subscribe_messages: bool, timeout: float) -> dict[str, Any] | None:
        message = await self._pubsub.get_sharded_message(
            ignore_subscribe_messages=ignore_subscribe_messages, timeout=timeout
        )
        if message is None:
            return None
        kind = message.get("type")
        if kind in ("sunsubscribe", b"sunsubscribe"):
            # The server moved the slot away from this node: subscribe again on its new owner.
            raise exceptions.ConnectionError("the revocation channel's slot moved")
        if kind in ("smessage", b"smessage"):
            return {**message, "type": "message"}
        if kind in ("ssubscribe", b"ssubscribe"):
            return {**message, "type": "subscribe"}
        return message  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        if self._pubsub is not None:
            await self._pubsub.aclose()
        if self._node_client is not None:
            await self._node_client.aclose(close_connection_pool=True)


class ClusterChannel:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster

    async def publish(self, channel: str, message: str) -> int:
        return int(await self._cluster.spublish(channel, message))

    def pubsub(self) -> ShardSubscription:
        return ShardSubscription(self._cluster)
