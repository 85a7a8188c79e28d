"""Session-cache misses answered in the HTTP protocol (``sidecar.http_protocol``, "Answers that need
I/O") against the ASGI path.

As tests/proxy/test_fast_path.py, uvicorn's protocol is driven in process over a recording
transport, once with the responders ``sidecar serve`` builds and once without, the same bytes in;
but with the session cache off (``session.cache_ttl: 0s``), so every decision and whoami that
presents a token reads the stores: the sessions in SQLite or in Redis, the identities in SQLite.
The raw responses, whether the connection was closed, the access lines and the request metrics must
be the same (request ids aside), and the fast side must not have called the ASGI app for what it
answered itself. Then what an await makes possible: the client going away meanwhile, its side
paused for writing, a shutdown, a request pipelined behind, the store down, an app error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from sidecar.app import fast_responders
from sidecar.identity.model import Identity, VerifiableAddress, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session
from tests.conftest import make_config
from tests.proxy.harness import Transport, redis_server, started_public_app
from tests.proxy.test_fast_path import (
    RULES,
    TRUSTED,
    UNTRUSTED,
    Ask,
    Side,
    Stack,
    asks,
    both,
    log_entries,
    normalised,
    protocol_side,
    split,
)


async def _user(
    services: Any,
    aal: str = "aal1",
    *,
    expires_in: timedelta = timedelta(hours=1),
    state: Literal["active", "inactive"] = "active",
    roles: tuple[str, ...] = ("a", "b"),
) -> str:
    """A user with one session in the session store (Redis when configured); its token."""
    email = f"u-{uuid.uuid4().hex[:10]}@example.com"
    identity = Identity(
        schema_id="default",
        traits={"email": email},
        metadata_public={"roles": list(roles)},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
        state=state,
    )
    identity = await services.database.identities.create(identity)
    session = Session(identity_id=identity.id, expires_at=utcnow() + expires_in, aal=aal)
    token = new_session_token()
    await services.resolver.sessions.create(session, digest(token))
    return token


@contextlib.asynccontextmanager
async def miss_stack(tmp: Path, redis_url: str | None) -> AsyncIterator[Stack]:
    """The two sides over services with the session cache off; sessions in Redis at ``redis_url``."""
    (tmp / "rules.yaml").write_text(RULES)
    extra: dict[str, Any] = {}
    if redis_url is not None:
        extra["redis"] = {"url": redis_url, "key_prefix": f"fast-miss-{uuid.uuid4().hex[:8]}:"}
    config = make_config(
        dsn=f"sqlite:///{tmp}/sidecar.db",
        rules=[str(tmp / "rules.yaml")],
        log={"level": "info", "format": "json", "access_buffer": 0},
        serve={"public": {"base_url": "http://127.0.0.1:4433/.auth"}},
        session={"cache_ttl": "0s"},  # every request with a token reads the stores
        **extra,
    )
    async with started_public_app(config) as (services, public, lines):
        responders = fast_responders(config, public)
        assert len(responders) == 1

        yield Stack(
            fast=protocol_side(public, responders),
            asgi=protocol_side(public, ()),
            log=public,
            lines=lines,
            services=services,
            token=await _user(services),
            aal2_token=await _user(services, "aal2"),
            unknown_token=new_session_token(),
            cookie=config.session.cookie.name,
        )


@pytest.fixture(scope="module", params=["sqlite", "redis"])
async def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    tmp = tmp_path_factory.mktemp(f"fast-miss-{request.param}")
    if request.param == "sqlite":
        async with miss_stack(tmp, None) as made:
            yield made
        return
    with redis_server(tmp) as redis:
        async with miss_stack(tmp, f"redis://127.0.0.1:{redis.port}/0") as made:
            yield made


def nginx(token: str = "", uri: str = "/private/x", extra: str = "") -> bytes:
    credential = f"X-Session-Token: {token}\r\n" if token else ""
    return (
        f"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: {uri}\r\n{credential}{extra}\r\n"
    ).encode()


def whoami(token: str, extra: str = "") -> bytes:
    return (
        f"GET /.auth/sessions/whoami HTTP/1.1\r\nHost: a\r\nX-Session-Token: {token}\r\n{extra}\r\n".encode()
    )


# --- the equivalence ----------------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pipeline=st.lists(asks, min_size=1, max_size=4),
    trusted=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=3),
)
async def test_a_miss_is_answered_as_the_asgi_path_answers_it(
    stack: Stack, pipeline: list[Ask], trusted: bool, cuts: list[int]
) -> None:
    """Every endpoint, credential (cookie, token, bearer, an unknown one, an aal1 session on an
    aal2 rule...), method, version and framing of tests/proxy/test_fast_path.py, pipelined and cut
    anywhere, each read from the stores."""
    peer = TRUSTED if trusted else UNTRUSTED
    data = b"".join(a.head(stack) for a in pipeline)
    asgi, fast, asgi_calls, fast_calls = await both(stack, split(data, cuts), peer)
    assert fast == asgi  # bytes, closed, access lines, counters
    # Only a request pipelined behind one answered later can reach ASGI (uvicorn queued it).
    assert fast_calls <= len(pipeline) - 1
    assert asgi_calls >= 1


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("token", b"200"),
        ("cookie", b"200"),
        ("bearer", b"200"),
        ("unknown", b"401"),
        ("expired", b"401"),
        ("inactive", b"401"),
        ("aal2-needed", b"403"),
        ("aal2", b"200"),
        ("role-missing", b"403"),
        ("optional", b"200"),
        ("html", b"401"),
        ("head", b"200"),
        ("close", b"200"),
        ("http10", b"200"),
        ("request-id", b"200"),
        ("whoami", b"200"),
        ("whoami-unknown", b"401"),
        ("whoami-head", b"200"),
        ("forward-auth", b"200"),
        ("oathkeeper", b"200"),
        ("envoy", b"200"),
    ],
)
async def test_each_kind_of_miss_is_answered_in_the_protocol(stack: Stack, kind: str, status: bytes) -> None:
    services = stack.services
    token = stack.token
    requests = {
        "token": lambda: nginx(token),
        "cookie": lambda: nginx("", extra=f"Cookie: a=b; {stack.cookie}={token}\r\n"),
        "bearer": lambda: nginx("", extra=f"Authorization: Bearer {token}\r\n"),
        "unknown": lambda: nginx(stack.unknown_token),
        "aal2-needed": lambda: nginx(token, "/mfa/x"),
        "aal2": lambda: nginx(stack.aal2_token, "/mfa/x"),
        "role-missing": lambda: nginx(token, "/admin-only/x"),
        "optional": lambda: nginx(token, "/optional/x"),
        "html": lambda: nginx(stack.unknown_token, extra="Accept: text/html\r\nSec-Fetch-Mode: navigate\r\n"),
        "head": lambda: nginx(token).replace(b"GET ", b"HEAD ", 1),
        "close": lambda: nginx(token, extra="Connection: close\r\n"),
        "http10": lambda: nginx(token).replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        "request-id": lambda: nginx(token, extra="X-Request-ID: proxy-id-1\r\n"),
        "whoami": lambda: whoami(token),
        "whoami-unknown": lambda: whoami(stack.unknown_token),
        "whoami-head": lambda: whoami(token).replace(b"GET ", b"HEAD ", 1),
        "forward-auth": lambda: (
            f"GET /.auth/authz/forward-auth HTTP/1.1\r\nHost: a\r\nX-Forwarded-Uri: /private/y\r\n"
            f"X-Forwarded-Method: GET\r\nX-Session-Token: {token}\r\n\r\n"
        ).encode(),
        "oathkeeper": lambda: (
            f"GET /.auth/decisions/private/z HTTP/1.1\r\nHost: a\r\nX-Session-Token: {token}\r\n\r\n"
        ).encode(),
        "envoy": lambda: (
            f"GET /.auth/authz/envoy/private/z HTTP/1.1\r\nHost: a\r\nX-Session-Token: {token}\r\n\r\n"
        ).encode(),
    }
    if kind == "expired":
        # Valid for the store's write, expired by the time it is read.
        expiring = await _user(services, expires_in=timedelta(seconds=1))
        await asyncio.sleep(1.1)
        request = nginx(expiring)
    elif kind == "inactive":
        request = nginx(await _user(services, state="inactive"))
    else:
        request = requests[kind]()
    asgi, fast, asgi_calls, fast_calls = await both(stack, [request])
    assert fast == asgi
    assert fast[0].startswith(b"HTTP/1.1 " + status + b" "), fast[0][:80]
    assert fast_calls == 0 and asgi_calls == 1
    # Read from the store on both sides: a miss each.
    assert any("sidecar_session_cache" in k and "miss" in k for k in fast[3]), fast[3]


async def test_requests_pipelined_behind_a_miss_keep_their_order(stack: Stack) -> None:
    """A miss, answers the protocol makes at once, another miss, a request only ASGI serves: in
    order, each once, the same as on the ASGI path."""
    token = stack.token
    data = (
        nginx(token, "/private/a")
        + nginx("", "/deny/x")
        + nginx(stack.unknown_token, "/private/b")
        + b"GET /.auth/health/alive HTTP/1.1\r\nHost: a\r\n\r\n"
        + whoami(token)
    )
    for cuts in ([], [len(nginx(token, "/private/a")) + 3], [10, 200, 400]):
        asgi, fast, _, fast_calls = await both(stack, split(data, cuts))
        assert fast == asgi
        statuses = re.findall(rb"HTTP/1.1 (\d{3}) ", fast[0])
        assert statuses == [b"200", b"403", b"401", b"200", b"200"], statuses
        # In one read, the first is answered later and the rest queued behind it by uvicorn; in
        # several, the settled loop has answered what arrived before the next read.
        assert fast_calls == 4 if not cuts else fast_calls < 4
    # One after the other's answer: each answered in the protocol.
    calls = stack.fast.counting.calls
    raw, closed = await stack.fast.exchange([nginx(token, "/private/a"), nginx(token, "/private/b")])
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2 and not closed and stack.fast.counting.calls == calls


# --- what an await makes possible ---------------------------------------------------------------


class Gate:
    """The session store's read held until ``open``: a store that is slow to answer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Any) -> None:
        self.event = asyncio.Event()
        self.waiting = 0
        original = store.get_by_token

        async def held(key: str) -> Any:
            self.waiting += 1
            await self.event.wait()
            return await original(key)

        monkeypatch.setattr(store, "get_by_token", held)

    def open(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event = asyncio.Event()
        self.waiting = 0


def connect(side: Side, peer: str = TRUSTED) -> tuple[Any, Transport]:
    transport = Transport(peer)
    proto = side.protocol(config=side.config, server_state=side.state, app_state={})
    transport.set_protocol(proto)
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


async def held_exchange(
    stack: Stack,
    side: Side,
    gate: Gate,
    request: bytes,
    meanwhile: Callable[[Any, Transport], Awaitable[None] | None],
) -> tuple[bytes, bool, list[dict[str, Any]], dict[str, float], int]:
    """``request`` on a new connection of ``side`` with the store's read held; ``meanwhile`` runs
    while it waits, then the read goes on. (raw, closed, lines, metrics delta, requests counted)."""
    gate.close()
    before = await stack.metrics()
    del stack.lines[:]
    total = side.state.total_requests
    proto, transport = connect(side)
    proto.data_received(request)
    for _ in range(200):
        if gate.waiting:
            break
        await asyncio.sleep(0.005)
    assert gate.waiting == 1, "the request reached the store"
    done = meanwhile(proto, transport)
    if done is not None:
        await done
    await asyncio.sleep(0)
    gate.open()
    await side.settle()
    for _ in range(5):
        await asyncio.sleep(0)
    closed = transport.closed
    if not closed:
        transport.close()
        await asyncio.sleep(0)
    after = await stack.metrics()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return (
        normalised(bytes(transport.out)),
        closed,
        log_entries(stack.lines),
        delta,
        side.state.total_requests - total,
    )


async def both_held(
    stack: Stack,
    monkeypatch: pytest.MonkeyPatch,
    request: bytes,
    meanwhile: Callable[[Any, Transport], Any],
    queued: int = 0,
    remember: bool = False,
) -> tuple[Any, Any]:
    """``held_exchange`` on the ASGI side, then on the fast one, which must have answered
    ``request`` in the protocol (``queued``: the requests ``meanwhile`` pipelines behind it, which
    uvicorn queues for ASGI); ``remember``: from its memo (``remembered`` first)."""
    gate = Gate(monkeypatch, stack.services.resolver.sessions)
    asgi = await held_exchange(stack, stack.asgi, gate, request, meanwhile)
    if remember:
        await remembered(stack, request)
    else:
        forget(stack.fast)
    calls = stack.fast.counting.calls
    fast = await held_exchange(stack, stack.fast, gate, request, meanwhile)
    assert stack.fast.counting.calls == calls + queued, "the fast side answered it in the protocol"
    return asgi, fast


@pytest.mark.parametrize("remember", [False, True], ids=["made", "remembered"])
async def test_a_client_gone_while_the_store_reads_is_written_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, remember: bool
) -> None:
    """The connection lost mid-read: nothing written, the request still logged and counted as on
    the ASGI path (its status; no response completed for the server's count)."""

    async def gone(proto: Any, transport: Transport) -> None:
        transport.close()
        await asyncio.sleep(0)  # connection_lost

    asgi, fast = await both_held(stack, monkeypatch, nginx(stack.token), gone, remember=remember)
    assert fast == asgi
    assert fast[0] == b"" and len(fast[2]) == 1 and fast[2][0]["status"] == 200 and fast[4] == 0


