"""One upstream HTTP/1.1 connection of ``sidecar.proxy.http1``: an asyncio Protocol that writes a
request and parses the response with httptools (llhttp, strict), plus the per-origin pool entry
and the coarse read-timeout clock.

The response body is buffered in ``chunks`` with the socket paused past ``HIGH_WATER`` bytes,
so memory stays flat whatever the size. Whoever drives the response is told of news (head,
body, end, error) in one of two ways: ``wait`` (a coroutine, the ASGI path) or a ``listener``
whose ``on_news`` is called from the protocol's callbacks (the protocol-level fast path,
``sidecar.proxy.fast``); both read the same state.

One parser per connection, reused for every response on it (llhttp starts the next message
where the last one ended); hop-by-hop response headers are dropped as they are parsed.

Known heads: an upstream answers the same request with the same head bytes (within a second:
``Date`` changes each second), so when a whole small response arrives in one read and its head
bytes are those of a response llhttp parsed before on this origin, what that parse found
(status, headers, framing, keep-alive) is taken instead of parsing again: the same bytes give
the same parse. Only responses that llhttp read whole in one read, framed by Content-Length, at
most ``SMALL`` bytes, kept alive, without interim responses, are remembered (``KNOWN_HEADS`` per
origin, oldest dropped first); the parser is not fed then, and stays at the start of the next
message, where the last complete one left it. On a static upstream this skips about ten Python
callbacks per response.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Protocol
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpResponseParser

from sidecar.proxy.headers import HOP_BY_HOP, canonical, connection_options
from sidecar.proxy.upstream import Headers, UpstreamError, UpstreamTimeout

HIGH_WATER = 256 * 1024  # buffered response bytes before the upstream socket is paused
LOW_WATER = 64 * 1024
# A response ``Connection`` value -> the names it lists (``connection_options``), for the first
# ``_OPTIONS_LIMIT`` values seen (an upstream's are few; the rest are parsed each time).
_OPTIONS: dict[bytes, tuple[bytes, ...]] = {}
_OPTIONS_LIMIT = 64
SMALL = 64 * 1024  # bodies up to this Content-Length are read whole, then sent in one message
MAX_HEAD = 64 * 1024  # response status line + headers; more is a malformed response (502)
KNOWN_HEADS = 64  # remembered response heads per origin (module docstring)
KNOWN_HEAD_SIZE = 8 * 1024  # the longest head remembered


class KnownHead:
    """What llhttp found in one response head (the part ``Connection`` keeps per response)."""

    __slots__ = ("encoded", "headers", "length", "listed", "small", "status")

    def __init__(
        self, status: int, headers: Headers, listed: set[bytes] | None, length: int, small: bool
    ) -> None:
        self.status = status
        self.headers = tuple(headers)
        self.listed = frozenset(listed) if listed is not None else None
        self.length = length  # the Content-Length: the body that follows the head
        self.small = small
        # The client's response head made from this one, by keep-alive, when no default headers
        # are added (``sidecar.proxy.fast.HeadMemo.encode_known``): the same for every response
        # with these head bytes, so made once.
        self.encoded: dict[bool, tuple[bytes, bytes | None, int, bool]] = {}


class Origin:
    __slots__ = ("heads", "host", "host_header", "idle", "port", "prefix", "server_hostname", "ssl")

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
        self.heads: dict[bytes, KnownHead] = {}  # head bytes -> their parse (module docstring)


class Listener(Protocol):
    """The fast path's side of a response: told of every change, synchronously."""

    def on_news(self) -> None: ...

    def on_timeout(self) -> None: ...


