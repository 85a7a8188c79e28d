"""The upstream client seam (DESIGN §6: "pick it by benchmark"; STYLE §4: injected).

Two implementations behind one small interface, ``UpstreamClient``:

- ``Http1Upstream`` (the default): ``sidecar.proxy.http1``, a pooled keep-alive HTTP/1.1 client
  on asyncio Protocols and httptools' parser; aiohttp's session is kept for WebSockets only.
- ``AiohttpUpstream``: one ``aiohttp.ClientSession`` per worker, created on the running loop at
  first use: no cookie jar (cookies belong to the browser), no automatic decompression (bytes
  pass through untouched, so ``Content-Length`` stays true), no default headers added.

``create_upstream`` picks one; ``SIDECAR_UPSTREAM_CLIENT=aiohttp`` selects the other (the
benchmark runs both). Both stream bodies both ways and, before the response has started, raise
``UpstreamTimeout`` (→ 504), ``UpstreamError`` (→ 502) or ``ClientGone``; once it has started,
any failure propagates so the server aborts the client connection.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from sidecar.config.model import Timeouts
from sidecar.proxy.headers import HOP_BY_HOP

Headers = list[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

ENV_CLIENT = "SIDECAR_UPSTREAM_CLIENT"
_CHUNK = 64 * 1024


class UpstreamError(Exception):
    """The upstream could not be reached or did not answer with valid HTTP/1.1 (502)."""


class UpstreamTimeout(UpstreamError, TimeoutError):
    """Connect or read timeout (504)."""


class UpstreamAborted(ConnectionError):
    """The upstream failed after the response had started: the client connection must be aborted
    (never mapped to an error page; ``forward_http`` lets it propagate)."""


class ClientGone(Exception):
    """The downstream client disconnected while its request body was being streamed."""


class UpstreamClient(Protocol):
    name: str

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
        """Stream ``method`` on ``base`` + ``target`` (raw path and query) and the response to
        ``send``. ``headers`` are the rewritten request headers, ``Host`` included."""

    @property
    def session(self) -> aiohttp.ClientSession:
        """aiohttp's session, for WebSocket upgrades (``sidecar.proxy.websocket``)."""

    async def close(self) -> None: ...


def create_upstream(timeouts: Timeouts, kind: str | None = None) -> UpstreamClient:
    kind = kind or os.environ.get(ENV_CLIENT) or "http1"
    if kind == "aiohttp":
        return AiohttpUpstream(timeouts)
    if kind == "http1":
        from sidecar.proxy.http1 import Http1Upstream

        return Http1Upstream(timeouts)
    raise ValueError(f"unknown upstream client {kind!r} (http1, aiohttp)")


def _response_headers(raw: tuple[tuple[bytes, bytes], ...]) -> Headers:
    listed: set[bytes] = set()
    for name, value in raw:
        if name.lower() == b"connection":
            listed.update(t.strip().lower() for t in value.split(b","))
    return [(n, v) for n, v in raw if n.lower() not in HOP_BY_HOP and n.lower() not in listed]


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

    @property
    def session(self) -> aiohttp.ClientSession:
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
            async with self.session.request(
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