async def many_held(stack: Stack, side: Side, gate: Gate, requests: list[bytes]) -> Any:
    """Each of ``requests`` on a connection of its own, all while the store's read is held, then
    the read goes on: (each connection's raw answer and whether it was closed, the lines, the
    metrics delta, the store's reads)."""
    gate.close()
    before = await stack.metrics()
    del stack.lines[:]
    sides = [connect(side) for _ in requests]
    for (proto, _), request in zip(sides, requests, strict=True):
        proto.data_received(request)
    for _ in range(200):
        if gate.waiting:
            break
        await asyncio.sleep(0.005)
    for _ in range(5):
        await asyncio.sleep(0)
    reads = gate.waiting
    gate.open()
    await side.settle()
    for _ in range(5):
        await asyncio.sleep(0)
    out = [(normalised(bytes(t.out)), t.closed) for _, t in sides]
    for _, transport in sides:
        transport.close()
    await asyncio.sleep(0)
    after = await stack.metrics()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return out, sorted(log_entries(stack.lines), key=repr), delta, reads


async def test_the_misses_of_one_token_wait_for_one_load_and_are_answered_as_on_the_asgi_path(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve connections asking with one token while its session loads: one store read (a load
    in flight is shared), and every answer, line and counter the ASGI path's, none through ASGI."""
    token = stack.token
    requests = [nginx(token, f"/private/{i % 3}") for i in range(8)]
    requests += [whoami(token), whoami(token), nginx(token, "/deny/x"), nginx(token, "/optional/x")]
    gate = Gate(monkeypatch, stack.services.resolver.sessions)
    asgi = await many_held(stack, stack.asgi, gate, requests)
    calls = stack.fast.counting.calls
    fast = await many_held(stack, stack.fast, gate, requests)
    assert stack.fast.counting.calls == calls, "answered in the protocol"
    assert fast == asgi
    assert fast[3] == 1, "one store read for all"
    statuses = [raw.split(b"\r\n", 1)[0] for raw, _ in fast[0]]
    assert statuses == [b"HTTP/1.1 200 OK"] * 10 + [b"HTTP/1.1 403 Forbidden", b"HTTP/1.1 200 OK"]


async def test_a_client_not_reading_is_written_once_it_drains(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's side paused for writing when the answer is ready: written once it resumes."""
    held: list[Any] = []

    def pause(proto: Any, transport: Transport) -> None:
        proto.pause_writing()
        held.append((proto, transport))

    gate = Gate(monkeypatch, stack.services.resolver.sessions)
    for side in (stack.asgi, stack.fast):
        held.clear()
        gate.close()
        proto, transport = connect(side)
        proto.data_received(nginx(stack.token))
        for _ in range(200):
            if gate.waiting:
                break
            await asyncio.sleep(0.005)
        pause(proto, transport)
        gate.open()
        for _ in range(50):
            await asyncio.sleep(0.001)
        assert transport.out == b"", "nothing written while the client's side is paused"
        proto.resume_writing()
        await side.settle()
        assert transport.out.startswith(b"HTTP/1.1 200 OK\r\n")
        transport.close()
        await asyncio.sleep(0)


@pytest.mark.parametrize("remember", [False, True], ids=["made", "remembered"])
async def test_a_shutdown_while_the_store_reads_closes_after_the_answer(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, remember: bool
) -> None:
    def shutdown(proto: Any, transport: Transport) -> None:
        proto.shutdown()  # uvicorn's graceful shutdown: the answer in flight ends the connection

    asgi, fast = await both_held(stack, monkeypatch, nginx(stack.token), shutdown, remember=remember)
    assert fast == asgi
    assert b"\r\nconnection: close\r\n" in fast[0] and fast[1] and fast[4] == 1


@pytest.mark.parametrize("remember", [False, True], ids=["made", "remembered"])
async def test_a_request_pipelined_behind_a_held_miss_waits_for_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, remember: bool
) -> None:
    def pipelined(proto: Any, transport: Transport) -> None:
        proto.data_received(nginx("", "/deny/x") + nginx("", "/public/x"))

    asgi, fast = await both_held(stack, monkeypatch, nginx(stack.token), pipelined, 2, remember)
    assert fast == asgi
    assert [e["status"] for e in fast[2]] == [200, 403, 200] and fast[4] == 3


async def test_an_error_while_answering_is_uvicorn_s_500(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug under the access path (not an outage: that is a 503) gets what uvicorn gives an ASGI
    app that raised: its 500, the connection closed, its log record; the access line says 500."""
    access = stack.log.app.access
    forget(stack.fast)  # (a remembered answer is not judged again: nothing there to break)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(access, "_judged", broken)  # the judgement once the session is loaded
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        asgi, fast, _, fast_calls = await both(stack, [nginx(stack.token) + nginx("", "/public/x")])
    assert fast == asgi and fast_calls == 0
    assert fast[0].startswith(b"HTTP/1.1 500 Internal Server Error\r\n") and fast[1]
    assert fast[0].count(b"HTTP/1.1") == 1  # nothing after it: the connection is closed
    assert [e["status"] for e in fast[2]] == [500]
    records = [r for r in caplog.records if r.getMessage().startswith("Exception in ASGI application")]
    assert len(records) == 2 and all(r.exc_info for r in records)


# --- the store down -----------------------------------------------------------------------------


@pytest.fixture
async def outage_stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, Any]]:
    with redis_server(tmp_path) as redis:
        async with miss_stack(tmp_path, f"redis://127.0.0.1:{redis.port}/0") as made:
            yield made, redis


async def test_the_session_store_down_fails_closed_as_on_the_asgi_path(
    outage_stack: tuple[Stack, Any],
) -> None:
    """Redis stopped: a decision that needs a session is a 503 with Retry-After (never a login
    redirect), one that grants anonymous access is served, whoami is a 503: byte for byte what the
    ASGI path says, with its lines and counters, none of it through ASGI."""
    stack, redis = outage_stack
    token = stack.token
    requests = [
        nginx(token),
        nginx(token, extra="Accept: text/html\r\nSec-Fetch-Mode: navigate\r\n"),
        nginx(token, "/optional/x"),
        nginx("", "/private/x"),
        whoami(token),
    ]
    asgi, fast, _, _ = await both(stack, [requests[0]])
    assert fast == asgi and fast[0].startswith(b"HTTP/1.1 200 ")
    await remembered(stack, requests[0])  # a remembered answer fails closed too
    redis.stop()
    expected = [b"503", b"503", b"200", b"401", b"503"]
    for request, status in zip(requests, expected, strict=True):
        asgi, fast, asgi_calls, fast_calls = await both(stack, [request])
        assert fast == asgi, request
        assert fast[0].startswith(b"HTTP/1.1 " + status + b" "), fast[0][:80]
        assert fast_calls == 0 and asgi_calls == 1
        if status == b"503":
            assert b"\r\nretry-after: " in fast[0] and not fast[1]
    # Pipelined behind an outage: the same order and answers.
    asgi, fast, _, _ = await both(stack, [b"".join(requests)])
    assert fast == asgi


def forget(side: Side) -> None:
    """The listener's memo emptied: what earlier tests left there is not this test's."""
    memo = side.protocol.memo
    assert memo is not None
    memo.clear()
    memo.seen.clear()
    memo.varied.clear()
    memo.requests.clear()


async def test_a_miss_is_noted_then_remembered_then_answered_again_after_its_load(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same miss three times: answered from a load and noted, then remembered, then answered
    from the memo once a new load gave the same session (the store read every time: the cache is
    off), without the responders; bytes, lines and counters the ASGI path's every time. Fails when
    a remembered miss is answered without a load (the store not read) or by the responders."""
    forget(stack.fast)
    request = nginx(stack.token)
    reads: list[str] = []
    store = stack.services.resolver.sessions
    original = store.get_by_token

    async def counted(key: str) -> Any:
        reads.append(key)
        return await original(key)

    monkeypatch.setattr(store, "get_by_token", counted)
    memo = stack.fast.protocol.memo
    assert memo is not None
    kinds = []
    for _ in range(3):
        asked = stack.fast.asked
        asgi, fast, _, fast_calls = await both(stack, [request])
        assert fast == asgi and fast_calls == 0 and fast[0].startswith(b"HTTP/1.1 200 OK\r\n")
        kinds.append((stack.fast.asked - asked, [type(r).__name__ for r in memo.values()]))
    assert kinds == [(1, []), (1, ["RememberedLater"]), (0, ["RememberedLater"])]
    assert len(reads) == 6  # each side, each time


async def remembered(stack: Stack, request: bytes) -> None:
    """``request`` remembered on the fast side (answered twice from its loads)."""
    forget(stack.fast)
    for _ in range(2):
        raw, _ = await stack.fast.exchange([request])
        assert raw.startswith(b"HTTP/1.1 ")
    memo = stack.fast.protocol.memo
    assert memo is not None and [type(r).__name__ for r in memo.values()] == ["RememberedLater"]


async def test_a_remembered_miss_whose_session_was_revoked_is_answered_afresh(stack: Stack) -> None:
    """Remembered, then the session revoked in the store: the new load finds none, so the answer is
    made from that (a 401), as the ASGI path makes it, and the memo forgets the old one. Fails when
    a remembered miss is replayed whatever its load gave."""
    services = stack.services
    token = await _user(services)
    request = nginx(token)
    await remembered(stack, request)
    session = await services.resolver.sessions.get_by_token(digest(token))
    assert session is not None
    assert await services.resolver.sessions.revoke(session.id)
    asgi, fast, _, fast_calls = await both(stack, [request])
    assert fast == asgi and fast_calls == 0
    assert fast[0].startswith(b"HTTP/1.1 401 ") and [e["status"] for e in fast[2]] == [401]
    assert not stack.fast.protocol.memo


async def test_a_remembered_miss_whose_identity_changed_is_answered_afresh(stack: Stack) -> None:
    """Remembered, then the identity's roles changed: a new identity read, another session value,
    the answer made from it (its headers say the new roles), as on the ASGI path."""
    services = stack.services
    token = await _user(services, roles=("a",))
    request = nginx(token, "/tagged")
    await remembered(stack, request)
    session = await services.resolver.sessions.get_by_token(digest(token))
    identity = await services.database.identities.get(session.identity_id)
    await services.database.identities.update(replace(identity, metadata_public={"roles": ["a", "b"]}))
    services.resolver.invalidate_identity(identity.id)
    asgi, fast, _, fast_calls = await both(stack, [request])
    assert fast == asgi and fast_calls == 0
    assert fast[0].startswith(b"HTTP/1.1 200 ") and not stack.fast.protocol.memo


TRACE = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
OTHER_TRACE = "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"


@pytest.mark.parametrize(
    "ids",
    [
        "",
        "X-Request-ID: proxy-id-1\r\n",
        "X-Request-ID: proxy-id-1\r\nX-Request-ID: proxy-id-2\r\n",
        "X-Request-ID: bad id!\r\n",
        TRACE,
        f"X-Request-ID: proxy-id-3\r\n{TRACE}{OTHER_TRACE}",
        f"{TRACE}x-request-id: proxy-id-4\r\n",
    ],
)
@pytest.mark.parametrize("trusted", [True, False])
async def test_the_request_id_of_a_miss_is_the_asgi_path_s(stack: Stack, ids: str, trusted: bool) -> None:
    """The request id a miss answered in the protocol gets (its x-request-id and the access line)
    is the one the ASGI path gives, with the protocol's note of the id headers
    (``sidecar.id_headers``) read instead of the headers. Fails on a note that always says "none"
    (a trusted proxy's id replaced by a new one)."""
    asgi, fast, _, fast_calls = await both(
        stack, [nginx(stack.token, extra=ids)], TRUSTED if trusted else UNTRUSTED
    )
    assert fast == asgi and fast_calls == 0
    if trusted and ids.startswith("X-Request-ID: proxy-id-1"):
        assert b"\r\nx-request-id: proxy-id-1\r\n" in fast[0]


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"x-request-id", b"rid-1")],
        [(b"traceparent", TRACE.split(": ")[1].strip().encode())],
        [
            (b"host", b"a"),
            (b"traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01"),
            (b"x-request-id", b"r"),
        ],
        [(b"x-request-id", b"bad id"), (b"traceparent", OTHER_TRACE.split(": ")[1].strip().encode())],
    ],
)
@pytest.mark.parametrize("peer", ["10.0.0.1", "192.0.2.9"])
def test_the_request_id_from_the_protocol_s_note_is_the_one_read_from_the_headers(
    headers: list[tuple[bytes, bytes]], peer: str
) -> None:
    """``AccessLog._request_id`` with ``sidecar.id_headers`` (the first x-request-id and
    traceparent) decides as it does reading the headers: the id, the trace adopted from a trusted
    proxy, the headers the app gets. Fails on a reading of the note that drops the traceparent."""
    from sidecar.logs import ID_HEADERS, AccessLog

    log = AccessLog(None, listener="public", trusted=lambda p: p == "10.0.0.1")
    first = {n: v for n, v in reversed(headers)}
    note = (first.get(b"x-request-id"), first.get(b"traceparent"))
    read: dict[str, Any] = {"headers": list(headers), "client": (peer, 1)}
    noted: dict[str, Any] = {"headers": list(headers), "client": (peer, 1), ID_HEADERS: note}
    rid_read, rid_noted = log._request_id(read), log._request_id(noted)
    adopted = peer == "10.0.0.1" and note[0] in (b"rid-1", b"r")  # else a new id each time
    assert (rid_read == rid_noted) == adopted
    del noted[ID_HEADERS]
    for scope, rid in ((read, rid_read), (noted, rid_noted)):
        scope["headers"] = [(n, b"<id>" if v == rid.encode() else v) for n, v in scope["headers"]]
    assert read == noted