class ReadClock:
    """Read timeouts for every connection of one client on one coarse timer.

    A ``call_later`` per wait (scheduled, then cancelled: nearly every wait ends well before its
    timeout) cost more than a whole header rewrite; instead a waiting connection stores its
    deadline and one timer, running only while some connection waits, fails those whose
    deadline passed. A timeout fires up to ``tick`` seconds late (an eighth of it, at most half
    a second): fine for a limit of seconds.
    """

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self.tick = max(0.005, min(0.5, timeout / 8)) if timeout else 0.0
        self._waiting: set[Connection] = set()
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, conn: Connection) -> None:
        """``conn`` waits from now: it times out ``timeout`` seconds later unless it hears news."""
        if self.timeout is None:
            return
        loop = conn.loop
        conn.deadline = loop.time() + self.timeout
        self._waiting.add(conn)
        if self._handle is None:
            self._handle = loop.call_later(self.tick, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        expired = [c for c in self._waiting if not c.waiting or c.deadline <= now]
        for conn in expired:
            self._waiting.discard(conn)
            if conn.waiting:
                conn.time_out()
        if self._waiting:
            self._handle = loop.call_later(self.tick, self._check, loop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._waiting.clear()


class Connection(asyncio.Protocol):
    """One upstream TCP connection and the state of the response being read on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: ReadClock | None = None) -> None:
        self.loop = loop
        self.clock = clock or ReadClock(None)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.deadline = 0.0
        self.origin: Origin | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self.listener: Listener | None = None
        self.waiting = False  # a reader (``wait`` or a listener) expects news within the timeout
        self.write_paused = False
        self.parser = HttpResponseParser(self)
        self.busy = False  # a request is in flight on it (not idle in the pool)
        self.begin(False)
        self._parsing()
        self.busy = False

    # --- per response ------------------------------------------------------------------------

    def begin(self, head_request: bool) -> None:
        """A request goes out on this connection: what is read before its response's first byte.
        The rest of the response's state is set by its first byte (``_parsing`` or ``_known``)."""
        self.busy = True
        self.head_request = head_request
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.framed = False  # Content-Length or chunked: EOF before the end is a truncation
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.got_data = False
        self.request_sent = False
        self.error: BaseException | None = None
        self.reading_paused = False
        self.known: KnownHead | None = None  # the head llhttp parsed before (``_known``)

    def _parsing(self) -> None:
        """The response's state that llhttp's callbacks fill, before its first bytes are fed."""
        self.status = 0
        self.headers: Headers = []
        self.listed: set[bytes] | None = None  # names a response ``Connection`` header lists
        self.interim = False
        self.small = False  # a Content-Length of at most SMALL bytes
        self.length = -1  # the Content-Length, when there is one
        self.plain = True  # no interim (1xx) response before this one, no Transfer-Encoding
        self.head_bytes = 0

    def response_headers(self) -> Headers:
        """The response headers less every hop-by-hop one (names lower-case)."""
        listed = self.listed
        if listed is None:
            return self.headers
        headers = self.headers
        # ``find``, not ``in``: see sidecar.proxy.paths.normalise_path.
        if listed <= HOP_BY_HOP and b"".join([n for n, _ in headers]).find(b"_") == -1:
            # ``Connection: keep-alive``, nearly always: such names were dropped as they were
            # parsed, and only a ``_`` spelling of one (``keep_alive``) could still match.
            return headers
        return [h for h in headers if canonical(h[0]) not in listed]

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            # Bytes on an idle connection, or after a complete response: the stream is out of
            # step with our requests; never reuse it.
            self.error = UpstreamError("unexpected data from the upstream")
            self.keep_alive = False
            self.close()
            return
        fresh = not self.got_data
        if fresh and not self.head_request and self.origin is not None:
            end = data.find(b"\r\n\r\n") + 4
            if end > 3:
                known = self.origin.heads.get(data[:end])
                if known is not None and len(data) - end == known.length:
                    self._known(known, data, end)
                    return
        if fresh:
            self._parsing()
        self.got_data = True
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            if not (self.head_request and self.head_done):
                self.error = UpstreamError(f"malformed upstream response: {exc}")
            self.keep_alive = False
            self.close()
        else:
            if fresh and self.complete and self.small and self.keep_alive and not self.head_request:
                self._remember(data)
        if not self.head_done:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD and self.error is None:
                self.error = UpstreamError("upstream response head too large")
                self.close()
        self.wake()

    def _known(self, known: KnownHead, data: bytes, end: int) -> None:
        """The response in ``data``, whose head llhttp parsed before as ``known`` (module docstring)."""
        self.got_data = True
        self.known = known
        self.status = known.status
        self.headers = list(known.headers)
        self.listed = set(known.listed) if known.listed is not None else None
        self.framed = True
        self.small = known.small
        self.length = known.length
        self.head_done = self.complete = self.keep_alive = True
        if known.length:
            self.chunks.append(data[end:])
            self.buffered = known.length
        self.wake()

    def _remember(self, data: bytes) -> None:
        """After llhttp read the whole of ``data`` as one complete, kept-alive, Content-Length
        response: its head, for the next response with the same head bytes."""
        origin = self.origin
        if origin is None or not self.plain or self.length < 0:
            return
        end = data.find(b"\r\n\r\n") + 4
        # The head ends at the first blank line only if llhttp saw CRLF line ends throughout (it
        # also accepts a bare LF in places): then the body is exactly what follows it.
        if end < 4 or end > KNOWN_HEAD_SIZE or len(data) - end != self.length:
            return
        head = data[:end]
        if head.count(b"\n") != head.count(b"\r\n"):
            return
        heads = origin.heads
        if len(heads) >= KNOWN_HEADS:
            del heads[next(iter(heads))]  # the oldest: heads with yesterday's Date go first
        heads[head] = KnownHead(self.status, self.headers, self.listed, self.length, self.small)

    def eof_received(self) -> bool:
        if self.head_done and not self.complete and not self.framed and not self.head_request:
            self.complete = True  # a close-delimited body ends here
        self.keep_alive = False
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        origin = self.origin
        if origin is not None and not self.busy:
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
        if name in HOP_BY_HOP:
            if name == b"transfer-encoding":
                self.plain = False
                if value.lower().find(b"chunked") != -1:  # not ``in`` (paths.normalise_path)
                    self.framed = True
            elif name == b"connection":
                # An upstream sends the same one or two values on every response (keep-alive).
                options = _OPTIONS.get(value)
                if options is None:
                    options = tuple(connection_options(value))
                    if len(_OPTIONS) < _OPTIONS_LIMIT:
                        _OPTIONS[value] = options
                listed = self.listed
                if listed is None:
                    listed = self.listed = set()
                listed.update(options)
            return
        if name == b"content-length":
            self.framed = True
            self.length = int(value)  # llhttp checked it is digits
            self.small = len(value) < 6 and self.length <= SMALL
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.busy:  # httptools calls back only while feeding this connection's parser
            raise UpstreamError("response head without a request")
        status = self.parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamError("unexpected protocol switch from the upstream")
            self.interim = True  # 100 Continue, 103 Early Hints: skipped, the final one follows
            self.plain = False
            self.headers = []
            self.listed = None
            self.framed = self.small = False
            self.length = -1
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
        self.keep_alive = self.parser.should_keep_alive()

    # --- for the client ----------------------------------------------------------------------

    def wake(self) -> None:
        listener = self.listener
        if listener is not None:
            listener.on_news()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def time_out(self) -> None:
        """The read timeout passed while someone waited (``ReadClock``)."""
        self.waiting = False
        waiter = self._waiter
        if waiter is not None:
            if not waiter.done():
                waiter.set_exception(UpstreamTimeout("upstream read timed out"))
        elif self.listener is not None:
            self.listener.on_timeout()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.abort()

    async def wait(self) -> None:
        """Until the protocol reports anything (head, body, end, error) or the read timeout."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._waiter = waiter
        self.waiting = True
        self.clock.arm(self)
        try:
            await waiter
        finally:
            self._waiter = None
            self.waiting = False

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
