"""The upstream side of proxied WebSockets over aiohttp (``sidecar.proxy.upstream.WebSocketConnector``).

One ``aiohttp.ClientSession`` per worker, created on the running loop at first use: no cookie
jar (cookies belong to the browser), no default headers added, pings answered automatically, no
message size limit (the client's messages pass through as they are).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import aiohttp

from sidecar.config.model import Timeouts
from sidecar.proxy.upstream import UpstreamError


class AiohttpSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    @property
    def protocol(self) -> str | None:
        return self._ws.protocol

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    async def send_text(self, data: str) -> None:
        await self._ws.send_str(data)

    async def send_bytes(self, data: bytes) -> None:
        await self._ws.send_bytes(data)

    async def receive(self) -> str | bytes | None:
        msg = await self._ws.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type == aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        return None  # close, closing, closed or error: the upstream side is done

    async def close(self) -> None:
        await self._ws.close()


class AiohttpWebSockets:
    def __init__(
        self, timeouts: Timeouts, *, pool_size: int = 512, keepalive: timedelta = timedelta(seconds=30)
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=timeouts.connect.total_seconds(), sock_read=timeouts.read.total_seconds()
        )
        self._pool_size = pool_size
        self._keepalive = keepalive.total_seconds()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size,
                limit_per_host=self._pool_size,
                keepalive_timeout=self._keepalive,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def connect(
        self, url: str, headers: Sequence[tuple[str, str]], protocols: Sequence[str]
    ) -> AiohttpSocket:
        try:
            ws = await self._client().ws_connect(
                url, headers=list(headers), protocols=tuple(protocols), autoping=True, max_msg_size=0
            )
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(str(exc) or type(exc).__name__) from exc
        return AiohttpSocket(ws)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
