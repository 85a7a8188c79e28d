"""A small pooled keep-alive HTTP/1.1 upstream client: asyncio Protocols + httptools (DESIGN §6).

Measured against aiohttp's client on the proxy hot path (bench/RESULTS.md): aiohttp spends about
two thirds of a proxied request in its own machinery (request/response objects, multidicts,
tracing hooks, a stream reader per response). This client does only what a reverse proxy needs:

- one ``_Conn`` protocol per TCP connection, idle connections kept per origin (LIFO, so the
  warmest socket is reused) for ``keepalive`` seconds (``KEEPALIVE``); active ones are not capped;
- the request head is written in one ``transport.write`` (with the body when the client sent it
  in one piece); longer bodies stream with the transport's flow control, re-framed as chunked
  when the client's length is unknown;
- the response is parsed by httptools (llhttp, strict): Content-Length, chunked and
  close-delimited bodies, HEAD and 1xx/204/304 without bodies, interim 1xx responses skipped;
  the body streams to the ASGI ``send`` with the upstream socket paused while more than
  ``_HIGH_WATER`` bytes wait, so memory stays flat whatever the size;
- a connection goes back to the pool only when its response was read to the end, the request
  was sent in full and both sides allow keep-alive;
- a pooled connection that turns out dead before any response byte arrived is retried once, on
  a new connection, when the request is idempotent and its body (if any) is still in hand;
- connect and read timeouts raise ``UpstreamTimeout`` (the caller answers 504), other failures
  before the response started raise ``UpstreamError`` (502); after the response started the
  error propagates and the server aborts the client connection, the only honest signal left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from httptools import HttpParserError, HttpResponseParser

from sidecar.config.model import Timeouts
from sidecar.proxy.headers import HOP_BY_HOP
from sidecar.proxy.upstream import (
    AiohttpUpstream,
    ClientGone,
    UpstreamAborted,
    UpstreamError,
    UpstreamTimeout,
)

Headers = list[tuple[bytes, bytes]]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]

_HIGH_WATER = 256 * 1024  # buffered response bytes before the upstream socket is paused
_LOW_WATER = 64 * 1024
_SMALL = 64 * 1024  # bodies up to this Content-Length are read whole, then sent in one message
_MAX_HEAD = 64 * 1024  # response status line + headers; more is a malformed response (502)
# Idle connections are dropped after this many seconds: below the 5 s keep-alive of uvicorn and
# Node.js servers, so a pooled connection is rarely one the upstream is closing at that moment
# (a race only idempotent requests can retry).
KEEPALIVE = 4.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_NO_BODY_STATUS = (204, 304)


class _Stale(UpstreamError):
    """A reused connection died before any byte of the response: safe to retry once."""


class _Origin:
    __slots__ = ("host", "host_header", "idle", "port", "prefix", "server_hostname", "ssl")

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream URL: {base!r}")
        secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if secure else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if secure else None
        self.server_hostname = self.host if secure else None
        self.prefix = parts.path.rstrip("/").encode("latin-1")
        self.host_header = parts.netloc.rpartition("@")[2].encode("latin-1")
        self.idle: list[_Conn] = []


def _timed_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("upstream read timed out"))


class _Conn(asyncio.Protocol):
    """One upstream TCP connection and the state of the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.origin: _Origin | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._write_paused = False
        self.parser: HttpResponseParser | None = None
        self.begin(False)
        self.parser = None

    # --- per response ------------------------------------------------------------------------

    def begin(self, head_request: bool) -> None:
        self.parser = HttpResponseParser(self)
        self.head_request = head_request
        self.status = 0
        self.headers: Headers = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.interim = False
        self.framed = False  # Content-Length or chunked: EOF before the end is a truncation
        self.small = False  # a Content-Length of at most _SMALL bytes
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.head_bytes = 0
        self.got_data = False
        self.request_sent = False
        self.error: BaseException | None = None
        self.reading_paused = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None or self.complete:
            # Bytes on an idle connection, or after a complete response: the stream is out of
            # step with our requests; never reuse it.
            self.error = UpstreamError("unexpected data from the upstream")
            self.keep_alive = False
            self._close()
            return
        self.got_data = True
        try:
            parser.feed_data(data)
        except HttpParserError as exc:
            if not (self.head_request and self.head_done):
                self.error = UpstreamError(f"malformed upstream response: {exc}")
            self.keep_alive = False
            self._close()
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD and self.error is None:
                self.error = UpstreamError("upstream response head too large")
                self._close()
        self._wake()

    def eof_received(self) -> bool:
        if self.head_done and not self.complete and not self.framed and not self.head_request:
            self.complete = True  # a close-delimited body ends here
        self.keep_alive = False
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        origin = self.origin
        if origin is not None and self.parser is None:
            with contextlib.suppress(ValueError):
                origin.idle.remove(self)
        if not self.complete and self.error is None:
            self.error = ConnectionResetError(f"upstream closed the connection{f': {exc}' if exc else ''}")
        self._wake()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.framed = True
            self.small = len(value) < 6 and int(value) <= _SMALL  # llhttp checked it is digits
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamError("unexpected protocol switch from the upstream")
            self.interim = True  # 100 Continue, 103 Early Hints: skipped, the final one follows
            self.headers = []
            self.framed = self.small = False
            return
        self.status = status
        self.head_done = True
        if self.head_request:
            # httptools cannot be told a HEAD response has no body: it ends at the head, and the
            # connection is not reused (the parser's idea of the framing is off).
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.head_request:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.head_request:
            return
        self.complete = True
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()

    # --- for the client ----------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    async def wait(self, timeout: float | None) -> None:
        """Until the protocol reports anything (head, body, end, error) or the read timeout."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiter = waiter
        handle = self.loop.call_later(timeout, _timed_out, waiter) if timeout else None
        try:
            await waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drain = self.loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def take(self) -> bytes:
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data


def _response_headers(raw: Headers) -> Headers:
    """Hop-by-hop headers and every name ``Connection`` lists end here (names are lower-case)."""
    listed: set[bytes] | None = None
    for name, value in raw:
        if name == b"connection":
            listed = listed or set()
            listed.update(t.strip().lower() for t in value.split(b","))
    if listed is None:
        return [h for h in raw if h[0] not in HOP_BY_HOP]
    return [h for h in raw if h[0] not in HOP_BY_HOP and h[0] not in listed]


class Http1Client:
    """The upstream client seam (``sidecar.proxy.upstream``) over ``_Conn`` pools."""

    name = "http1"

    def __init__(
        self,
        connect_timeout: float | None,
        read_timeout: float | None,
        *,
        pool_size: int = 512,
        keepalive: float = KEEPALIVE,
    ) -> None:
        self.connect_timeout = connect_timeout or None
        self.read_timeout = read_timeout or None
        self.pool_size = pool_size
        self.keepalive = keepalive
        self._origins: dict[str, _Origin] = {}

    # --- pool --------------------------------------------------------------------------------

    def _origin(self, base: str) -> _Origin:
        origin = self._origins.get(base)
        if origin is None:
            origin = self._origins[base] = _Origin(base)
        return origin

    async def _connect(self, origin: _Origin) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(loop),
                    origin.host,
                    origin.port,
                    ssl=origin.ssl,
                    server_hostname=origin.server_hostname,
                )
        except TimeoutError:
            raise UpstreamTimeout(f"connecting to {origin.host}:{origin.port} timed out") from None
        except OSError as exc:
            raise UpstreamError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from exc
        conn.origin = origin
        return conn

    def _checkout(self, origin: _Origin) -> _Conn | None:
        idle = origin.idle
        if not idle:
            return None
        deadline = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()
            if conn.closed or conn.idle_since < deadline:
                conn._close()
                continue
            return conn
        return None

    def _release(self, conn: _Conn) -> None:
        origin = conn.origin
        assert origin is not None
        conn.parser = None
        if conn.closed or len(origin.idle) >= self.pool_size:
            conn._close()
            return
        conn.idle_since = time.monotonic()
        origin.idle.append(conn)

    def _discard_idle(self, origin: _Origin) -> None:
        """After a stale connection: its idle siblings are likely stale too (upstream restart)."""
        idle, origin.idle = origin.idle, []
        for conn in idle:
            conn._close()

    async def close(self) -> None:
        for origin in self._origins.values():
            self._discard_idle(origin)
        self._origins.clear()

    # --- one request -------------------------------------------------------------------------

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
        """Stream ``method base+target`` upstream and the response to ``send``; see the module doc.

        ``headers`` are the rewritten request headers (``Host`` included when the client sent one).
        """
        origin = self._origin(base)
        head_request = method == "HEAD"
        lines = [method.encode("latin-1"), b" ", origin.prefix, target, b" HTTP/1.1\r\n"]
        host_seen = chunked = False
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
            if not host_seen and name.lower() == b"host":
                host_seen = True
        if not host_seen:
            lines += (b"host: ", origin.host_header, b"\r\n")
        body = b""
        more = False
        if has_body:
            if not any(n.lower() == b"content-length" for n, _ in headers):
                chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body = message.get("body", b"")
            more = message.get("more_body", False)
        lines.append(b"\r\n")
        if chunked:
            if body:
                lines += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                lines.append(b"0\r\n\r\n")
        elif body:
            lines.append(body)
        payload = b"".join(lines)
        retry = method in _IDEMPOTENT and not more

        conn = self._checkout(origin)
        reused = conn is not None
        if conn is None:
            conn = await self._connect(origin)
        try:
            try:
                await self._exchange(conn, reused, head_request, payload, more, chunked, receive)
            except _Stale:
                conn.abort()
                self._discard_idle(origin)
                if not retry:
                    raise UpstreamError("the pooled upstream connection was closed") from None
                conn = await self._connect(origin)
                await self._exchange(conn, False, head_request, payload, more, chunked, receive)
            await self._respond(conn, send)
        except BaseException:
            if conn.parser is not None:  # not yet back in the pool (or closed) by _finish
                conn.abort()
            raise

    async def _exchange(
        self,
        conn: _Conn,
        reused: bool,
        head_request: bool,
        payload: bytes,
        more: bool,
        chunked: bool,
        receive: Receive,
    ) -> None:
        """Send the request, and wait for the response head."""
        conn.begin(head_request)
        transport = conn.transport
        assert transport is not None
        if conn.closed or transport.is_closing():
            raise _Stale if reused else UpstreamError("upstream connection closed")
        transport.write(payload)
        conn.request_sent = not more
        while more:
            if conn._write_paused:
                await conn.drain()
            if conn.closed or conn.head_done:
                break  # the upstream answered (or gave up) before reading the whole body
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if conn.closed or transport.is_closing():
                break
            if chunked:
                if body:
                    transport.writelines((b"%x\r\n" % len(body), body, b"\r\n"))
                if not more:
                    transport.write(b"0\r\n\r\n")
            elif body:
                transport.write(body)
            conn.request_sent = not more
        timeout = self.read_timeout
        # Until the head, or the whole response when it is small and framed by Content-Length
        # (the common case: one message to the client, one wake-up less per request).
        while not (conn.complete or (conn.head_done and not conn.small)):
            if conn.error is not None:
                if reused and not conn.got_data and isinstance(conn.error, OSError):
                    raise _Stale
                raise self._as_error(conn.error)
            await conn.wait(timeout)

    @staticmethod
    def _as_error(exc: BaseException) -> BaseException:
        if isinstance(exc, UpstreamError):
            return exc
        return UpstreamError(str(exc))

    async def _respond(self, conn: _Conn, send: Send) -> None:
        start = {
            "type": "http.response.start",
            "status": conn.status,
            "headers": _response_headers(conn.headers),
        }
        if conn.complete:
            # The whole response is here (the common small case): one send for the body, and the
            # connection goes back to the pool before we yield to the client.
            body = conn.take() if conn.chunks else b""
            self._finish(conn)
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await send(start)
        timeout = self.read_timeout
        try:
            while True:
                if conn.chunks:
                    await send({"type": "http.response.body", "body": conn.take(), "more_body": True})
                elif conn.complete:
                    break
                elif conn.error is not None:
                    raise self._as_error(conn.error)
                else:
                    await conn.wait(timeout)
        except UpstreamError as exc:
            raise UpstreamAborted(f"upstream failed mid-response: {exc}") from exc
        self._finish(conn)
        await send({"type": "http.response.body", "body": b""})

    def _finish(self, conn: _Conn) -> None:
        if conn.keep_alive and conn.request_sent and not conn.closed and not conn.head_request:
            self._release(conn)
        else:
            conn.parser = None
            conn._close()


class Http1Upstream(Http1Client):
    """``Http1Client`` for HTTP, with aiohttp's session kept for WebSocket upgrades only."""

    def __init__(self, timeouts: Timeouts, *, pool_size: int = 512, keepalive: float = KEEPALIVE) -> None:
        super().__init__(
            timeouts.connect.total_seconds(),
            timeouts.read.total_seconds(),
            pool_size=pool_size,
            keepalive=keepalive,
        )
        self._websockets = AiohttpUpstream(timeouts, pool_size=pool_size)

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._websockets.session

    async def close(self) -> None:
        await super().close()
        await self._websockets.close()
