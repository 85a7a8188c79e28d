"""sidecar/session/invalidation.py: stopping the Redis revocation listener never hangs."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from typing import Any

import httpx

from sidecar.app import build_services, create_public_app
from sidecar.session.invalidation import STOP_WAIT, RedisInvalidation
from tests.conftest import REDIS_URL, make_config


async def _stops_within(stop: Coroutine[Any, Any, None], seconds: float) -> None:
    # Not wait_for: it cancels the stop on timeout, and a stop that swallows the cancellation
    # would then look as if it had finished.
    stopping = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    assert done, f"stop() did not finish within {seconds} s"
    stopping.result()


class StubbornPubSub:
    """A pub/sub whose read, once cancelled, never returns: what redis-py 8 did to a cancelled
    ``get_message`` and what hung every worker's shutdown with Redis configured."""

    def __init__(self) -> None:
        self.closed = False

    async def subscribe(self, channel: str) -> None:
        return None

    async def get_message(self, *, ignore_subscribe_messages: bool, timeout: float) -> Any:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            await asyncio.Event().wait()
        return None

    async def aclose(self) -> None:
        self.closed = True


class StubbornClient:
    def __init__(self) -> None:
        self.pubsubs: list[StubbornPubSub] = []

    def pubsub(self) -> StubbornPubSub:
        self.pubsubs.append(StubbornPubSub())
        return self.pubsubs[-1]


async def test_stop_ends_the_listener_without_cancelling_its_read() -> None:
    client = StubbornClient()
    listener = RedisInvalidation(client, None)
    await listener.start()
    await asyncio.wait_for(listener.subscribed.wait(), 5)
    await _stops_within(listener.stop(), STOP_WAIT)
    assert client.pubsubs and all(p.closed for p in client.pubsubs)


async def test_services_on_redis_stop_every_time(sqlite_dsn: str, unique_prefix: str) -> None:
    """The whole stop with the gateway's listener subscribed (it hung within a few rounds)."""
    for _ in range(5):
        config = make_config(dsn=sqlite_dsn, dev=True, redis={"url": REDIS_URL, "key_prefix": unique_prefix})
        services = build_services(config, courier_worker=False)
        await services.start()
        app = create_public_app(services, manage_lifespan=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as c:
            assert (await c.get("/.auth/health/alive")).status_code == 200
            await c.get("/app/" + uuid.uuid4().hex)  # through the gateway: starts the listener
        await _stops_within(services.stop(), 3 * STOP_WAIT)
