"""Known requests (``sidecar.http_protocol.KnownRequest``): a read holding, whole, the bytes of a
request the memo answered before is answered from the memo without being parsed again.

Driven as tests/proxy/test_relay_memo.py drives the protocol (its stack: the fast relay, the
responders and the memo as ``sidecar serve`` builds them), with the connection's parser counted:
the same bytes again are not fed to it, and what the client, the upstream and the access log get
is what parsing them gives; the parser is left where the next request starts; the peer, a
connection that is not kept alive and a revoked session each get what the full path gives them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from sidecar.http_protocol import KnownRequest, RememberedRelay
from sidecar.security.tokens import digest
from tests.proxy.test_known_heads import Feeds  # the parser counting the reads fed to it
from tests.proxy.test_relay_memo import (
    TRUSTED,
    Connection,
    Stack,
    _user,
    built,
    get,
    remembered,
)

OTHER_TRUSTED = "127.0.0.2"  # loopback: a trusted proxy too, another peer


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with built(tmp_path_factory) as made:
        yield made


def counted(conn: Connection) -> Feeds:
    parser = conn.proto.parser = Feeds(conn.proto.parser)
    return parser


def known(conn: Connection, request: bytes) -> KnownRequest | None:
    memo = conn.proto.memo
    return memo.requests.get(request) if memo is not None else None


async def test_the_same_bytes_again_are_answered_without_parsing(stack: Stack) -> None:
    conn = Connection(stack, remembering=True)
    parser = counted(conn)
    request = get(stack)
    try:
        got = await remembered(conn, request)  # five asks: the last from the memo
        entry = known(conn, request)
        assert entry is not None and entry.peer == TRUSTED
        # The memo holds its relay under the known request's very key (found by identity).
        memo = conn.proto.memo
        assert isinstance(memo.get(entry.key), RememberedRelay)
        assert any(key is entry.key for key in memo)
        fed, connections = parser.fed, stack.upstream.connections
        for _ in range(3):
            raw, heads, line = await conn.ask(request)
            assert parser.fed == fed, "known bytes are not parsed again"
            # Each over the pooled upstream connection, given back after each response.
            assert stack.upstream.connections == connections
            rid = json.loads(line)["request_id"]
            assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"ok\n")
            assert f"x-request-id: {rid}\r\n".encode() in raw
            assert len(heads) == 1 and f"x-request-id: {rid}".encode() in heads[0]
            assert f"x-user-email: {stack.emails[0]}".encode() in heads[0].lower()
            assert heads[0].replace(rid.encode(), b"") == got[1][0].replace(
                json.loads(got[2])["request_id"].encode(), b""
            )
        # The parser was left at the start of the next request: another one is read right.
        raw, heads, _ = await conn.ask(get(stack, user=1))
        assert parser.fed == fed + 1 and raw.startswith(b"HTTP/1.1 200 ")
        assert f"x-user-email: {stack.emails[1]}".encode() in heads[0].lower()
        raw, _, _ = await conn.ask(get(stack, "/nowhere"))  # no rule: 403, by the full path
        assert raw.startswith(b"HTTP/1.1 403 ") and parser.fed == fed + 2
        raw, _, _ = await conn.ask(request)
        assert raw.startswith(b"HTTP/1.1 200 ") and parser.fed == fed + 2
    finally:
        conn.close()
        await asyncio.sleep(0)


async def test_known_bytes_from_another_peer_are_that_peer_s_request(stack: Stack) -> None:
    """The memo key holds the peer: the same bytes from another client are its own request, logged
    with its own address (and relayed from its own remembered relay once it has one)."""
    request = get(stack, "/private/peers")
    first = Connection(stack, remembering=True)
    second = Connection(stack, remembering=True, peer=OTHER_TRUSTED)
    try:
        await remembered(first, request)
        await first.ask(request)
        assert (entry := known(first, request)) is not None and entry.peer == TRUSTED
        for _ in range(5):
            raw, heads, line = await second.ask(request)
            assert raw.startswith(b"HTTP/1.1 200 ") and len(heads) == 1
            assert json.loads(line)["client"] == OTHER_TRUSTED
        assert (entry := known(second, request)) is not None and entry.peer == OTHER_TRUSTED
        _, _, line = await first.ask(request)
        assert json.loads(line)["client"] == TRUSTED
    finally:
        first.close()
        second.close()
        await asyncio.sleep(0)


async def test_a_request_that_closes_the_connection_is_never_known(stack: Stack) -> None:
    """A request with ``Connection: close`` leaves llhttp taking no other: its bytes are never
    kept, and each such request closes its connection, however often it is asked."""
    request = get(stack, "/private/closing", extra="Connection: close\r\n")
    for _ in range(6):
        conn = Connection(stack, remembering=True)
        try:
            raw, heads, _ = await conn.ask(request)
            assert raw.startswith(b"HTTP/1.1 200 ") and len(heads) == 1
            assert b"connection: close\r\n" in raw.lower()
            for _ in range(100):
                if conn.transport.closed:
                    break
                await asyncio.sleep(0.002)
            assert conn.transport.closed
        finally:
            conn.close()
            await asyncio.sleep(0)
    assert known(conn, request) is None


async def test_a_revoked_session_s_known_request_is_refused_at_once(stack: Stack) -> None:
    token, _ = await _user(stack.services, "known-revoked@example.com")
    request = f"GET /private/x HTTP/1.1\r\nHost: app.test\r\nX-Session-Token: {token}\r\n\r\n".encode()
    conn = Connection(stack, remembering=True)
    parser = counted(conn)
    try:
        await remembered(conn, request)
        await conn.ask(request)
        assert known(conn, request) is not None
        fed = parser.fed
        session = await stack.services.database.sessions.get_by_token(digest(token))
        await stack.services.database.sessions.revoke(session.id)
        stack.services.resolver.invalidate_session(session.id)  # what the revocation feed does
        raw, heads, _ = await conn.ask(request)
        assert raw.startswith(b"HTTP/1.1 401 ") and heads == []
        assert parser.fed == fed + 1  # the memo no longer answered: the bytes were parsed
    finally:
        conn.close()
        await asyncio.sleep(0)


async def test_a_request_split_across_reads_is_parsed(stack: Stack) -> None:
    """Only a read holding a request whole, from its start, is looked up: a known request's bytes
    in two reads, or behind another request's, are parsed (and answered right)."""
    request = get(stack, "/private/split")
    conn = Connection(stack, remembering=True)
    parser = counted(conn)
    try:
        await remembered(conn, request)
        await conn.ask(request)
        assert known(conn, request) is not None
        fed = parser.fed
        lines = len(stack.lines)
        conn.proto.data_received(request[:20])
        raw, heads, _ = await conn.ask(request[20:])
        assert raw.startswith(b"HTTP/1.1 200 ") and len(heads) == 1 and parser.fed == fed + 2
        assert len(stack.lines) == lines + 1
        # Two in one read: the second is queued behind the first, both parsed in that read.
        out = len(conn.transport.out)
        conn.proto.data_received(request + request)
        for _ in range(2500):
            if bytes(conn.transport.out[out:]).count(b"ok\n") == 2 and conn.proto.cycle.response_complete:
                break
            await asyncio.sleep(0.002)
        assert bytes(conn.transport.out[out:]).count(b"HTTP/1.1 200 ") == 2
        assert parser.fed == fed + 3
        # The rest of a request begun in an earlier read, though its bytes are a known request's,
        # is that request's rest: here one header's value, then the known request's headers.
        conn.proto.data_received(b"GET /nowhere HTTP/1.1\r\nX-Pad: ")
        raw, heads, line = await conn.ask(request)
        assert raw.startswith(b"HTTP/1.1 403 ") and heads == [] and parser.fed == fed + 5
        assert json.loads(line)["path"] == "/nowhere"
    finally:
        conn.close()
        await asyncio.sleep(0)


async def test_two_answers_in_one_read_are_never_known_as_one(stack: Stack) -> None:
    """A decision twice in one read, each answered from the memo on the spot: the read held two
    requests, so its bytes are not kept (answering them again as one request would lose the
    second answer); each such read gets its two answers."""
    one = get(stack, "/.auth/decisions/private/x")
    two = one + one
    conn = Connection(stack, remembering=True)
    try:
        for _ in range(4):
            raw, _, _ = await conn.ask(one)
            assert raw.startswith(b"HTTP/1.1 200 ")
        for _ in range(4):
            out, lines = len(conn.transport.out), len(stack.lines)
            conn.proto.data_received(two)
            for _ in range(500):
                if len(stack.lines) == lines + 2:
                    break
                await asyncio.sleep(0.002)
            assert bytes(conn.transport.out[out:]).count(b"HTTP/1.1 200 ") == 2
        assert known(conn, one) is not None and known(conn, two) is None
    finally:
        conn.close()
        await asyncio.sleep(0)
