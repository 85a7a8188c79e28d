"""The upstream clients behind ``sidecar.proxy.upstream`` against scripted raw HTTP/1.1 upstreams.

Each test runs a real asyncio TCP server on 127.0.0.1 whose handler writes exactly the bytes
under test, and drives the client with ASGI ``receive``/``send`` fakes. Most tests cover the
default ``http1`` client; the shared behaviour runs on ``aiohttp`` too, so the seam stays honest.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from sidecar.config.model import Timeouts
from sidecar.proxy.clients import create_upstream
from sidecar.proxy.forward import forward_http
from sidecar.proxy.upstream import Upstream as UpstreamClient
from sidecar.proxy.upstream import UpstreamAborted

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Upstream:
    """A scripted upstream: ``handler`` answers each connection; connections are counted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    """The request body the client sent, by Content-Length or chunked framing."""
    lower = head.lower()
    if b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        return await reader.readexactly(length)
    if b"transfer-encoding: chunked" in lower:
        out = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return out
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    return b""


def serve_each(*responses: bytes, close: bool = False) -> Callable[[Upstream], Handler]:
    """A handler answering the n-th request on a connection with ``responses[n]`` (cycled)."""

    def make(up: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            i = 0
            while True:
                head = await up.read_request(reader)
                await read_body(reader, head)
                writer.write(responses[i % len(responses)])
                await writer.drain()
                i += 1
                if close:
                    return

        return handler

    return make


@contextlib.asynccontextmanager
async def upstream(make: Callable[[Upstream], Handler]) -> AsyncIterator[Upstream]:
    up = Upstream(lambda r, w: asyncio.sleep(0))
    up.handler = make(up)
    async with up:
        yield up


def client(kind: str = "http1", *, connect: float = 2, read: float = 5) -> UpstreamClient:
    return create_upstream(Timeouts(connect=timedelta(seconds=connect), read=timedelta(seconds=read)), kind)


class Exchange:
    """ASGI fakes: ``receive`` yields ``body`` pieces; ``send`` records what the client sent."""

    def __init__(self, body: list[bytes] | None = None, *, slow_every: int = 0) -> None:
        self.pieces = list(body or [])
        self.messages: list[dict[str, Any]] = []
        self.body = bytearray()
        self.slow_every = slow_every
        self.sends = 0

    async def receive(self) -> dict[str, Any]:
        piece = self.pieces.pop(0) if self.pieces else b""
        return {"type": "http.request", "body": piece, "more_body": bool(self.pieces)}

    async def send(self, message: Any) -> None:
        self.sends += 1
        if message["type"] == "http.response.body":
            self.body += message.get("body", b"")
            message = {**message, "body": len(message.get("body", b""))}
        self.messages.append(message)
        if self.slow_every and self.sends % self.slow_every == 0:
            await asyncio.sleep(0.001)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def headers(self) -> dict[bytes, bytes]:
        return {k.lower(): v for k, v in self.messages[0]["headers"]}


async def call(
    c: UpstreamClient,
    up: Upstream,
    method: str = "GET",
    target: bytes = b"/x",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: list[bytes] | None = None,
    has_body: bool | None = None,
    ex: Exchange | None = None,
) -> Exchange:
    ex = ex or Exchange(body)
    h = headers if headers is not None else [(b"host", b"app.test")]
    await forward_http(
        c, method, up.base, target, h, bool(body) if has_body is None else has_body, ex.receive, ex.send
    )
    return ex


# --- both clients ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http1", "aiohttp"])
async def test_content_length_response_and_hop_by_hop_headers(kind: str) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n"
        b"Keep-Alive: timeout=5\r\nX-App: yes\r\n\r\nhello"
    )
    async with upstream(serve_each(response)) as up:
        c = client(kind)
        try:
            ex = await call(c, up, target=b"/a/b?q=1")
        finally:
            await c.close()
    assert ex.status == 200 and bytes(ex.body) == b"hello"
    assert ex.headers[b"x-app"] == b"yes" and ex.headers[b"content-length"] == b"5"
    assert not {b"connection", b"keep-alive", b"x-hop"} & set(ex.headers)
    assert up.requests[0].startswith(b"GET /a/b?q=1 HTTP/1.1\r\n")


