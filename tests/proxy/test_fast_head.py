"""``fast.encode_head`` writes what uvicorn writes for the same ``http.response.start`` after the
access log's wrapper (``x-request-id`` added when missing): compared byte for byte with uvicorn's
own ``RequestResponseCycle.send`` over a recording transport."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from sidecar.proxy.fast import BadHead, HeadMemo, encode_head

RID = b"0123456789abcdef0123456789abcdef"


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.data += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def uvicorn_bytes(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
) -> tuple[bytes, bool]:
    transport = Transport()
    cycle = RequestResponseCycle(
        scope={"method": "GET", "type": "http"},  # type: ignore[typeddict-item]
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    if not any(k.lower() == b"x-request-id" for k, _ in headers):
        headers = [*headers, (b"x-request-id", RID)]  # what AccessLog's send wrapper adds
    await cycle.send({"type": "http.response.start", "status": status, "headers": headers})
    await cycle.send({"type": "http.response.body", "body": body})
    return transport.data, transport.closed


CASES: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = [
    (200, [(b"content-type", b"text/plain"), (b"content-length", b"5")], b"hello"),
    (200, [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=2"), (b"content-length", b"2")], b"ok"),
    (201, [(b"x-app", b"c")], b"chunky"),  # no length: chunked
    (200, [(b"x-app", b"c")], b""),
    (204, [(b"x-a", b"1")], b""),
    (304, [(b"etag", b'"e"')], b""),
    (302, [(b"location", b"/elsewhere"), (b"content-length", b"0")], b""),
    (200, [(b"X-Mixed-Case", b"v"), (b"content-length", b"1")], b"x"),
    (200, [(b"x-request-id", b"theirs"), (b"content-length", b"1")], b"x"),
    (599, [(b"content-length", b"0")], b""),
    (200, [(b"connection", b"close"), (b"content-length", b"1")], b"x"),
]


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize(("status", "headers", "body"), CASES)
async def test_head_and_body_framing_match_uvicorn(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
) -> None:
    expected, closed = await uvicorn_bytes(status, headers, body, keep_alive)
    head, length, kept = encode_head(status, headers, request_id=RID, keep_alive=keep_alive)
    chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
    framed = chunk + b"0\r\n\r\n" if length == -1 else body
    assert head + framed == expected
    assert kept == (not closed)


def test_a_header_uvicorn_refuses_is_refused() -> None:
    for bad in ([(b"x-a", b"v\r\nInjected: 1")], [(b"bad name", b"v")]):
        with pytest.raises(BadHead):
            encode_head(200, bad, request_id=RID, keep_alive=True)


def test_the_head_memo_gives_what_encode_head_gives() -> None:
    """``HeadMemo`` (the fast relay's remembered response heads): each case, each keep-alive, asked
    again with other request ids, gives ``encode_head``'s head, length and keep-alive; a head
    uvicorn refuses is refused every time and never kept."""
    memo = HeadMemo()
    for _ in range(2):
        for status, headers, _body in CASES:
            for keep_alive in (True, False):
                for rid in (RID, b"f" * 32, b"trusted-proxy-id"):
                    got = memo.encode(status, list(headers), rid, keep_alive)
                    assert got == encode_head(status, headers, request_id=rid, keep_alive=keep_alive)
    assert len(memo) == 2 * len(CASES)
    for bad in ([(b"x-a", b"v\r\nInjected: 1")], [(b"bad name", b"v")]):
        for _ in range(2):
            with pytest.raises(BadHead):
                memo.encode(200, bad, RID, True)
    assert len(memo) == 2 * len(CASES)
    big = [(b"x-big", b"v" * memo.LARGEST)]
    assert memo.encode(200, big, RID, True) == encode_head(200, big, request_id=RID, keep_alive=True)
    assert len(memo) == 2 * len(CASES)  # too large to keep
    memo.LIMIT = len(memo)
    memo.encode(200, [(b"x-new", b"1")], RID, True)  # full: emptied, then the new one kept
    assert len(memo) == 1
