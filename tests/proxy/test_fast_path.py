"""The HTTP protocol's synchronous answers (``serve.public.fast_path``) against the ASGI path.

uvicorn's protocol (``sidecar.http_protocol``) is driven in process, byte for byte, over a
transport that records what is written: once with the responders ``sidecar serve`` builds
(``fast_responders``) and once without, over the same services, the same bytes in. The raw
responses, the access log lines and the request metrics must be the same apart from the request
id, and the first protocol must not have called the ASGI app for what it answered itself.
tests/ops/test_fast_path_serve.py does the same against two ``sidecar serve`` processes.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import inspect
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from uvicorn.protocols.http import httptools_impl
from uvicorn.server import ServerState

from sidecar.app import fast_responders
from sidecar.http_protocol import GuardedHttpToolsProtocol, guarded_protocol
from sidecar.identity.model import Identity, VerifiableAddress, utcnow
from sidecar.logs import AccessLog
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session
from tests.conftest import make_config
from tests.proxy.harness import Transport, counted, started_public_app

RULES = """
version: 1
rules:
  - {id: public, match: {paths: ["/public/**"]}, require: public}
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
  - {id: optional, match: {paths: ["/optional/**"]}, require: optional}
  - {id: deny, match: {paths: ["/deny/**"]}, require: deny}
  - {id: mfa, match: {paths: ["/mfa/**"]}, require: {level: authenticated, aal: aal2}}
  - {id: admins, match: {paths: ["/admin-only/**"]}, require: {level: authenticated, roles: [admin]}}
  - {id: json, match: {paths: ["/json/**"]}, require: authenticated, on_unauthenticated: json}
  - {id: walled, match: {hosts: [walled.test], paths: ["/form/**"]}, require: deny}
  - {id: posts, match: {methods: [POST], paths: ["/form/**"]}, require: authenticated}
  - id: tagged
    match: {paths: ["/tagged"]}
    require: authenticated
    headers: {X-User-Roles: "{metadata_public.roles|join(';')}"}
"""

TRUSTED, UNTRUSTED = "127.0.0.1", "10.9.8.7"
COUNTED = (
    "sidecar_requests_total",
    "sidecar_decisions_total",
    "sidecar_decision_seconds_count",
    "sidecar_session_cache",
    "sidecar_rule_matches",
)
_GENERATED_ID = re.compile(rb"[0-9a-f]{32}")


class CountingApp:
    """The ASGI app as uvicorn sees it, counting the requests that reached it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


class CountingResponder:
    """A responder as the protocol sees it, counting the requests it was asked (a remembered
    answer is written without asking it)."""

    def __init__(self, inner: Callable[[Any], Any]) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, scope: Any) -> Any:
        self.calls += 1
        return self.inner(scope)


@dataclass
class Side:
    """One protocol class over the shared app: with the responders, or without (the ASGI path)."""

    protocol: type[GuardedHttpToolsProtocol]
    config: uvicorn.Config
    counting: CountingApp
    responders: tuple[CountingResponder, ...] = ()
    state: ServerState = field(default_factory=ServerState)

    @property
    def asked(self) -> int:
        """How many times the responders were asked."""
        return sum(r.calls for r in self.responders)

    async def exchange(self, chunks: list[bytes], peer: str = TRUSTED) -> tuple[bytes, bool]:
        """Feed ``chunks`` to one new connection; (everything written, whether it was closed)."""
        transport = Transport(peer)
        proto = self.protocol(config=self.config, server_state=self.state, app_state={})
        transport.set_protocol(proto)
        proto.connection_made(transport)  # type: ignore[arg-type]
        for chunk in chunks:
            if transport.closed:
                break
            proto.data_received(chunk)
            await self.settle()
        await self.settle()
        closed = transport.closed
        if not closed:
            transport.close()
        await asyncio.sleep(0)  # connection_lost: the keep-alive timer is disarmed
        return bytes(transport.out), closed

    async def settle(self) -> None:
        """Until every ASGI task of this side (pipelined ones too) has finished."""
        for _ in range(10_000):
            tasks = [t for t in self.state.tasks if not t.done()]
            if not tasks:
                await asyncio.sleep(0)
                if not [t for t in self.state.tasks if not t.done()]:
                    return
                continue
            await asyncio.wait(tasks, timeout=60)
        raise AssertionError("the ASGI tasks did not settle")


def protocol_side(public: Any, inner: tuple[Callable[[Any], Any], ...]) -> Side:
    """The protocol ``sidecar serve`` builds over ``public``, with ``inner`` as its responders
    (none: every request takes the ASGI path), each counted."""
    responders = tuple(CountingResponder(r) for r in inner)
    counting = CountingApp(public)
    uv = uvicorn.Config(
        counting,
        http=guarded_protocol(8 * 1024, responders),
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        ws="websockets-sansio",
    )
    uv.load()
    return Side(uv.http_protocol_class, uv, counting, responders)  # type: ignore[arg-type]