@pytest.mark.parametrize(
    ("connection", "dropped"),
    [
        (b"keep-alive", {b"keep_alive"}),  # the "_" spelling of a listed hop-by-hop name
        (b"keep-alive, x-hop", {b"keep_alive", b"x-hop", b"x_hop"}),
        (b"close", set()),
    ],
)
async def test_names_the_connection_header_lists_are_dropped_in_any_spelling(
    connection: bytes, dropped: set[bytes]
) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: " + connection + b"\r\nKeep_Alive: 1\r\n"
        b"X-Hop: 2\r\nX_Hop: 3\r\nX-App: yes\r\n\r\nok"
    )
    everything = {b"keep_alive", b"x-hop", b"x_hop", b"x-app", b"content-length"}
    async with upstream(serve_each(response)) as up:
        c = client("http1")
        try:
            for _ in range(3):  # the value's names parsed once, then remembered
                ex = await call(c, up)
                assert ex.status == 200 and ex.headers[b"x-app"] == b"yes"
                assert set(ex.headers) == everything - dropped
        finally:
            await c.close()


@pytest.mark.parametrize("kind", ["http1", "aiohttp"])
async def test_chunked_response_is_decoded(kind: str) -> None:
    response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    async with upstream(serve_each(response)) as up:
        c = client(kind)
        try:
            ex = await call(c, up)
        finally:
            await c.close()
    assert bytes(ex.body) == b"hello world"
    assert b"transfer-encoding" not in ex.headers


