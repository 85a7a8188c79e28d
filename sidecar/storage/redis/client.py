"""The Redis client for each topology, and the one place its failures become ``ServiceUnavailable``.

``standalone``: one server (or a managed endpoint that fails over behind one address).
``cluster``: ``redis.asyncio.cluster.RedisCluster``; it follows MOVED/ASK and refreshes its slot
map when a node dies, so a failover costs the requests that meet it a 503, never a restart.
``sentinel``: the master of a Sentinel-monitored group; the pool asks the sentinels again after a
connection to the old master fails.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis import exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff

from sidecar.config.model import RedisConfig
from sidecar.errors import ServiceUnavailable

log = logging.getLogger("sidecar.storage.redis")

# A replica promoted mid-flight answers READONLY; a cluster whose slot owner just died answers
# CLUSTERDOWN or TRYAGAIN, or runs out of redirections: to callers all of it is the same
# transient outage. (MasterNotFoundError is a ConnectionError.)
_OUTAGES = (
    exceptions.ConnectionError,
    exceptions.TimeoutError,
    exceptions.ReadOnlyError,
    exceptions.ClusterDownError,
    exceptions.TryAgainError,
    exceptions.ClusterError,
    exceptions.SlotNotCoveredError,
    exceptions.RedisClusterUnreachableError,
    OSError,
)

# Short timeouts: sessions are read on every proxied request, and a hung Redis must turn into a
# quick 503 rather than a pile of stalled requests.
_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 5}


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def create_client(config: RedisConfig) -> Any:
    """A pooled client for ``config.mode``; nothing connects before the first command."""
    if config.mode == "cluster":
        return _cluster(config)
    if config.mode == "sentinel":
        return _sentinel_master(config)
    return redis.Redis.from_url(config.url, health_check_interval=30, **_TIMEOUTS)


def _cluster(config: RedisConfig) -> RedisCluster:
    nodes = [ClusterNode(*_address(a)) for a in config.nodes]
    # A few quick retries ride out the seconds between a master's death and its replica's
    # promotion (cluster-node-timeout) for the requests that meet them; longer outages are 503s.
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3)
    common: dict[str, Any] = {"retry": retry, **_TIMEOUTS}
    if config.url:
        return RedisCluster.from_url(config.url, startup_nodes=nodes or None, **common)
    return RedisCluster(startup_nodes=nodes, **common)


def _sentinel_master(config: RedisConfig) -> redis.Redis:
    parts = urlsplit(config.url) if config.url else None
    auth: dict[str, Any] = {}
    if parts is not None:
        if parts.username:
            auth["username"] = unquote(parts.username)
        if parts.password:
            auth["password"] = unquote(parts.password)
        if parts.path.strip("/").isdigit():
            auth["db"] = int(parts.path.strip("/"))
        if parts.scheme == "rediss":
            auth["ssl"] = True
    sentinel = Sentinel(
        [_address(a) for a in config.sentinels], sentinel_kwargs=dict(_TIMEOUTS), **_TIMEOUTS, **auth
    )
    master: redis.Redis = sentinel.master_for(config.sentinel_master, health_check_interval=30)
    return master


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except _OUTAGES as exc:
        log.debug("redis unavailable: %s", type(exc).__name__)  # the store monitor logs outages
        raise ServiceUnavailable("the session and key-value store is unavailable") from exc


def milliseconds(ttl: timedelta) -> int:
    return int(ttl.total_seconds() * 1000)


def milliseconds_until(moment: datetime) -> int:
    return milliseconds(moment - datetime.now(UTC))


def as_bytes(value: bytes | str | None) -> bytes | None:
    # The client never decodes responses, but its type hints allow for a client that does.
    return value.encode() if isinstance(value, str) else value