@dataclass
class Stack:
    fast: Side
    asgi: Side
    log: AccessLog
    lines: list[str]
    services: Any
    token: str  # aal1, roles [a, b]
    aal2_token: str
    unknown_token: str
    cookie: str

    async def metrics(self) -> dict[str, float]:
        """The request counts of the exposition: requests, decisions (and their histogram's count),
        session cache lookups, rule matches."""
        return await counted(self.services, COUNTED)


async def _user(services: Any, aal: str, email: str) -> str:
    identity = Identity(
        schema_id="default",
        traits={"email": email},
        metadata_public={"roles": ["a", "b"]},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
    )
    identity = await services.database.identities.create(identity)
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal=aal)
    token = new_session_token()
    await services.database.sessions.create(session, digest(token))
    return token


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:

    tmp = tmp_path_factory.mktemp("fast-path")
    (tmp / "rules.yaml").write_text(RULES)
    config = make_config(
        dsn=f"sqlite:///{tmp}/sidecar.db",
        rules=[str(tmp / "rules.yaml")],
        log={"level": "info", "format": "json", "access_buffer": 0},
        serve={"public": {"base_url": "http://127.0.0.1:4433/.auth"}},
        # Entries must outlive a hypothesis example under any load: what is cached is the point.
        session={"cache_ttl": "1h"},
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
            token=await _user(services, "aal1", "alice@example.com"),
            aal2_token=await _user(services, "aal2", "bob@example.com"),
            unknown_token=new_session_token(),
            cookie=config.session.cookie.name,
        )


# --- the requests -------------------------------------------------------------------------------

ORIGINAL_PATHS = [
    "/public/x",
    "/private/x",
    "/optional/x",
    "/deny/x",
    "/mfa/x",
    "/admin-only/x",
    "/json/x",
    "/form/x",
    "/tagged",
    "/nowhere",
    "/",
    "/private/../public/y",
    "/public/%2f",
    "/private/x;p=1",
    "/private//x",
    "/Private/X",
    "/private/%7Euser/%C3%A9",
    "/private/a%00b",
]
ENDPOINTS = ["nginx", "nginx-url", "forward-auth", "envoy", "oathkeeper", "whoami", "jwks"]
CREDENTIALS = ["none", "token", "cookie", "bearer", "aal2-token", "unknown-token", "unknown-cookie", "empty"]


