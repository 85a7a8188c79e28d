"""One upstream HTTP/1.1 connection of ``sidecar.proxy.http1``: an asyncio Protocol that writes a
request and parses the response with httptools (llhttp, strict), plus the per-origin pool entry.

The response body is buffered in ``chunks`` with the socket paused past ``HIGH_WATER`` bytes,
so memory stays flat whatever the size; ``wait`` sleeps until the protocol has news (head, body,
end, error) or the read timeout passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

from sidecar.proxy.upstream import Headers, UpstreamError, UpstreamTimeout

HIGH_WATER = 256 * 1024  # buffered response bytes before the upstream socket is paused
LOW_WATER = 64 * 1024
SMALL = 64 * 1024  # bodies up to this Content-Length are read whole, then sent in one message
MAX_HEAD = 64 * 1024  # response status line + headers; more is a malformed response (502)


class Origin:
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
        self.idle: list[Connection] = []


def _timed_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("upstream read timed out"))


class Connection(asyncio.Protocol):
    """One upstream TCP connection and the state of the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.origin: Origin | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self.write_paused = False
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
        self.small = False  # a Content-Length of at most SMALL bytes
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
            self.close()
            return
        self.got_data = True
        try:
            parser.feed_data(data)
        except HttpParserError as exc:
            if not (self.head_request and self.head_done):
                self.error = UpstreamError(f"malformed upstream response: {exc}")
            self.keep_alive = False
            self.close()
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD and self.error is None:
                self.error = UpstreamError("upstream response head too large")
                self.close()
        self.wake()

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
        self.wake()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.framed = True
            self.small = len(value) < 6 and int(value) <= SMALL  # llhttp checked it is digits
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            self.framed = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        if parser is None:  # httptools calls back only while feeding this connection's parser
            raise UpstreamError("response head without a request")
        status = parser.get_status_code()
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
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.head_request:
            return
        self.complete = True
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    # --- for the client ----------------------------------------------------------------------

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
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
        if self.write_paused and not self.closed:
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
