"""Revocations reach every worker's session cache at once (DESIGN §5.3).

``RedisInvalidation``: publish on a Redis channel; each worker subscribes and drops exactly the
revoked session or identity. After a reconnect the whole cache is dropped, since messages sent
while the subscription was down are lost.

``PollingInvalidation`` (SQL mode, no Redis): publishing writes a fresh random value under one
key of the ``KeyValueStore``; every worker polls that key every ``interval`` and drops its whole
cache when the value changed. Revocations are rare, so a full drop costs little. Bound: a revoked
session is served by another worker for at most ``interval`` (default 1 s), or the cache TTL
when the store is unreachable, whichever is shorter. The publishing worker applies it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import uuid
from datetime import timedelta
from typing import Any, Protocol

from sidecar.kv.store import KeyValueStore

log = logging.getLogger("sidecar.session")

CHANNEL = "sidecar:session-revocations"
EPOCH_KEY = "sidecar:session-revocations:epoch"


class SessionCache(Protocol):
    """The in-process cache a revocation clears (``sidecar.session.resolver.SessionResolver``)."""

    def invalidate_session(self, session_id: uuid.UUID) -> None: ...

    def invalidate_identity(self, identity_id: uuid.UUID) -> None: ...

    def invalidate_all(self) -> None: ...


class Invalidation(Protocol):
    """What the session manager calls after logout or revocation, and the app starts and stops."""

    async def publish(
        self, session_id: uuid.UUID | None = None, identity_id: uuid.UUID | None = None
    ) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


STOP_WAIT = 3.0
"""Seconds a listener gets to end by itself at stop, and again after a cancellation."""


async def _settle(task: asyncio.Future[Any], what: str, *, cancel_after: float | None = None) -> bool:
    """Wait for ``task`` to finish (cancelled once after ``cancel_after`` seconds), never forever.

    Whatever it ends with is consumed here, so nothing is logged as "never retrieved"."""
    done, _ = await asyncio.wait({task}, timeout=cancel_after or STOP_WAIT)
    if not done and cancel_after is not None:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_WAIT)

    def consume(finished: asyncio.Future[Any]) -> None:
        if not finished.cancelled() and finished.exception() is not None:
            log.debug("error while %s", what, exc_info=finished.exception())

    if not done:
        task.add_done_callback(consume)
        return False
    consume(task)
    return True


def _apply(cache: SessionCache | None, session_id: Any, identity_id: Any) -> None:
    if cache is None:
        return
    if session_id:
        cache.invalidate_session(uuid.UUID(str(session_id)))
    if identity_id:
        cache.invalidate_identity(uuid.UUID(str(identity_id)))
    if not session_id and not identity_id:
        cache.invalidate_all()


class RedisInvalidation:
    def __init__(
        self, client: Any, cache: SessionCache | None, *, channel: str = CHANNEL, retry: float = 1.0
    ) -> None:
        # ``publish(channel, message)`` and ``pubsub()``: a redis.asyncio.Redis, or the sharded
        # channel of a cluster (sidecar.storage.redis.channel).
        self.client = client
        self.channel = channel
        self.retry = retry
        self._cache = cache
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.subscribed = asyncio.Event()

    async def publish(
        self, session_id: uuid.UUID | None = None, identity_id: uuid.UUID | None = None
    ) -> None:
        _apply(self._cache, session_id, identity_id)
        message = json.dumps(
            {
                "session_id": str(session_id) if session_id else None,
                "identity_id": str(identity_id) if identity_id else None,
            }
        )
        try:
            await self.client.publish(self.channel, message)
        except Exception:  # the revocation itself is stored; other caches expire within their TTL
            log.warning("could not publish a session revocation; other workers drop it within the cache TTL")

    async def _listen(self) -> None:
        lost = False
        while not self._stopping:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                if self._cache is not None:
                    self._cache.invalidate_all()  # anything published while we were away is lost
                self.subscribed.set()
                if lost:
                    log.info("revocation subscription restored")
                    lost = False
                while not self._stopping:
                    # Polling with a timeout, not listen(): the client's socket_timeout would
                    # otherwise turn every quiet spell into a reconnect and a full cache drop,
                    # and ``stop`` needs a turn of this loop to end it without a cancellation.
                    message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
                    if message is None:
                        continue
                    if message.get("type") == "subscribe" and self._cache is not None:
                        # The client re-subscribes by itself after a dropped connection; whatever
                        # was published in between is lost, so nothing cached may be trusted.
                        self._cache.invalidate_all()
                    if message.get("type") != "message":
                        continue
                    try:
                        data = json.loads(message["data"])
                        _apply(self._cache, data.get("session_id"), data.get("identity_id"))
                    except (ValueError, TypeError, AttributeError):
                        log.warning("ignoring a malformed revocation message")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                # Once per outage: the store monitor already says why Redis is down.
                if not lost:
                    log.warning("revocation subscription lost (%s); retrying every %.1fs", exc, self.retry)
                    lost = True
                await asyncio.sleep(self.retry)
            finally:
                await _settle(asyncio.ensure_future(pubsub.aclose()), "closing the revocation subscription")

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._listen(), name="session-revocations")

    async def stop(self) -> None:
        """Ends the listener without relying on a cancellation: redis-py's pub/sub read can hold a
        cancelled task forever, which hung shutdown. The loop sees ``_stopping`` within a second."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if not await _settle(task, "stopping the revocation listener", cancel_after=STOP_WAIT):
            log.warning("the revocation listener did not stop in time; leaving it behind")


class PollingInvalidation:
    def __init__(
        self,
        kv: KeyValueStore,
        cache: SessionCache | None,
        *,
        key: str = EPOCH_KEY,
        interval: float = 1.0,
        keep: timedelta = timedelta(days=30),
    ) -> None:
        self.kv = kv
        self.key = key
        self.interval = interval
        self.keep = keep
        self._cache = cache
        self._task: asyncio.Task[None] | None = None
        self._seen: bytes | None = None

    async def publish(
        self, session_id: uuid.UUID | None = None, identity_id: uuid.UUID | None = None
    ) -> None:
        _apply(self._cache, session_id, identity_id)
        value = secrets.token_hex(16).encode()
        try:
            await self.kv.set(self.key, value, self.keep)
        except Exception:
            log.warning("could not record a session revocation; other workers drop it within the cache TTL")

    async def poll_once(self) -> None:
        value = await self.kv.get(self.key)
        if value != self._seen:
            self._seen = value
            if self._cache is not None:
                self._cache.invalidate_all()

    async def _poll(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Once per outage: the store monitor already says why the store is down.
                if not failing:
                    log.warning("revocation poll failed (%s); the cache TTL bounds staleness", exc)
                    failing = True
            else:
                failing = False

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            self._seen = await self.kv.get(self.key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="session-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def create_invalidation(
    kv: KeyValueStore, cache: SessionCache, redis_client: Any | None = None, *, prefix: str = ""
) -> Invalidation:
    """Redis pub/sub when a Redis client is available, else polling the key-value store."""
    if redis_client is not None:
        return RedisInvalidation(redis_client, cache, channel=prefix + CHANNEL)
    return PollingInvalidation(kv, cache)