@dataclass(frozen=True)
class Ask:
    endpoint: str
    original: str
    query: str
    credential: str
    method: str
    version: str
    connection: str  # "", "close", "keep-alive"
    accept_html: bool
    fetch_mode: str  # "", "navigate", "cors"
    forwarded: bool
    request_id: str  # "", a plain one, one refused (too long)
    traceparent: bool
    decision_query: str

    def head(self, stack: Stack) -> bytes:
        """The request's bytes (no body)."""
        target, headers = self._target()
        headers += [("Host", "app.test:8080")]
        credential = {
            "token": ("X-Session-Token", stack.token),
            "aal2-token": ("X-Session-Token", stack.aal2_token),
            "unknown-token": ("X-Session-Token", stack.unknown_token),
            "cookie": ("Cookie", f"theme=dark; {stack.cookie}={stack.token}"),
            "unknown-cookie": ("Cookie", f"{stack.cookie}={stack.unknown_token}"),
            "bearer": ("Authorization", f"Bearer {stack.token}"),
            "empty": ("X-Session-Token", ""),
        }.get(self.credential)
        if credential is not None:
            headers.append(credential)
        if self.accept_html:
            headers.append(("Accept", "text/html,application/xhtml+xml"))
        if self.fetch_mode:
            headers.append(("Sec-Fetch-Mode", self.fetch_mode))
        if self.connection:
            headers.append(("Connection", self.connection))
        if self.request_id:
            headers.append(("X-Request-ID", self.request_id))
        if self.traceparent:
            headers.append(("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
        # whoami answers GET and HEAD; other methods are the Starlette app's (another test's).
        method = "GET" if self.endpoint == "whoami" and self.method == "POST" else self.method
        if method == "POST":
            headers.append(("Content-Length", "0"))
        lines = [f"{method} {target} HTTP/{self.version}", *(f"{k}: {v}" for k, v in headers)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _target(self) -> tuple[str, list[tuple[str, str]]]:
        uri = self.original + (f"?{self.query}" if self.query else "")
        q = f"?{self.decision_query}" if self.decision_query else ""
        forwarded = (
            [("X-Forwarded-Host", "shop.example"), ("X-Forwarded-Proto", "https")] if self.forwarded else []
        )
        if self.endpoint == "nginx":
            return f"/.auth/authz/nginx{q}", [
                ("X-Original-URI", uri),
                ("X-Original-Method", "GET"),
                *forwarded,
            ]
        if self.endpoint == "nginx-url":
            return f"/.auth/authz/nginx{q}", [("X-Original-URL", f"https://shop.example{uri}")]
        if self.endpoint == "forward-auth":
            return f"/.auth/authz/forward-auth{q}", [
                ("X-Forwarded-Uri", uri),
                ("X-Forwarded-Method", "POST"),
                *forwarded,
            ]
        if self.endpoint == "envoy":
            return f"/.auth/authz/envoy{uri}", forwarded
        if self.endpoint == "oathkeeper":
            return f"/.auth/decisions{uri}", forwarded
        if self.endpoint == "whoami":
            return f"/.auth/sessions/whoami{q}", []
        return f"/.auth/.well-known/jwks.json{q}", []


asks = st.builds(
    Ask,
    endpoint=st.sampled_from(ENDPOINTS),
    original=st.sampled_from(ORIGINAL_PATHS),
    query=st.sampled_from(["", "a=1&b=%20x", "return_to=/private"]),
    credential=st.sampled_from(CREDENTIALS),
    method=st.sampled_from(["GET", "GET", "HEAD", "POST"]),
    version=st.sampled_from(["1.1", "1.1", "1.0"]),
    connection=st.sampled_from(["", "", "close", "keep-alive"]),
    accept_html=st.booleans(),
    fetch_mode=st.sampled_from(["", "navigate", "cors"]),
    forwarded=st.booleans(),
    request_id=st.sampled_from(["", "", "req-1.2:3@x/y+z=", "x" * 200]),
    traceparent=st.booleans(),
    decision_query=st.sampled_from(["", "x=1"]),
)


def normalised(raw: bytes) -> bytes:
    """``raw`` with each id we generated (32 hex digits: ``x-request-id``, a JSON error's
    ``request``) replaced: the one thing the two paths may differ in."""
    return _GENERATED_ID.sub(b"<request-id>", raw)


def log_entries(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        entry = json.loads(line)
        for volatile in ("time", "latency_ms"):
            del entry[volatile]
        if _GENERATED_ID.fullmatch(entry["request_id"].encode()):
            entry["request_id"] = "<request-id>"
        out.append(entry)
    return out


async def through(stack: Stack, side: Side, chunks: list[bytes], peer: str = TRUSTED) -> tuple[Any, int]:
    """``chunks`` through one new connection of ``side``: ((raw, closed, log, metrics), and the
    requests that reached the ASGI app)."""
    before_calls = side.counting.calls
    before = await stack.metrics()
    del stack.lines[:]
    raw, closed = await side.exchange(chunks, peer)
    after = await stack.metrics()
    delta = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    return (normalised(raw), closed, log_entries(stack.lines), delta), side.counting.calls - before_calls


async def both(stack: Stack, chunks: list[bytes], peer: str = TRUSTED) -> tuple[Any, Any, int, int]:
    """The same bytes through the ASGI path, then the fast one: ((raw, closed, log, metrics) of
    each, and the requests that reached the ASGI app on each side)."""
    asgi, asgi_calls = await through(stack, stack.asgi, chunks, peer)
    fast, fast_calls = await through(stack, stack.fast, chunks, peer)
    return asgi, fast, asgi_calls, fast_calls


async def warm(stack: Stack, chunks: list[bytes], peer: str) -> None:
    """Put every token of ``chunks`` in the resolver's cache (a first lookup is the store's)."""
    await stack.asgi.exchange(chunks, peer)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for p in points:
        pieces.append(data[start:p])
        start = p
    pieces.append(data[start:])
    return [p for p in pieces if p]


# --- the equivalence ----------------------------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    pipeline=st.lists(asks, min_size=1, max_size=4),
    trusted=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=3),
    others=st.lists(st.sampled_from(ORIGINAL_PATHS), min_size=4, max_size=4),
)
async def test_the_fast_answers_are_the_asgi_answers(
    stack: Stack, pipeline: list[Ask], trusted: bool, cuts: list[int], others: list[str]
) -> None:
    peer = TRUSTED if trusted else UNTRUSTED
    data = b"".join(a.head(stack) for a in pipeline)
    await warm(stack, [data], peer)
    asgi, fast, _, fast_calls = await both(stack, split(data, cuts), peer)
    assert fast[0] == asgi[0]  # the bytes on the wire
    assert fast[1] == asgi[1]  # closed, or kept alive
    assert fast[2] == asgi[2]  # the access log lines
    assert fast[3] == asgi[3]  # requests, decisions, cache lookups counted
    assert fast_calls == 0, "every request here needs no I/O once warmed: none should reach ASGI"
    # Again: what the protocol remembered of those answers is written now, with the same records.
    again, again_calls = await through(stack, stack.fast, split(data, cuts), peer)
    assert again == asgi and again_calls == 0
    # The same requests with another original URI each: where the same rule decides it, answered
    # from what was remembered for the first URI (``Memo.varied``), with that URI's records.
    varied = b"".join(dataclasses.replace(a, original=o).head(stack) for a, o in zip(pipeline, others))
    await warm(stack, [varied], peer)
    asgi, fast, _, fast_calls = await both(stack, split(varied, cuts), peer)
    assert fast == asgi and fast_calls == 0


async def test_a_cache_miss_is_answered_later_and_the_next_request_at_once(stack: Stack) -> None:
    token = await _user(stack.services, "aal1", f"miss-{uuid.uuid4().hex[:8]}@example.com")
    request = (
        f"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /private/x\r\n"
        f"X-Session-Token: {token}\r\n\r\n"
    ).encode()
    calls, asked = stack.fast.counting.calls, stack.fast.asked
    raw, closed = await stack.fast.exchange([request, request])  # one after the other's answer
    # The first from the store, the second from the cache: neither through ASGI.
    assert stack.fast.counting.calls == calls and stack.fast.asked == asked + 2
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 2 and not closed
    lines = log_entries(stack.lines[-2:])
    assert lines[0] == lines[1] and lines[0]["identity_id"] and lines[0]["decision"] == "allow"


async def test_a_request_behind_one_in_flight_waits_its_turn(stack: Stack) -> None:
    """Pipelined: an answer that needs the store, then cached ones: the answers keep the order."""
    token = await _user(stack.services, "aal1", f"order-{uuid.uuid4().hex[:8]}@example.com")
    slow = (
        f"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /private/slow\r\n"
        f"X-Session-Token: {token}\r\n\r\n"
    ).encode()
    fast = b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /deny/x\r\n\r\n"
    calls = stack.fast.counting.calls
    raw, _ = await stack.fast.exchange([slow + fast + fast])
    # The first answered later, in the protocol; the two queued behind it by uvicorn, through ASGI.
    assert stack.fast.counting.calls == calls + 2
    statuses = re.findall(rb"HTTP/1.1 (\d+)", raw)
    assert statuses == [b"200", b"403", b"403"]


async def test_what_needs_the_asgi_path_still_gets_it(stack: Stack) -> None:
    """A body, Expect, an upgrade, tokenize_as, another method on whoami, a path not ours: the
    same answers, all from the ASGI app."""
    h = f"Host: a\r\nX-Session-Token: {stack.token}\r\nX-Original-URI: /private/x\r\n"
    requests = [
        f"POST /.auth/authz/nginx HTTP/1.1\r\n{h}Content-Length: 2\r\n\r\nhi",
        f"GET /.auth/authz/nginx HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        f"GET /.auth/authz/nginx HTTP/1.1\r\n{h}Expect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        f"GET /.auth/authz/nginx HTTP/1.1\r\n{h}Connection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
        f"GET /.auth/sessions/whoami?tokenize_as=x HTTP/1.1\r\n{h}\r\n",
        f"DELETE /.auth/sessions/whoami HTTP/1.1\r\n{h}\r\n",
        f"GET /.auth/health/alive HTTP/1.1\r\n{h}\r\n",
        f"GET /private/x HTTP/1.1\r\n{h}\r\n",
    ]
    for request in requests:
        data = request.encode()
        await warm(stack, [data], TRUSTED)
        asgi, fast, asgi_calls, fast_calls = await both(stack, [data])
        assert fast == asgi, request
        assert fast_calls == asgi_calls == 1, request


async def test_nothing_is_served_behind_a_connection_close(stack: Stack) -> None:
    first = (
        b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /deny/x\r\nConnection: close\r\n\r\n"
    )
    second = b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /public/x\r\n\r\n"
    asgi, fast, _, fast_calls = await both(stack, [first + second])
    assert fast == asgi and fast_calls == 0
    assert fast[0].count(b"HTTP/1.1") == 1 and fast[1] and len(fast[2]) == 1


async def test_the_keep_alive_timeout_runs_after_an_answer_and_not_while_a_request_runs(
    stack: Stack,
) -> None:
    """uvicorn's keep-alive timeout, for answers made in the protocol: the connection is closed
    ``timeout_keep_alive`` after the last answer when nothing came since; a request begun
    (pipelined behind an answer, or incomplete) holds it open, as uvicorn holds it. The timeout is
    ten times the pauses between requests, and closing is waited for, not timed: a loaded machine
    may run the loop late, never early."""
    config = copy.copy(stack.fast.config)
    config.timeout_keep_alive = 0.2  # type: ignore[assignment]

    async def closed(transport: Transport) -> bool:
        for _ in range(500):
            if transport.closed:
                return True
            await asyncio.sleep(0.01)
        return False

    fast = b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /public/x\r\n\r\n"

    def connect() -> tuple[Any, Transport]:
        transport = Transport(TRUSTED)
        proto = stack.fast.protocol(config=config, server_state=stack.fast.state, app_state={})
        transport.set_protocol(proto)
        proto.connection_made(transport)  # type: ignore[arg-type]
        return proto, transport

    proto, idle = connect()
    for _ in range(3):  # answered from the memo too, after the first
        proto.data_received(fast)
        await asyncio.sleep(0.005)
    assert not idle.closed
    assert await closed(idle) and idle.out.count(b"HTTP/1.1 200 OK") == 3

    proto, partial = connect()
    proto.data_received(fast + b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\n")  # the second incomplete
    await asyncio.sleep(0.5)  # past the timeout: the begun request holds the connection open
    assert not partial.closed and partial.out.count(b"HTTP/1.1 200 OK") == 1
    proto.data_received(b"X-Original-URI: /public/x\r\n\r\n")
    assert await closed(partial) and partial.out.count(b"HTTP/1.1 200 OK") == 2

    proto, running = connect()
    token = await _user(stack.services, "aal1", f"timer-{uuid.uuid4().hex[:8]}@example.com")
    proto.data_received(fast + nginx(token))  # the second needs the store: an ASGI task
    assert proto.timeout_keep_alive_task is None
    await stack.fast.settle()
    assert running.out.count(b"HTTP/1.1 200 OK") == 2 and not running.closed
    assert await closed(running)  # the timer armed after the ASGI response (on_response_complete)


async def test_a_transport_paused_for_writing_sends_requests_down_the_asgi_path(stack: Stack) -> None:
    transport = Transport(TRUSTED)
    proto = stack.fast.protocol(config=stack.fast.config, server_state=stack.fast.state, app_state={})
    transport.set_protocol(proto)
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.pause_writing()  # the peer does not read: the ASGI path waits for the drain
    calls = stack.fast.counting.calls
    proto.data_received(b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /public/x\r\n\r\n")
    await asyncio.sleep(0.05)
    assert stack.fast.counting.calls == calls + 1 and transport.out == b""
    proto.resume_writing()
    await stack.fast.settle()
    assert transport.out.startswith(b"HTTP/1.1 200 OK\r\n")
    transport.close()
    await asyncio.sleep(0)


async def _misses(stack: Stack) -> float:
    """The session cache's misses counted so far."""
    return sum(v for k, v in (await stack.metrics()).items() if "sidecar_session_cache" in k and "miss" in k)


def nginx(token: str = "", uri: str = "/private/x", extra: str = "") -> bytes:
    """An nginx decision request; ``extra``: more header lines."""
    credential = f"X-Session-Token: {token}\r\n" if token else ""
    return (
        f"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: {uri}\r\n{credential}{extra}\r\n"
    ).encode()


async def remembered(stack: Stack, request: bytes, peer: str = TRUSTED) -> bytes:
    """``request`` answered by the fast side until it is answered from its memo (a first request
    of a token goes to the store; the next two are the responder's, the second of which the memo
    keeps); that answer."""
    for _ in range(3):
        await stack.fast.exchange([request], peer)
    asked = stack.fast.asked
    raw, _ = await stack.fast.exchange([request], peer)
    assert stack.fast.asked == asked, "the same request again is answered from the memo"
    return raw


async def test_a_revoked_session_is_not_answered_from_a_stale_cache(stack: Stack) -> None:
    """Revocation drops the cache entry: the next decision, remembered or not, goes to the store
    and says 401."""
    token = await _user(stack.services, "aal1", f"revoked-{uuid.uuid4().hex[:8]}@example.com")
    request = nginx(token)
    raw = await remembered(stack, request)
    assert raw.startswith(b"HTTP/1.1 200 ")
    session = await stack.services.database.sessions.get_by_token(digest(token))
    await stack.services.database.sessions.revoke(session.id)
    stack.services.resolver.invalidate_session(session.id)
    asked, misses = stack.fast.asked, await _misses(stack)
    raw, _ = await stack.fast.exchange([request])  # the store's answer, not the memo's
    assert raw.startswith(b"HTTP/1.1 401 ") and stack.fast.asked == asked + 1
    assert await _misses(stack) == misses + 1


# --- remembered answers -------------------------------------------------------------------------


async def test_a_remembered_answer_needs_the_same_session_cache_entry(stack: Stack) -> None:
    """A cache entry dropped (the identity changed, the cache cleared, or it expired) and loaded
    again is another entry: the answer is made afresh, from the store's session."""
    token = await _user(stack.services, "aal1", f"dropped-{uuid.uuid4().hex[:8]}@example.com")
    request = nginx(token)
    assert (await remembered(stack, request)).startswith(b"HTTP/1.1 200 ")
    resolver = stack.services.resolver
    found, session = resolver.cached(token)
    assert found and session is not None
    resolver.invalidate_identity(session.identity_id)
    asked, misses = stack.fast.asked, await _misses(stack)
    raw, _ = await stack.fast.exchange([request])  # a cache miss: the store
    assert raw.startswith(b"HTTP/1.1 200 ") and await _misses(stack) == misses + 1
    assert stack.fast.asked == asked + 1  # the memo did not vouch for it: the responder was asked
    raw, _ = await stack.fast.exchange([request])  # cached again: the responder answers
    assert raw.startswith(b"HTTP/1.1 200 ") and stack.fast.asked == asked + 2
    assert (await remembered(stack, request)).startswith(b"HTTP/1.1 200 ")


async def test_a_remembered_answer_is_not_given_under_other_rules(stack: Stack) -> None:
    token = await _user(stack.services, "aal1", f"rules-{uuid.uuid4().hex[:8]}@example.com")
    request = nginx(token)
    assert (await remembered(stack, request)).startswith(b"HTTP/1.1 200 ")
    rules = stack.services.rules
    (path,) = rules.current.files
    original = Path(path).read_text()
    try:
        Path(path).write_text(original.replace("require: authenticated}", "require: deny}", 1))
        rules.load()  # what a hot reload installs
        asgi, fast, _, _ = await both(stack, [request])
        assert fast == asgi and fast[0].startswith(b"HTTP/1.1 403 ")
    finally:
        Path(path).write_text(original)
        rules.load()
    assert (await remembered(stack, request)).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(
    ("variant", "peer", "status"),
    [
        ("unknown-token", TRUSTED, b"401"),  # another credential
        ("no-token", TRUSTED, b"401"),
        ("cookie", TRUSTED, b"200"),  # the same token elsewhere: the same decision, another request
        ("uri", TRUSTED, b"403"),  # another original path
        ("method", TRUSTED, b"403"),  # the same path, a method its rule does not admit: no rule
        ("host", TRUSTED, b"403"),  # a forwarded host another rule is for
        ("peer", UNTRUSTED, b"400"),  # nginx's headers from an untrusted peer are not read
        ("head", TRUSTED, b"200"),  # HEAD: no body
    ],
)
async def test_a_request_that_differs_in_one_fact_gets_its_own_answer(
    stack: Stack, variant: str, peer: str, status: bytes
) -> None:
    """Each variant of a remembered request, asked on the fast side after it, gets the ASGI
    path's answer to that variant, not the remembered one."""
    token = stack.token
    base = nginx(token, "/form/x", "X-Original-Method: POST\r\n")
    assert (await remembered(stack, base)).startswith(b"HTTP/1.1 200 ")
    variants = {
        "unknown-token": nginx(stack.unknown_token, "/form/x", "X-Original-Method: POST\r\n"),
        "no-token": nginx("", "/form/x", "X-Original-Method: POST\r\nAccept: application/json\r\n"),
        "cookie": nginx("", "/form/x", f"X-Original-Method: POST\r\nCookie: {stack.cookie}={token}\r\n"),
        "uri": nginx(token, "/deny/x", "X-Original-Method: POST\r\n"),
        "method": nginx(token, "/form/x", "X-Original-Method: GET\r\n"),
        "host": nginx(token, "/form/x", "X-Original-Method: POST\r\nX-Forwarded-Host: walled.test\r\n"),
        "peer": base,
        "head": base.replace(b"GET ", b"HEAD ", 1),
    }
    request = variants[variant]
    await warm(stack, [request], peer)
    for _ in range(3):  # the third time, from the memo
        asgi, fast, _, fast_calls = await both(stack, [request], peer)
        assert fast == asgi and fast_calls == 0
        assert fast[0].startswith(b"HTTP/1.1 " + status + b" "), fast[0][:60]


async def test_a_remembered_answer_carries_each_request_s_own_id(stack: Stack) -> None:
    """The request id is the one thing a remembered answer does not fix: a trusted proxy's
    X-Request-ID is echoed, anyone else's replaced, and each answer without one gets a new one."""
    plain = nginx(stack.token)
    assert (await remembered(stack, plain)).startswith(b"HTTP/1.1 200 ")
    asked = stack.fast.asked
    raw, _ = await stack.fast.exchange([plain, plain])
    ids = re.findall(rb"x-request-id: ([0-9a-f]{32})\r\n", raw)
    assert len(ids) == 2 and ids[0] != ids[1]
    for given_id in ("first-id", "second-id"):
        raw, _ = await stack.fast.exchange([nginx(stack.token, extra=f"X-Request-ID: {given_id}\r\n")])
        assert f"x-request-id: {given_id}\r\n".encode() in raw
        assert stack.lines[-1].count(f'"request_id":"{given_id}"') == 1
        untrusted, _ = await stack.fast.exchange(
            [nginx(stack.token, extra=f"X-Request-ID: {given_id}\r\n")], UNTRUSTED
        )
        assert untrusted.startswith(b"HTTP/1.1 400 ") and given_id.encode() not in untrusted
    # Only the untrusted peer's requests were asked (a refusal is not remembered): the ids are not keyed.
    assert stack.fast.asked == asked + 2


async def test_a_new_original_uri_the_same_rule_decides_gets_the_remembered_answer(stack: Stack) -> None:
    """A remembered allowed answer serves the same request with another original URI (nginx's
    ``X-Original-URI``, Traefik's ``X-Forwarded-Uri``) when the rule that decided it decides that
    one too: no responder asked, the ASGI path's bytes, log line (with the new path) and counters.
    Another rule's URI, a malformed one, and a denial are answered afresh."""
    token = await _user(stack.services, "aal1", f"varied-{uuid.uuid4().hex[:8]}@example.com")

    def forward_auth(uri: str) -> bytes:
        request = nginx(token, uri, "X-Forwarded-Method: GET\r\n")
        return request.replace(b"authz/nginx", b"authz/forward-auth").replace(
            b"X-Original-URI", b"X-Forwarded-Uri"
        )

    for make in (lambda uri: nginx(token, uri), forward_auth):
        assert (await remembered(stack, make("/private/first"))).startswith(b"HTTP/1.1 200 ")
        for uri, status, answered in [
            ("/private/second?q=1", b"200", False),
            ("/private/a/../third", b"200", False),
            ("/deny/x", b"403", True),  # another rule
            ("/private/%zz", b"400", True),  # not a path
            ("/public/x", b"200", True),  # another rule, allowed too
            ("/private/fourth", b"200", True),  # the memo now holds /public/x's rule
            ("/private/fifth", b"200", True),  # ...and now this one's, from the second sight on
            ("/private/sixth", b"200", False),
        ]:
            asked = stack.fast.asked
            asgi, fast, _, fast_calls = await both(stack, [make(uri)])
            assert fast == asgi and fast_calls == 0, uri
            assert fast[0].startswith(b"HTTP/1.1 " + status + b" "), (uri, fast[0][:60])
            assert (stack.fast.asked > asked) == answered, uri
        assert fast[2][0]["path"] == "/private/sixth" and fast[2][0]["identity_id"]


async def test_a_new_original_uri_is_not_answered_for_a_revoked_session_or_under_other_rules(
    stack: Stack,
) -> None:
    token = await _user(stack.services, "aal1", f"varied-gone-{uuid.uuid4().hex[:8]}@example.com")
    assert (await remembered(stack, nginx(token, "/private/first"))).startswith(b"HTTP/1.1 200 ")
    rules = stack.services.rules
    (path,) = rules.current.files
    original = Path(path).read_text()
    try:
        Path(path).write_text(original.replace("require: authenticated}", "require: deny}", 1))
        rules.load()  # what a hot reload installs
        asgi, fast, _, _ = await both(stack, [nginx(token, "/private/second")])
        assert fast == asgi and fast[0].startswith(b"HTTP/1.1 403 ")
    finally:
        Path(path).write_text(original)
        rules.load()
    assert (await remembered(stack, nginx(token, "/private/first"))).startswith(b"HTTP/1.1 200 ")
    raw, _ = await stack.fast.exchange([nginx(token, "/private/third")])  # memo: the varied answer
    asked = stack.fast.asked
    raw, _ = await stack.fast.exchange([nginx(token, "/private/fourth")])
    assert raw.startswith(b"HTTP/1.1 200 ") and stack.fast.asked == asked
    session = await stack.services.database.sessions.get_by_token(digest(token))
    await stack.services.database.sessions.revoke(session.id)
    stack.services.resolver.invalidate_session(session.id)
    asked, misses = stack.fast.asked, await _misses(stack)
    raw, _ = await stack.fast.exchange([nginx(token, "/private/fifth")])
    assert raw.startswith(b"HTTP/1.1 401 ") and stack.fast.asked == asked + 1
    assert await _misses(stack) == misses + 1  # from the store


# --- uvicorn's internals ------------------------------------------------------------------------

# What sidecar/http_protocol.py mirrors or calls in uvicorn, by source digest. A new uvicorn whose
# digests differ must be read against ``_answer_now``/``_write`` before these digests are renewed.
MIRRORED = {
    "HttpToolsProtocol.on_headers_complete": "1ea8589acfad92d8",
    "HttpToolsProtocol.on_response_complete": "64e254f28e389e76",
    "HttpToolsProtocol.on_message_begin": "96d377fdc7c2baef",  # inlined, its scope made later
    "HttpToolsProtocol.on_url": "37be44e962b04ca8",  # inlined
    "HttpToolsProtocol.connection_lost": "c91a4c9bf2e29c55",
    "HttpToolsProtocol.on_header": "1e86ebb6cea0458c",  # inlined in GuardedHttpToolsProtocol
    "HttpToolsProtocol.data_received": "010a7ae59a5d3b1a",  # inlined
    "HttpToolsProtocol.on_body": "dba9c32aeba35b6a",
    "HttpToolsProtocol.on_message_complete": "1fbad42dc31fc01f",
    "HttpToolsProtocol._unset_keepalive_if_required": "00a6a4e47214e68e",
    "HttpToolsProtocol.shutdown": "d7351fa33f00d430",
    "RequestResponseCycle.send": "abdd8601b326a8da",
}


def _digest(qualname: str) -> str:
    owner, name = qualname.split(".")
    source = inspect.getsource(getattr(getattr(httptools_impl, owner), name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_uvicorn_is_the_version_the_fast_path_was_written_against() -> None:
    assert uvicorn.__version__.startswith("0.55."), uvicorn.__version__
    changed = {name: _digest(name) for name, digest_ in MIRRORED.items() if _digest(name) != digest_}
    assert not changed, (
        f"uvicorn internals the fast path mirrors changed: re-check them, then renew {changed}"
    )
    for name in ("HEADER_RE", "HEADER_VALUE_RE", "STATUS_LINE"):
        assert hasattr(httptools_impl, name), name


async def test_the_protocol_attributes_the_fast_path_reads_exist(stack: Stack) -> None:
    transport = Transport(TRUSTED)
    proto = stack.fast.protocol(config=stack.fast.config, server_state=stack.fast.state, app_state={})
    transport.set_protocol(proto)
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")  # a request begun: its state exists
    for name in (
        "cycle",
        "expect_100_continue",
        "flow",
        "transport",
        "access_log",
        "limit_concurrency",
        "root_path",
        "url",
        "parser",
        "headers",
        "scope",
        "server_state",
        "client",
        "timeout_keep_alive_task",
        "timeout_keep_alive",
        "loop",
    ):
        assert hasattr(proto, name), name
    assert hasattr(proto.flow, "write_paused") and hasattr(proto.server_state, "total_requests")
    transport.close()
    await asyncio.sleep(0)


# --- heads made once ----------------------------------------------------------------------------


async def test_a_head_made_before_is_written_with_each_answer_s_own_id_and_checks(stack: Stack) -> None:
    """``_write`` makes an answer's head once per status, keep-alive and headers but the request id
    (``Heads``): each answer still goes out with its own id, the connection closed when it is not
    kept alive, uvicorn's refusals (an id it would not write, a body that is not the Content-Length's)
    still closing the connection with nothing written."""

    def answer(rid: bytes, body: bytes = b"{}", length: bytes = b"2", status: int = 200) -> Any:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", length),
            (b"x-request-id", rid),
        ]
        return status, headers, body

    def written(answer: Any, keep_alive: bool = True, method: str = "GET") -> tuple[bytes, bool]:
        transport = Transport(TRUSTED)
        proto = stack.fast.protocol(config=stack.fast.config, server_state=stack.fast.state, app_state={})
        transport.set_protocol(proto)
        proto.connection_made(transport)  # type: ignore[arg-type]
        scope = {"method": method, "path": "/", "raw_path": b"/", "query_string": b"", "http_version": "1.1"}
        proto._write(answer, {**scope, "client": (TRUSTED, 50123)}, keep_alive)
        return bytes(transport.out), transport.closed

    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-request-id: "
    for rid in (b"first-id", b"second-id", b"third-id"):
        assert written(answer(rid)) == (head + rid + b"\r\n\r\n{}", False)
    assert written(answer(b"fourth-id"), keep_alive=False) == (
        head + b"fourth-id\r\nconnection: close\r\n\r\n{}",
        True,
    )
    assert written(answer(b"fifth-id")) == (head + b"fifth-id\r\n\r\n{}", False)
    assert written(answer(b"sixth-id"), method="HEAD") == (head + b"sixth-id\r\n\r\n", False)
    assert written(answer(b"bad\nid")) == (b"", True)  # uvicorn refuses such a value
    assert written(answer(b"seventh-id", b"{}{}")) == (b"", True)  # 4 bytes for a length of 2
    assert written(answer(b"eighth-id")) == (head + b"eighth-id\r\n\r\n{}", False)
    forbidden = head.replace(b"200 OK", b"403 Forbidden")
    assert written(answer(b"ninth-id", status=403)) == (forbidden + b"ninth-id\r\n\r\n{}", False)
    await asyncio.sleep(0)  # the closed connections' connection_lost
