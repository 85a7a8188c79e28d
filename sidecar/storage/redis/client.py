"""The Redis client, and the one place its failures become ``ServiceUnavailable``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import redis.asyncio as redis
from redis import exceptions

from sidecar.errors import ServiceUnavailable

log = logging.getLogger("sidecar.storage.redis")

# A replica promoted mid-flight answers READONLY; to callers that is the same transient outage.
_OUTAGES = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ReadOnlyError, OSError)


def create_client(url: str) -> redis.Redis:
    """A pooled client; ``from_url`` connects lazily, on the first command."""
    # Short timeouts: sessions are read on every proxied request, and a hung Redis must turn
    # into a quick 503 rather than a pile of stalled requests.
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)


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
