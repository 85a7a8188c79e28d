"""The clients to the app, as configured: each client library is imported when first needed.

aiohttp costs ~0.1 s of CPU to import (``python -X importtime -c "import aiohttp"``), paid by every
start: the default upstream client (``proxy.upstream_client: http1``) does not use it, and the
WebSocket proxy needs it only when a client upgrades a connection, which many apps never see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sidecar.config.model import Timeouts
from sidecar.proxy.http1 import Http1Client
from sidecar.proxy.upstream import Upstream, UpstreamSocket

if TYPE_CHECKING:
    from sidecar.proxy.aiohttp_websocket import AiohttpWebSockets


def create_upstream(timeouts: Timeouts, kind: str = "http1") -> Upstream:
    """The HTTP client to the app (``proxy.upstream_client``): ``http1`` (ours, the default) or
    ``aiohttp``; the benchmark runs both (DESIGN §6)."""
    if kind == "http1":
        return Http1Client(timeouts.connect.total_seconds(), timeouts.read.total_seconds())
    if kind == "aiohttp":
        from sidecar.proxy.aiohttp_client import AiohttpUpstream

        return AiohttpUpstream(timeouts)
    raise ValueError(f"unknown upstream client {kind!r} (http1, aiohttp)")


class LazyWebSockets:
    """``AiohttpWebSockets`` (a ``WebSocketConnector``), built at the first proxied WebSocket."""

    def __init__(self, timeouts: Timeouts) -> None:
        self._timeouts = timeouts
        self._connector: AiohttpWebSockets | None = None

    async def connect(
        self, url: str, headers: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> UpstreamSocket:
        if self._connector is None:
            from sidecar.proxy.aiohttp_websocket import AiohttpWebSockets

            self._connector = AiohttpWebSockets(self._timeouts)
        return await self._connector.connect(url, headers, protocols)

    async def close(self) -> None:
        if self._connector is not None:
            await self._connector.close()
