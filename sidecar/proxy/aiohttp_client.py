"""The aiohttp upstream client (``sidecar.proxy.upstream.Upstream``), kept for comparison.

One ``aiohttp.ClientSession`` per worker, created on the running loop at first use: no cookie jar
(cookies belong to the browser), no automatic decompression (bytes pass through untouched, so
``Content-Length`` stays true), no default headers added. ``proxy.upstream_client: aiohttp``
selects it instead of ``sidecar.proxy.http1`` (the benchmark runs both).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from sidecar.config.model import Timeouts
from sidecar.proxy.headers import HOP_BY_HOP, canonical, connection_options
from sidecar.proxy.upstream import (
    ClientGone,
    Headers,
    Receive,
    Send,
    UpstreamError,
    UpstreamTimeout,
)

_CHUNK = 64 * 1024


def _response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> Headers:
    listed: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            listed.update(connection_options(value))
    if not listed:
        return [(n, v) for n, v in raw if n.lower() not in HOP_BY_HOP]
    return [(n, v) for n, v in raw if n.lower() not in HOP_BY_HOP and canonical(n) not in listed]


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionResetError("client disconnected")  # aiohttp passes an OSError through
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


class AiohttpUpstream:
    name = "aiohttp"

    def __init__(
        self, timeouts: Timeouts, *, pool_size: int = 512, keepalive: timedelta = timedelta(seconds=30)
    ) -> None:
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.connect.total_seconds(),
            sock_read=timeouts.read.total_seconds(),
        )
        self.pool_size = pool_size
        self.keepalive = keepalive.total_seconds()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.pool_size,
                limit_per_host=self.pool_size,
                keepalive_timeout=self.keepalive,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
            )
        return self._session

    async def forward(
        self,
        method: str,
        base: str,
        target: bytes,
        headers: Headers,
        has_body: bool,
        receive: Receive,
        send: Send,
    ) -> None:
        started = False
        try:
            async with self._client().request(
                method,
                URL(base + target.decode("latin-1"), encoded=True),
                headers=CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in headers),
                data=_request_body(receive) if has_body else None,
                allow_redirects=False,
                compress=None,
            ) as resp:
                start = {
                    "type": "http.response.start",
                    "status": resp.status,
                    "headers": _response_headers(resp.raw_headers),
                }
                if method == "HEAD":
                    await send(start)
                    started = True
                    await send({"type": "http.response.body", "body": b""})
                    return
                length = resp.content_length
                if length is not None and length <= _CHUNK:
                    # Small bodies (the common case) in one read and one send: fewer loop turns.
                    body = await resp.content.readexactly(length) if length else b""
                    await send(start)
                    started = True
                    await send({"type": "http.response.body", "body": body})
                    return
                await send(start)
                started = True
                async for chunk in resp.content.iter_chunked(_CHUNK):
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            if started:
                raise
            raise UpstreamTimeout(str(exc) or "upstream timed out") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if started:
                raise
            if isinstance(exc, ConnectionResetError):
                raise ClientGone from exc
            raise UpstreamError(str(exc)) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