@pytest.mark.parametrize("kind", ["http1", "aiohttp"])
async def test_head_response_has_no_body(kind: str) -> None:
    async with upstream(serve_each(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")) as up:
        c = client(kind)
        try:
            ex = await call(c, up, "HEAD")
            again = await call(c, up, "HEAD")
        finally:
            await c.close()
    assert ex.status == 200 and bytes(ex.body) == b"" and ex.headers[b"content-length"] == b"10"
    assert again.status == 200


@pytest.mark.parametrize("kind", ["http1", "aiohttp"])
async def test_refused_connection_is_502(kind: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connection refused
        c = client(kind)
        ex = Exchange()
        try:
            await forward_http(c, "GET", f"http://127.0.0.1:{port}", b"/", [], False, ex.receive, ex.send)
        finally:
            await c.close()
    assert ex.status == 502 and b'"code":502' in ex.body


@pytest.mark.parametrize("kind", ["http1", "aiohttp"])
async def test_read_timeout_is_504(kind: str) -> None:
    async with upstream(slow_handler) as up:
        c = client(kind, read=0.3)
        try:
            ex = await call(c, up)
        finally:
            await c.close()
    assert ex.status == 504


def slow_handler(up: Upstream) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.read_request(reader)
        await asyncio.sleep(0.8)

    return handler


@pytest.mark.parametrize("kind", ["http1", "aiohttp"])
async def test_request_body_streams_with_length_or_chunked(kind: str) -> None:
    seen: list[tuple[bytes, bytes]] = []

    def make(up: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                head = await up.read_request(reader)
                seen.append((head, await read_body(reader, head)))
                writer.write(OK)

        return handler

    async with upstream(make) as up:
        c = client(kind)
        try:
            await call(c, up, "POST", headers=[(b"content-length", b"6")], body=[b"abc", b"def"])
            await call(c, up, "POST", headers=[], body=[b"abc", b"", b"def"], has_body=True)
        finally:
            await c.close()
    assert seen[0][1] == b"abcdef" and b"content-length: 6" in seen[0][0].lower()
    assert seen[1][1] == b"abcdef" and b"transfer-encoding: chunked" in seen[1][0].lower()


# --- the http1 client -------------------------------------------------------------------------


async def test_keep_alive_connection_is_reused() -> None:
    async with upstream(serve_each(OK)) as up:
        c = client()
        try:
            for _ in range(5):
                assert (await call(c, up)).status == 200
        finally:
            await c.close()
    assert up.connections == 1 and len(up.requests) == 5


async def test_connection_close_and_http10_are_not_reused() -> None:
    close = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for response in (close, old):
        async with upstream(serve_each(response)) as up:
            c = client()
            try:
                for _ in range(3):
                    assert bytes((await call(c, up)).body) == b"ok"
            finally:
                await c.close()
        assert up.connections == 3


async def test_close_delimited_body_ends_at_eof() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 100_000
    async with upstream(serve_each(response, close=True)) as up:
        c = client()
        try:
            first = await call(c, up)
            second = await call(c, up)
        finally:
            await c.close()
    assert bytes(first.body) == b"z" * 100_000 and bytes(second.body) == b"z" * 100_000
    assert up.connections == 2


async def test_204_304_and_interim_1xx_responses() -> None:
    no_content = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
    not_modified = b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\nContent-Length: 99\r\n\r\n'
    hints = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n" + OK
    async with upstream(serve_each(no_content, not_modified, hints)) as up:
        c = client()
        try:
            a, b, h = await call(c, up), await call(c, up), await call(c, up)
        finally:
            await c.close()
    assert (a.status, bytes(a.body)) == (204, b"")
    assert (b.status, bytes(b.body), b.headers[b"etag"]) == (304, b"", b'"e"')
    assert (h.status, bytes(h.body)) == (200, b"ok") and b"link" not in h.headers
    assert up.connections == 1  # bodiless responses leave the connection reusable


async def test_stale_pooled_connection_is_retried_once_for_idempotent_requests() -> None:
    def make(up: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await up.read_request(reader)
            await read_body(reader, head)
            writer.write(OK)
            await writer.drain()
            await up.read_request(reader)  # the next request on this connection: hang up unanswered
            writer.transport.abort()

        return handler

    async with upstream(make) as up:
        c = client()
        try:
            assert (await call(c, up)).status == 200
            retried = await call(c, up)  # the pooled connection dies under it: retried on a new one
            assert retried.status == 200 and bytes(retried.body) == b"ok"
            assert up.connections == 2
            posted = await call(c, up, "POST", headers=[(b"content-length", b"1")], body=[b"x"])
            assert posted.status == 502  # never replayed: POST is not idempotent
        finally:
            await c.close()


async def test_malformed_responses_are_502() -> None:
    cases = [
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"hello there\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",  # cut short, then closed
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    ]
    for response in cases:
        async with upstream(serve_each(response, close=True)) as up:
            c = client()
            try:
                ex = await call(c, up)
            finally:
                await c.close()
        assert ex.status == 502, response


async def test_large_headers_pass_and_oversized_heads_are_502() -> None:
    big = b"HTTP/1.1 200 OK\r\nX-Big: " + b"v" * 32_000 + b"\r\nContent-Length: 2\r\n\r\nok"
    huge = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(100)) + b"\r\n"
    async with upstream(serve_each(big, huge)) as up:
        c = client()
        try:
            ok = await call(c, up, headers=[(b"host", b"a"), (b"x-req", b"r" * 32_000)])
            too_big = await call(c, up)
        finally:
            await c.close()
    assert ok.status == 200 and len(ok.headers[b"x-big"]) == 32_000
    assert b"r" * 32_000 in up.requests[0]
    assert too_big.status == 502


async def test_truncated_body_after_start_aborts() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 70_000
    async with upstream(serve_each(response, close=True)) as up:
        c = client()
        try:
            with pytest.raises(UpstreamAborted):
                await call(c, up)
        finally:
            await c.close()


async def test_client_gone_while_streaming_the_request_body() -> None:
    async def receive_then_disconnect() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async with upstream(serve_each(OK)) as up:
        c = client()
        ex = Exchange()
        try:
            await forward_http(
                c, "POST", up.base, b"/", [(b"content-length", b"5")], True, receive_then_disconnect, ex.send
            )
        finally:
            await c.close()
    assert ex.messages == []  # nothing to answer: the client has gone


async def test_connect_timeout_is_504() -> None:
    # A listener whose accept queue is full: the kernel drops further SYNs, connect() hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        await asyncio.sleep(0.1)
        c = client(connect=0.3)
        ex = Exchange()
        try:
            await forward_http(c, "GET", f"http://127.0.0.1:{port}", b"/", [], False, ex.receive, ex.send)
        finally:
            await c.close()
        assert ex.status == 504
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_response_not_fully_read_is_not_reused() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 400000\r\n\r\n" + b"q" * 400_000

    class Gone(Exception):
        pass

    async def failing_send(message: Any) -> None:
        if message["type"] == "http.response.body" and message.get("more_body"):
            raise Gone

    async with upstream(serve_each(response)) as up:
        c = client()
        try:
            with pytest.raises(Gone):
                await forward_http(c, "GET", up.base, b"/", [], False, Exchange().receive, failing_send)
            assert bytes((await call(c, up)).body) == b"q" * 400_000
        finally:
            await c.close()
    assert up.connections == 2


SIZE = 100 * 1024 * 1024
PIECE = b"s" * 65536


async def test_100mb_both_ways_with_flat_memory() -> None:
    received = 0

    def make(up: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal received
            while True:
                head = await up.read_request(reader)
                if head.startswith(b"POST"):
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while length:
                        chunk = await reader.read(min(length, 1 << 16))
                        length -= len(chunk)
                        received += len(chunk)
                    writer.write(OK)
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
                    for _ in range(SIZE // len(PIECE)):
                        writer.write(PIECE)
                        await writer.drain()
                await writer.drain()

        return handler

    class Upload(Exchange):
        def __init__(self) -> None:
            super().__init__()
            self.left = SIZE // len(PIECE)

        async def receive(self) -> dict[str, Any]:
            self.left -= 1
            return {"type": "http.request", "body": PIECE, "more_body": self.left > 0}

    class CountingExchange(Exchange):
        async def send(self, message: Any) -> None:
            self.sends += 1
            if message["type"] == "http.response.start":
                self.messages.append(message)
            else:
                self.count = getattr(self, "count", 0) + len(message.get("body", b""))
            if self.sends % 50 == 0:
                await asyncio.sleep(0.002)  # a slower client: the upstream must wait, not buffer

    async with upstream(make) as up:
        c = client()
        tracemalloc.start()
        try:
            up_ex = Upload()
            await forward_http(
                c,
                "POST",
                up.base,
                b"/upload",
                [(b"content-length", b"%d" % SIZE)],
                True,
                up_ex.receive,
                up_ex.send,
            )
            down = CountingExchange()
            await forward_http(c, "GET", up.base, b"/download", [], False, down.receive, down.send)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await c.close()
    assert up_ex.status == 200 and received == SIZE
    assert down.status == 200 and down.count == SIZE
    assert peak < 16 * 1024 * 1024, peak  # both sides in this process: flat, far below 100 MB


async def test_idle_connections_expire_after_keepalive() -> None:
    from sidecar.proxy.http1 import Http1Client

    async with upstream(serve_each(OK)) as up:
        c = Http1Client(2, 5, keepalive=0.1)
        try:
            await call(c, up)  # type: ignore[arg-type]
            await call(c, up)  # type: ignore[arg-type]
            await asyncio.sleep(0.2)
            await call(c, up)  # type: ignore[arg-type]
        finally:
            await c.close()
    assert up.connections == 2