async def test_a_remembered_miss_read_again_whole_is_answered_without_parsing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same miss again and again, each in one read: once remembered, its bytes are known
    (``sidecar.http_protocol.KnownRequest``) and the next reads of them are answered from the memo
    after their load without being parsed, as the ASGI path answers them; then another request on
    the same connection is parsed and answered right."""
    forget(stack.fast)
    # (Not nginx's: a request with an original-URI header is never known, its URI varies.)
    credential = f"X-Session-Token: {stack.token}\r\n"
    request = f"GET /.auth/decisions/private/x HTTP/1.1\r\nHost: a\r\n{credential}\r\n".encode()
    memo = stack.fast.protocol.memo
    assert memo is not None
    begun: list[int] = []
    original = stack.fast.protocol.on_message_begin

    def counted(proto: Any) -> None:
        begun.append(1)
        original(proto)

    for _ in range(3):
        asgi, fast, _, fast_calls = await both(stack, [request])
        assert fast == asgi and fast_calls == 0
    assert memo.requests.get(request) is not None
    monkeypatch.setattr(stack.fast.protocol, "on_message_begin", counted)
    for _ in range(2):
        asked = stack.fast.asked
        asgi, fast, _, fast_calls = await both(stack, [request])
        assert fast == asgi and fast_calls == 0 and fast[0].startswith(b"HTTP/1.1 200 OK\r\n")
        assert stack.fast.asked == asked and begun == []  # from the memo, not parsed
    asgi, fast, _, _ = await both(stack, [request, whoami(stack.aal2_token)])
    assert fast == asgi and len(begun) == 1 and fast[0].count(b"HTTP/1.1 200 OK\r\n") == 2
