"""A small pooled keep-alive HTTP/1.1 upstream client: asyncio Protocols + httptools (DESIGN §6).

Measured against aiohttp's client on the proxy hot path (bench/RESULTS.md): aiohttp spends about
two thirds of a proxied request in its own machinery (request/response objects, multidicts,
tracing hooks, a stream reader per response). This client does only what a reverse proxy needs:

- one ``Connection`` protocol (``sidecar.proxy.http1_connection``) per TCP connection, idle
  connections kept per origin (LIFO, so the warmest socket is reused) for ``keepalive`` seconds
  (``KEEPALIVE``); active ones are not capped;
- the request head is written in one ``transport.write`` (with the body when the client sent it
  in one piece); longer bodies stream with the transport's flow control, re-framed as chunked
  when the client's length is unknown;
- the response is parsed by httptools (llhttp, strict): Content-Length, chunked and
  close-delimited bodies, HEAD and 1xx/204/304 without bodies, interim 1xx responses skipped;
  the body streams to the ASGI ``send`` with the upstream socket paused while more than
  ``HIGH_WATER`` bytes wait, so memory stays flat whatever the size;
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
import time

from sidecar.proxy.http1_connection import Connection, Origin, ReadClock
from sidecar.proxy.upstream import (
    ClientGone,
    Headers,
    Receive,
    Send,
    UpstreamAborted,
    UpstreamError,
    UpstreamTimeout,
)

# Idle connections are dropped after this many seconds: below the 5 s keep-alive of uvicorn and
# Node.js servers, so a pooled connection is rarely one the upstream is closing at that moment
# (a race only idempotent requests can retry).
KEEPALIVE = 4.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})


class _Stale(UpstreamError):
    """A reused connection died before any byte of the response: safe to retry once."""


class Http1Client:
    """``sidecar.proxy.upstream.Upstream`` over pools of ``Connection``."""

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
        self._origins: dict[str, Origin] = {}
        self.clock = ReadClock(self.read_timeout)

    # --- pool --------------------------------------------------------------------------------

    def origin(self, base: str) -> Origin:
        origin = self._origins.get(base)
        if origin is None:
            origin = self._origins[base] = Origin(base)
        return origin

    async def connect(self, origin: Origin) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop, self.clock),
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

    def checkout(self, origin: Origin) -> Connection | None:
        idle = origin.idle
        if not idle:
            return None
        deadline = time.monotonic() - self.keepalive
        while idle:
            conn = idle.pop()
            if conn.closed or conn.idle_since < deadline:
                conn.close()
                continue
            return conn
        return None

    def release(self, conn: Connection) -> None:
        origin = conn.origin
        conn.busy = False
        if origin is None or conn.closed or len(origin.idle) >= self.pool_size:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        origin.idle.append(conn)

    def discard_idle(self, origin: Origin) -> None:
        """After a stale connection: its idle siblings are likely stale too (upstream restart)."""
        idle, origin.idle = origin.idle, []
        for conn in idle:
            conn.close()

    async def close(self) -> None:
        for origin in self._origins.values():
            self.discard_idle(origin)
        self._origins.clear()
        self.clock.close()

    # --- one request -------------------------------------------------------------------------

    @staticmethod
    def request_head(
        method: str, origin: Origin, target: bytes, headers: Headers, extra: bytes = b""
    ) -> bytes:
        """The request line and headers, as written upstream (one ``bytes``); ``Host`` is the
        client's when the rewritten headers carry it, else the upstream's own."""
        return b"%s %s%s HTTP/1.1\r\n%s" % (
            method.encode("latin-1"),
            origin.prefix,
            target,
            Http1Client.header_block(origin, headers, extra),
        )

    @staticmethod
    def header_block(origin: Origin, headers: Headers, extra: bytes = b"") -> bytes:
        """``request_head`` after its request line: the headers and the blank line that ends them
        (the same for every method and target: ``sidecar.proxy.fast`` keeps it per rewrite)."""
        host = b"host: " + origin.host_header + b"\r\n"
        for name, _ in headers:
            if name.lower() == b"host":
                host = b""
                break
        return b"%s%s%s\r\n" % (b"".join([b"%s: %s\r\n" % h for h in headers]), host, extra)

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
        origin = self.origin(base)
        head_request = method == "HEAD"
        chunked = False
        body = b""
        more = False
        extra = b""
        if has_body:
            if not any(n.lower() == b"content-length" for n, _ in headers):
                chunked = True
                extra = b"transfer-encoding: chunked\r\n"
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            body = message.get("body", b"")
            more = message.get("more_body", False)
        lines = [self.request_head(method, origin, target, headers, extra)]
        if chunked:
            if body:
                lines += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                lines.append(b"0\r\n\r\n")
        elif body:
            lines.append(body)
        payload = b"".join(lines)
        retry = method in _IDEMPOTENT and not more

        conn = self.checkout(origin)
        reused = conn is not None
        if conn is None:
            conn = await self.connect(origin)
        try:
            try:
                await self._exchange(conn, reused, head_request, payload, more, chunked, receive)
            except _Stale:
                conn.abort()
                self.discard_idle(origin)
                if not retry:
                    raise UpstreamError("the pooled upstream connection was closed") from None
                conn = await self.connect(origin)
                await self._exchange(conn, False, head_request, payload, more, chunked, receive)
            await self._respond(conn, send)
        except BaseException:
            if conn.busy:  # not yet back in the pool (or closed) by _finish
                conn.abort()
            raise

    async def _exchange(
        self,
        conn: Connection,
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
        if transport is None or conn.closed or transport.is_closing():
            raise _Stale if reused else UpstreamError("upstream connection closed")
        transport.write(payload)
        conn.request_sent = not more
        while more:
            if conn.write_paused:
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
        # Until the head, or the whole response when it is small and framed by Content-Length
        # (the common case: one message to the client, one wake-up less per request).
        while not (conn.complete or (conn.head_done and not conn.small)):
            if conn.error is not None:
                if reused and not conn.got_data and isinstance(conn.error, OSError):
                    raise _Stale
                raise self._as_error(conn.error)
            await conn.wait()

    @staticmethod
    def _as_error(exc: BaseException) -> BaseException:
        if isinstance(exc, UpstreamError):
            return exc
        return UpstreamError(str(exc))

    async def _respond(self, conn: Connection, send: Send) -> None:
        start = {
            "type": "http.response.start",
            "status": conn.status,
            "headers": conn.response_headers(),
        }
        if conn.complete:
            # The whole response is here (the common small case): one send for the body, and the
            # connection goes back to the pool before we yield to the client.
            body = conn.take() if conn.chunks else b""
            self.finish(conn)
            await send(start)
            await send({"type": "http.response.body", "body": body})
            return
        await send(start)
        try:
            while True:
                if conn.chunks:
                    await send({"type": "http.response.body", "body": conn.take(), "more_body": True})
                elif conn.complete:
                    break
                elif conn.error is not None:
                    raise self._as_error(conn.error)
                else:
                    await conn.wait()
        except UpstreamError as exc:
            raise UpstreamAborted(f"upstream failed mid-response: {exc}") from exc
        self.finish(conn)
        await send({"type": "http.response.body", "body": b""})

    def finish(self, conn: Connection) -> None:
        if conn.keep_alive and conn.request_sent and not conn.closed and not conn.head_request:
            self.release(conn)
        else:
            conn.busy = False
            conn.close()
