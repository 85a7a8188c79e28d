"""``sidecar.proxy.http1_connection``'s known heads: a response whose head bytes llhttp parsed
before on the same origin is taken from that parse, and gives exactly what parsing it again gives;
what may not be remembered never is."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from sidecar.proxy.fast import HeadMemo, encode_head
from sidecar.proxy.http1_connection import KNOWN_HEADS, Connection, Origin

DATE = b"Date: Mon, 07 Dec 2026 08:00:00 GMT\r\n"
OK = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\n"
    + DATE
    + b"Content-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"
)


class Feeds:
    """A parser stand-in that counts what is fed to the real one."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser
        self.fed = 0

    def feed_data(self, data: bytes) -> None:
        self.fed += 1
        self.parser.feed_data(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.parser, name)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def connection(loop: asyncio.AbstractEventLoop, origin: Origin | None) -> tuple[Connection, Feeds]:
    conn = Connection(loop)
    conn.origin = origin
    feeds = Feeds(conn.parser)
    conn.parser = feeds  # type: ignore[assignment]
    return conn, feeds


def outcome(conn: Connection, pieces: list[bytes], head_request: bool = False) -> tuple[Any, ...]:
    """One response read on ``conn``: everything the proxy takes from it."""
    conn.begin(head_request)
    conn.request_sent = True
    for piece in pieces:
        if conn.closed:
            break
        conn.data_received(piece)
    error = type(conn.error).__name__ if conn.error is not None else None
    return (
        conn.status,
        conn.response_headers() if conn.head_done else None,
        conn.take() if conn.chunks else b"",
        conn.head_done,
        conn.complete,
        conn.keep_alive,
        conn.framed,
        conn.small,
        error,
    )


REMEMBERED = {
    "content-length": [OK],
    "empty body": [b"HTTP/1.1 200 OK\r\n" + DATE + b"Content-Length: 0\r\n\r\n"],
    "connection lists a header": [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: secret\r\nX-End: 1\r\n"
        b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nhi"
    ],
    "not found": [b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope"],
    "http/1.0 kept alive": [b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"],
    "repeated headers": [
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nVary: A\r\nVary: B\r\n"
        b"Content-Length: 2\r\n\r\nok"
    ],
}

NEVER = {
    "connection close": [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
    "http/1.0": [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    "chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
    "no length (204)": [b"HTTP/1.1 204 No Content\r\n" + DATE + b"\r\n"],
    "interim first": [b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
    "head in two reads": [OK[:20], OK[20:]],
    "body in a later read": [OK[:-3], OK[-3:]],
    "large body": [b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 70000],
    "malformed": [b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 2\r\n\r\nok"],
    "bare LF": [b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"],
}


@pytest.mark.parametrize("name", list(REMEMBERED))
def test_a_known_head_gives_what_parsing_it_gives_without_feeding_the_parser(
    loop: asyncio.AbstractEventLoop, name: str
) -> None:
    pieces = REMEMBERED[name]
    origin = Origin("http://127.0.0.1:1")
    fresh, _ = connection(loop, None)  # no origin: always parsed
    expected = outcome(fresh, pieces)
    first, _ = connection(loop, origin)
    assert outcome(first, pieces) == expected
    assert len(origin.heads) == 1
    again, feeds = connection(loop, origin)
    for _ in range(3):  # the same connection, response after response
        assert outcome(again, pieces) == expected
    assert feeds.fed == 0
    # The parser was left where the last parsed response ended: a new head is parsed right.
    other = [b"HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n!"]
    assert outcome(again, other) == outcome(connection(loop, None)[0], other)
    assert feeds.fed == 1


@pytest.mark.parametrize("name", list(NEVER))
def test_what_may_not_be_remembered_is_parsed_every_time(loop: asyncio.AbstractEventLoop, name: str) -> None:
    pieces = NEVER[name]
    origin = Origin("http://127.0.0.1:1")
    expected = outcome(connection(loop, None)[0], pieces)
    for _ in range(2):
        conn, feeds = connection(loop, origin)
        assert outcome(conn, pieces) == expected
        assert feeds.fed >= 1
    assert origin.heads == {}


def test_the_same_head_with_another_body_length_is_parsed(loop: asyncio.AbstractEventLoop) -> None:
    """A known head followed by more (or fewer) bytes than its Content-Length is not that response:
    llhttp decides (here: the extra bytes are a malformed next message)."""
    origin = Origin("http://127.0.0.1:1")
    outcome(connection(loop, origin)[0], [OK])
    for data in ([OK + b"junk"], [OK[:-1]]):
        expected = outcome(connection(loop, None)[0], data)
        conn, feeds = connection(loop, origin)
        assert outcome(conn, data) == expected
        assert feeds.fed == 1


def test_a_head_request_is_always_parsed(loop: asyncio.AbstractEventLoop) -> None:
    origin = Origin("http://127.0.0.1:1")
    outcome(connection(loop, origin)[0], [OK])
    head = [OK[:-3]]
    conn, feeds = connection(loop, origin)
    assert outcome(conn, head, head_request=True) == outcome(connection(loop, None)[0], head, True)
    assert feeds.fed == 1


def test_known_heads_are_bounded_oldest_first(loop: asyncio.AbstractEventLoop) -> None:
    origin = Origin("http://127.0.0.1:1")
    heads = [
        b"HTTP/1.1 200 OK\r\nDate: second %d\r\nContent-Length: 2\r\n\r\nok" % i
        for i in range(KNOWN_HEADS + 10)
    ]
    for data in heads:
        outcome(connection(loop, origin)[0], [data])
    assert len(origin.heads) == KNOWN_HEADS
    assert list(origin.heads) == [h[:-2] for h in heads[10:]]


def test_a_known_head_does_not_share_its_headers_with_the_response(loop: asyncio.AbstractEventLoop) -> None:
    origin = Origin("http://127.0.0.1:1")
    outcome(connection(loop, origin)[0], [OK])
    conn, _ = connection(loop, origin)
    outcome(conn, [OK])
    conn.headers.append((b"x-added", b"by a caller"))
    later, _ = connection(loop, origin)
    assert outcome(later, [OK])[1] == outcome(connection(loop, None)[0], [OK])[1]


@pytest.mark.parametrize("name", list(REMEMBERED))
def test_a_known_head_s_client_head_is_the_one_encoded_from_its_headers(
    loop: asyncio.AbstractEventLoop, name: str
) -> None:
    """The client's response head is made once per known head and keep-alive
    (``HeadMemo.encode_known``) and is what ``encode_head`` makes from the response's headers, with
    each request's own id; a parsed response has no known head."""
    pieces = REMEMBERED[name]
    origin = Origin("http://127.0.0.1:1")
    first, _ = connection(loop, origin)
    outcome(first, pieces)
    assert first.known is None
    conn, _ = connection(loop, origin)
    for i in range(4):
        keep_alive = i % 2 == 0
        request_id = b"%032x" % (i + 1)
        conn.begin(False)
        conn.request_sent = True
        for piece in pieces:
            conn.data_received(piece)
        known = conn.known
        assert known is not None
        expected = encode_head(
            conn.status, conn.response_headers(), request_id=request_id, keep_alive=keep_alive
        )
        assert HeadMemo.encode_known(conn, known, request_id, keep_alive) == expected
        conn.take()
    assert known is not None and sorted(known.encoded) == [False, True]
