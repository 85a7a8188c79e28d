"""Remembered relays (``sidecar.http_protocol.RememberedRelay``) against the full fast path.

uvicorn's protocol as ``sidecar serve`` builds it (the responders and the fast relay,
``sidecar.server.uvicorn_config``) is driven in process, byte for byte, over a transport that
records what is written, in front of a small upstream that records the request heads it gets.
The same requests go to it twice: once with the listener's memo (a repeated proxied GET is
relayed again from the protocol, without scope, plan or check) and once without (``memo = None``:
every request takes the full path). The bytes the upstream gets, the bytes the client gets, the
access lines and the counters must be the same, the request ids we make aside; and a hot reload,
a revoked session, another credential, a client's identity headers, HEAD, and a front proxy's
X-Request-ID or a mesh's traceparent (trusted or not, plain or not, new each request, twice)
must each get what the full path gives them, at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from uvicorn.server import ServerState

from sidecar.app import fast_relays, fast_responders
from sidecar.http_protocol import KEEP_RELAY, ONE_REQUEST_ID, ONE_TRACEPARENT, UNFRAMED, RememberedRelay
from sidecar.identity.model import Identity, VerifiableAddress, utcnow
from sidecar.logs import _REQUEST_ID_OK, AccessLog
from sidecar.proxy.forward import ONE_REQUEST_ID as FORWARD_ONE_REQUEST_ID
from sidecar.proxy.forward import ONE_TRACEPARENT as FORWARD_ONE_TRACEPARENT
from sidecar.proxy.gateway import KEEP_RELAY as GATEWAY_KEEP_RELAY
from sidecar.proxy.gateway import UNFRAMED as GATEWAY_UNFRAMED
from sidecar.security.tokens import digest, new_session_token
from sidecar.server import uvicorn_config
from sidecar.session.model import Session
from tests.conftest import make_config
from tests.proxy.harness import Transport, counted, started_public_app

RULES = """
version: 1
rules:
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
  - {id: open, match: {paths: ["/open/**"]}, require: public}
"""
TRUSTED = "127.0.0.1"
UNTRUSTED = "192.0.2.7"  # not in the default trusted_proxies (loopback)
COUNTED = (
    "sidecar_requests_total",
    "sidecar_decisions_total",
    "sidecar_decision_seconds_count",
    "sidecar_session_cache",
    "sidecar_rule_matches",
    "sidecar_upstream_seconds_count",
    "sidecar_upstream_errors",
)
_RID = re.compile(rb"[0-9a-f]{32}")
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-App: yes\r\nContent-Length: 3\r\n\r\nok\n"


class Upstream:
    """Records each request head it gets and counts its connections; answers each request with
    ``RESPONSE`` (its head alone to a HEAD), kept alive."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.connections = 0
        self.port = 0
        self.delay = 0.0  # seconds before each answer

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buffered = b""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                buffered += data
                while (end := buffered.find(b"\r\n\r\n")) != -1:
                    head = buffered[:end]
                    self.heads.append(head)
                    buffered = buffered[end + 4 :]
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    writer.write(RESPONSE[:-3] if head.startswith(b"HEAD ") else RESPONSE)
        writer.close()


class CountingRelay:
    """The fast relay as the protocol sees it, counting the requests it was asked (a remembered
    relay serves without asking it)."""

    def __init__(self, inner: Callable[..., bool]) -> None:
        self.inner = inner
        self.calls = 0

    def __call__(self, *args: Any) -> bool:
        self.calls += 1
        return self.inner(*args)


@dataclass
class Stack:
    services: Any
    public: AccessLog
    lines: list[str]
    upstream: Upstream
    uv: Any
    relay: CountingRelay
    tokens: list[str]
    emails: list[str]
    identities: list[Any]
    cookie: str
    rules_path: Path

    def protocol(self, remembering: bool) -> Any:
        cls = self.uv.http_protocol_class
        if remembering:
            return cls
        return type("FullPath", (cls,), {"memo": None})

    async def counts(self) -> dict[str, float]:
        return await counted(self.services, COUNTED)

    def forget_sessions(self) -> None:
        """Drop every cached session of the test users: the next request of each is a cache miss
        and its entry a new one (no plan, no remembered relay vouched for by the old one)."""
        for identity_id in self.identities:
            self.services.resolver.invalidate_identity(identity_id)


async def _user(services: Any, email: str) -> tuple[str, Any]:
    identity = Identity(
        schema_id="default",
        traits={"email": email},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
    )
    identity = await services.database.identities.create(identity)
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal="aal1")
    token = new_session_token()
    await services.database.sessions.create(session, digest(token))
    return token, identity.id


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    async with built(tmp_path_factory) as made:
        yield made


@contextlib.asynccontextmanager
async def built(tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> AsyncIterator[Stack]:
    """The stack ``sidecar serve`` builds, with config ``overrides``."""
    upstream = Upstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    upstream.port = server.sockets[0].getsockname()[1]
    tmp = tmp_path_factory.mktemp("relay-memo")
    rules_path = tmp / "rules.yaml"
    rules_path.write_text(RULES)
    config = make_config(
        dsn=f"sqlite:///{tmp}/sidecar.db",
        rules=[str(rules_path)],
        log={"level": "info", "format": "json", "access_buffer": 0},
        serve={"public": {"base_url": "http://127.0.0.1:4433/.auth"}},
        proxy={"upstream": f"http://127.0.0.1:{upstream.port}"},
        session={"cache_ttl": "1h"},
        **overrides,
    )
    try:
        async with started_public_app(config) as (services, public, lines):
            relays = fast_relays(config, public)  # none with tracing on
            counting = CountingRelay(relays[0] if relays else lambda *args: False)
            uv = uvicorn_config(
                public, 8 * 1024, fast_responders(config, public), (counting,) if relays else ()
            )
            uv.load()
            users = [await _user(services, f"relay-{i}@example.com") for i in range(2)]
            yield Stack(
                services=services,
                public=public,
                lines=lines,
                upstream=upstream,
                uv=uv,
                relay=counting,
                tokens=[t for t, _ in users],
                emails=[f"relay-{i}@example.com" for i in range(2)],
                identities=[i for _, i in users],
                cookie=config.session.cookie.name,
                rules_path=rules_path,
            )
    finally:
        server.close()
        await server.wait_closed()


class Connection:
    """One client connection to a new protocol instance (``config``: uvicorn's, else the stack's)."""

    def __init__(self, stack: Stack, remembering: bool, peer: str = TRUSTED, config: Any = None) -> None:
        self.stack = stack
        self.state = ServerState()
        self.transport = Transport(peer)
        self.proto = stack.protocol(remembering)(
            config=config or stack.uv, server_state=self.state, app_state={}
        )
        # As under ``sidecar serve``, whose logging leaves uvicorn.access without handlers (here
        # pytest's on the root logger would reach it): the relays run only without uvicorn's line.
        self.proto.access_log = False
        self.transport.set_protocol(self.proto)
        self.proto.connection_made(self.transport)

    async def ask(self, request: bytes) -> tuple[bytes, list[bytes], str]:
        """One request, once its response is complete and logged: (what the client got, the heads
        the upstream got for it, its access line)."""
        stack = self.stack
        lines, heads, out = len(stack.lines), len(stack.upstream.heads), len(self.transport.out)
        self.proto.data_received(request)
        for _ in range(5000):
            cycle = self.proto.cycle
            if len(stack.lines) > lines and (cycle is None or cycle.response_complete):
                break
            await asyncio.sleep(0.002)
        else:
            raise AssertionError("no response")
        await asyncio.sleep(0)
        assert len(stack.lines) == lines + 1
        return bytes(self.transport.out[out:]), stack.upstream.heads[heads:], stack.lines[lines]

    def close(self) -> None:
        self.transport.close()


def get(
    stack: Stack, target: str = "/private/x", *, method: str = "GET", extra: str = "", user: int = 0
) -> bytes:
    credential = f"X-Session-Token: {stack.tokens[user]}\r\n" if user >= 0 else ""
    return f"{method} {target} HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n{credential}{extra}\r\n".encode()


def cookie(stack: Stack, user: int = 0) -> str:
    return f"Cookie: theme=dark; {stack.cookie}={stack.tokens[user]}; other=1\r\n"


SPOOFED = (
    "X-User-ID: spoofed\r\nx_user_email: spoofed@example.com\r\nX-User-AAL: aal2\r\n"
    "X-Forwarded-For: 10.9.9.9\r\n"
)


def scenario(stack: Stack) -> list[tuple[str, bytes]]:
    """The requests of the equivalence run, each several times (a plan is kept from the second,
    a relay remembered from the third): (what to do first, the request)."""
    steps: list[tuple[str, bytes]] = []
    for request in (
        get(stack),
        get(stack, extra=cookie(stack), user=-1),  # the same session from its cookie
        get(stack, user=1),  # another session
        get(stack, extra=SPOOFED),  # a client's identity headers: stripped
        get(stack, extra=SPOOFED, user=1),
        get(stack, method="HEAD"),  # never relayed: the ASGI path
        get(stack, "/private/x?q=1&r=%2F"),
        get(stack, "/private//x"),
        get(stack, extra="X-Request-ID: client-chosen-1\r\n"),  # a trusted peer's id: kept
        get(stack, extra="traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"),
        get(stack, "/open/x", user=-1),  # public: no session, no kept plan
        get(stack, "/nowhere"),  # no rule: 403
    ):
        steps += [("", request)] * 5
    steps += [("deny", get(stack)), ("deny", get(stack, user=1)), ("restore", get(stack))]
    steps += [("", get(stack))] * 3
    steps += [("forget", get(stack))] + [("", get(stack))] * 3
    return steps


def masked(raw: bytes) -> bytes:
    return _RID.sub(b"<rid>", raw)


def entry(line: str) -> dict[str, Any]:
    data = json.loads(line)
    for key in ("time", "request_id", "latency_ms"):
        data.pop(key)
    return dict(data)


async def run(stack: Stack, remembering: bool) -> tuple[list[Any], dict[str, float], int]:
    """The scenario on one keep-alive connection: per request (client bytes, upstream heads, log
    entry), ids masked; the counters' increase; how many requests the relay itself was asked."""
    stack.forget_sessions()
    before, asked = await stack.counts(), stack.relay.calls
    conn = Connection(stack, remembering)
    out = []
    ours: list[bytes] = []  # the ids we made (not a trusted proxy's): each request its own
    original = stack.rules_path.read_text()
    try:
        for action, request in scenario(stack):
            if action == "deny":
                stack.rules_path.write_text(original.replace("require: authenticated", "require: deny"))
                stack.services.rules.load()  # what a hot reload installs
            elif action == "restore":
                stack.rules_path.write_text(original)
                stack.services.rules.load()
            elif action == "forget":
                stack.forget_sessions()
            raw, heads, line = await conn.ask(request)
            # The request's id is the same in the upstream's head, the response and the line.
            rid = json.loads(line)["request_id"].encode()
            assert b"x-request-id: " + rid in raw, raw
            assert all(b"x-request-id: " + rid in h for h in heads), heads
            if _RID.fullmatch(rid):
                ours.append(rid)
            out.append((masked(raw), [masked(h) for h in heads], entry(line)))
    finally:
        stack.rules_path.write_text(original)
        stack.services.rules.load()
        conn.close()
        await asyncio.sleep(0)
    assert len(set(ours)) == len(ours) > 50
    after = await stack.counts()
    grown = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    return out, grown, stack.relay.calls - asked


async def test_the_same_bytes_lines_and_counts_with_and_without_remembered_relays(stack: Stack) -> None:
    full, full_counts, full_asked = await run(stack, remembering=False)
    kept, kept_counts, kept_asked = await run(stack, remembering=True)
    for i, (a, b) in enumerate(zip(full, kept, strict=True)):
        assert a == b, (i, scenario(stack)[i])
    assert kept_counts == full_counts
    # The repeated signed-in GETs went out from the memo: the relay was asked far less often.
    assert kept_asked < full_asked - 15, (kept_asked, full_asked)
    # What the upstream got for the signed-in requests names their own session's user only.
    for (_, request), (_, heads, _) in zip(scenario(stack), kept, strict=True):
        for head in heads:
            lower = head.lower()
            assert b"spoofed" not in lower and b"x-session-token" not in lower
            if b"/open/" in request:  # public: no identity
                assert b"x-user-" not in lower
                continue
            user = 1 if stack.tokens[1].encode() in request else 0
            assert f"x-user-email: {stack.emails[user]}".encode() in lower, head
            assert f"x-user-email: {stack.emails[1 - user]}".encode() not in lower


async def remembered(conn: Connection, request: bytes) -> tuple[bytes, list[bytes], str]:
    """``request`` asked until the listener's memo holds its relay; then once more, from it."""
    stack = conn.stack
    for _ in range(4):
        await conn.ask(request)
    memo = conn.proto.memo
    assert any(isinstance(v, RememberedRelay) for v in memo.values())
    asked = stack.relay.calls
    got = await conn.ask(request)
    assert stack.relay.calls == asked, "the same request again is relayed from the memo"
    assert got[0].startswith(b"HTTP/1.1 200 ") and len(got[1]) == 1
    return got


async def test_a_revoked_session_is_refused_at_once(stack: Stack) -> None:
    token, _ = await _user(stack.services, f"revoked-{uuid.uuid4().hex[:8]}@example.com")
    request = f"GET /private/x HTTP/1.1\r\nHost: app.test\r\nX-Session-Token: {token}\r\n\r\n".encode()
    conn = Connection(stack, remembering=True)
    try:
        await remembered(conn, request)
        session = await stack.services.database.sessions.get_by_token(digest(token))
        await stack.services.database.sessions.revoke(session.id)
        stack.services.resolver.invalidate_session(session.id)  # what the revocation feed does
        raw, heads, _ = await conn.ask(request)
        assert raw.startswith(b"HTTP/1.1 401 ") and heads == []
    finally:
        conn.close()


async def test_a_hot_reload_denies_at_once(stack: Stack) -> None:
    conn = Connection(stack, remembering=True)
    original = stack.rules_path.read_text()
    try:
        await remembered(conn, get(stack))
        stack.rules_path.write_text(original.replace("require: authenticated", "require: deny"))
        stack.services.rules.load()
        raw, heads, _ = await conn.ask(get(stack))
        assert raw.startswith(b"HTTP/1.1 403 ") and heads == []
    finally:
        stack.rules_path.write_text(original)
        stack.services.rules.load()
        conn.close()


async def test_another_session_s_request_is_never_relayed_from_the_memo(stack: Stack) -> None:
    """The memo is keyed by every header: another credential (or the same in another header) is
    another request, judged and planned for its own session."""
    conn = Connection(stack, remembering=True)
    try:
        await remembered(conn, get(stack, user=0))
        for request in (get(stack, user=1), get(stack, extra=cookie(stack, 1), user=-1)):
            asked = stack.relay.calls
            raw, heads, _ = await conn.ask(request)
            assert stack.relay.calls == asked + 1
            assert raw.startswith(b"HTTP/1.1 200 ")
            assert f"x-user-email: {stack.emails[1]}".encode() in heads[0].lower()
            assert stack.emails[0].encode() not in heads[0].lower()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("X-Request-ID: from-the-proxy-7\r\n", id="x-request-id"),
        pytest.param(
            "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n", id="traceparent"
        ),
    ],
)
async def test_a_request_with_its_own_ids_takes_the_full_path(stack: Stack, extra: str) -> None:
    """Keyed without its x-request-id and traceparent, a request carrying them meets the relay
    remembered for the same request without them: it must not be served from it (another shape:
    the upstream gets the trusted proxy's id, in its place, and the traceparent)."""
    conn = Connection(stack, remembering=True)
    try:
        await remembered(conn, get(stack))
        asked = stack.relay.calls
        raw, heads, line = await conn.ask(get(stack, extra=extra))
        assert stack.relay.calls == asked + 1 and raw.startswith(b"HTTP/1.1 200 ")
        if "x-request-id" in extra.lower():
            assert json.loads(line)["request_id"] == "from-the-proxy-7"
            assert b"x-request-id: from-the-proxy-7" in heads[0].lower()
    finally:
        conn.close()


async def test_head_is_not_relayed_and_the_same_get_still_is(stack: Stack) -> None:
    conn = Connection(stack, remembering=True)
    try:
        await remembered(conn, get(stack))
        asked = stack.relay.calls
        raw, heads, _ = await conn.ask(get(stack, method="HEAD"))
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"\r\n\r\n")  # no body for HEAD
        assert heads[0].startswith(b"HEAD /private/x ") and stack.relay.calls == asked
        raw, heads, _ = await conn.ask(get(stack))
        assert raw.endswith(b"ok\n") and stack.relay.calls == asked
    finally:
        conn.close()


def test_the_protocol_and_the_gateway_name_the_same_scope_key() -> None:
    assert KEEP_RELAY == GATEWAY_KEEP_RELAY
    assert UNFRAMED == GATEWAY_UNFRAMED
    assert ONE_TRACEPARENT == FORWARD_ONE_TRACEPARENT
    assert ONE_REQUEST_ID == FORWARD_ONE_REQUEST_ID


async def test_a_stopped_gateway_relays_nothing_from_the_memo(stack: Stack) -> None:
    """After ``Gateway.stop`` (its upstream client closed) ``plan_now`` answers None; a remembered
    relay ends with it and the request takes the ASGI path (which starts the gateway again here)."""
    conn = Connection(stack, remembering=True)
    try:
        await remembered(conn, get(stack))
        stack.public.app._started = False
        asked = stack.relay.calls
        raw, heads, _ = await conn.ask(get(stack))
        assert stack.relay.calls == asked + 1  # not from the memo: the relay was asked (and declined)
        assert raw.startswith(b"HTTP/1.1 200 ") and len(heads) == 1 and stack.public.app._started
    finally:
        conn.close()


TRACE = "00-{:032x}-00f067aa0ba902b7-01"


def with_ids(stack: Stack, kind: str, i: int) -> tuple[bytes, str | None, str | None]:
    """The signed-in GET with the ids of ``kind``, their values new for each ``i`` (as a front
    proxy's or a mesh's are for each request): (the request, its x-request-id, its traceparent).
    No value is 32 hex digits, the ids we make (``masked``)."""
    rid = trace = None
    head = ""
    extra = ""
    if kind in ("plain", "plain-first", "both"):
        rid = f"nginx-{i:05d}.a/b+c=d:e@f"
    elif kind in ("invalid", "invalid-first", "both-invalid"):
        rid = f"not plain {i}"
    elif kind == "oversized":
        rid = f"{i:05d}" + "o" * 124  # 129 characters
    elif kind == "empty":
        rid = ""
    if kind in ("trace", "both", "both-invalid"):
        trace = TRACE.format(0xABC0000000000000000000000000 + i)
    elif kind == "trace-twice":  # each value sent twice in a row
        trace = TRACE.format(0xDEF0000000000000000000000000 + i // 2)
    elif kind == "trace-invalid":
        trace = f"garbage-{i}"
    if kind == "duplicate":
        extra = f"X-Request-ID: first-{i}\r\nX-Request-ID: second-{i}\r\n"
        rid = f"first-{i}"
    elif kind == "duplicate-same":
        extra = f"X-Request-ID: same-{i}\r\nX-Request-ID: same-{i}\r\nAccept-Language: en\r\n"
        rid = f"same-{i}"
    elif kind == "trace-duplicate":
        extra = f"traceparent: {TRACE.format(i + 1)}\r\ntraceparent: {TRACE.format(i + 2)}\r\n"
        trace = TRACE.format(i + 1)
    elif kind.endswith("-first"):  # where nginx's proxy_set_header puts it
        head = f"X-Request-ID: {rid}\r\n"
    else:
        if rid is not None:
            extra += f"X-Request-ID: {rid}\r\n"
        if trace is not None:
            extra += f"Traceparent: {trace}\r\n"
    request = get(stack, extra=extra)
    if head:
        request = request.replace(b"\r\n", b"\r\n" + head.encode(), 1)
    return request, rid, trace


KINDS = (
    "none",
    "plain",
    "invalid",
    "plain-first",
    "invalid-first",  # (the relay remembered for plain-first, the same request as keyed, must not serve it)
    "oversized",
    "empty",
    "duplicate",
    "duplicate-same",
    "trace",
    "trace-twice",
    "trace-invalid",
    "trace-duplicate",
    "both",
    "both-invalid",
)
REPEATS = 5


def id_steps(stack: Stack) -> list[tuple[str, bytes, str | None, str | None]]:
    """Each kind ``REPEATS`` times in a row, then the kinds interleaved (the same request in
    another shape each time): (kind, request, x-request-id, traceparent)."""
    steps = []
    n = 0
    for kind in KINDS:
        for _ in range(REPEATS):
            n += 1
            steps.append((kind, *with_ids(stack, kind, n)))
    for _ in range(3):
        for kind in KINDS:
            n += 1
            steps.append((kind, *with_ids(stack, kind, n)))
    return steps


def logged(line: str) -> dict[str, Any]:
    """The access line without its time and latency, the request id masked when it is ours."""
    data = json.loads(line)
    for key in ("time", "latency_ms"):
        data.pop(key)
    if _RID.fullmatch(data["request_id"].encode()):
        data["request_id"] = "<rid>"
    return dict(data)


async def run_ids(
    stack: Stack, remembering: bool, peer: str
) -> tuple[list[Any], dict[str, float], list[bool]]:
    """``id_steps`` on one keep-alive connection from ``peer``: per request (client bytes,
    upstream heads, access line), our ids masked; the counters' increase; per request, whether
    the relay itself was asked (else it was relayed from the memo)."""
    stack.forget_sessions()
    before = await stack.counts()
    conn = Connection(stack, remembering, peer)
    out = []
    asked: list[bool] = []
    trusted = peer == TRUSTED
    try:
        for kind, request, rid, trace in id_steps(stack):
            calls = stack.relay.calls
            raw, heads, line = await conn.ask(request)
            asked.append(stack.relay.calls > calls)
            request_id = json.loads(line)["request_id"]
            # What the access log decides (sidecar.logs.AccessLog._request_id), whichever path.
            if trusted and rid is not None and _REQUEST_ID_OK.fullmatch(rid.encode()):
                assert request_id == rid, (kind, request_id)
            else:
                assert _RID.fullmatch(request_id.encode()), (kind, request_id)
            assert len(heads) == 1 and raw.startswith(b"HTTP/1.1 200 ")
            upstream = heads[0].lower()
            both = kind.startswith("duplicate") and request_id == rid  # a trusted proxy's: as sent
            assert upstream.count(b"x-request-id: ") == (2 if both else 1)
            assert f"x-request-id: {request_id}\r\n".lower().encode() in upstream + b"\r\n"
            assert raw.count(f"x-request-id: {request_id}\r\n".encode()) == 1
            # Each traceparent passed on as sent (tracing off: no span of ours to parent it).
            sent = re.findall(rb"(?im)^traceparent: ([^\r]*)\r$", request)
            assert re.findall(rb"(?im)^traceparent: ([^\r]*)\r?$", heads[0]) == sent, kind
            assert (trace is None) == (not sent)
            out.append((kind, masked(raw), [masked(h) for h in heads], logged(line)))
    finally:
        conn.close()
        await asyncio.sleep(0)
    after = await stack.counts()
    grown = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    return out, grown, asked


# The request kinds a remembered relay serves; the others: the relay is asked every time.
REMEMBERED = {
    "none",
    "plain",
    "invalid",
    "plain-first",
    "invalid-first",
    "oversized",
    "empty",
    "trace",
    "trace-twice",
    "trace-invalid",
    "both",
    "both-invalid",
}


@pytest.mark.parametrize("peer", [TRUSTED, UNTRUSTED], ids=["trusted", "untrusted"])
async def test_requests_with_ids_get_the_same_bytes_lines_and_counts_from_the_memo(
    stack: Stack, peer: str
) -> None:
    """A front proxy's X-Request-ID and a mesh's traceparent, new for each request (or each other
    request): from a trusted peer or not, plain or not, too long, empty, twice, with a traceparent
    or alone, in a row and interleaved. With the memo, the upstream gets the same request head,
    the client the same response and the access log the same line (the request id the log decides
    each time) and counts as without; and the kinds in ``REMEMBERED`` are relayed from the memo."""
    full, full_counts, full_asked = await run_ids(stack, False, peer)
    kept, kept_counts, kept_asked = await run_ids(stack, True, peer)
    steps = id_steps(stack)
    for i, (a, b) in enumerate(zip(full, kept, strict=True)):
        assert a == b, (i, steps[i][0], steps[i][1])
    assert kept_counts == full_counts
    assert all(full_asked)
    for i, ((kind, *_), asked) in enumerate(zip(steps, kept_asked, strict=True)):
        if kind not in REMEMBERED:
            assert asked, (i, kind)
        elif i % REPEATS >= 2 and i < REPEATS * len(KINDS):
            # In a row: a forward plan is kept from the second, the relay from there.
            assert not asked, (i, kind)


async def test_with_tracing_on_nothing_is_relayed_from_the_memo(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """With tracing on, a request's span is opened around the ASGI app: the listener has no
    synchronous answers, no fast relay and no memo (``sidecar.app.fast_responders``), and the
    upstream gets the traceparent of our span (a child of a trusted proxy's trace), not the
    client's."""
    port = await _closed_port()
    tracing = {
        "provider": "otel",
        "providers": {"otlp": {"server_url": f"127.0.0.1:{port}", "insecure": True}},
    }
    async with built(tmp_path_factory, tracing=tracing) as traced:
        assert traced.uv.http_protocol_class.memo is None
        assert traced.uv.http_protocol_class.relays == ()
        conn = Connection(traced, remembering=True)
        try:
            for i in range(REPEATS):
                request, rid, trace = with_ids(traced, "both", i)
                raw, heads, line = await conn.ask(request)
                assert raw.startswith(b"HTTP/1.1 200 ") and json.loads(line)["request_id"] == rid
                assert trace is not None and trace.encode() not in heads[0]
                ours = re.findall(rb"(?im)^traceparent: 00-([0-9a-f]{32})-", heads[0])
                assert ours == [trace.split("-")[1].encode()]  # the trusted proxy's trace, continued
        finally:
            conn.close()
            await asyncio.sleep(0)


async def _closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (the span exporter's requests are refused at once)."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


@pytest.mark.parametrize("kind", ["plain-first", "invalid", "both"])
async def test_pipelined_requests_each_keep_their_own_ids(stack: Stack, kind: str) -> None:
    """Requests pipelined in one read behind a remembered relay (the first relayed from the memo,
    the others queued behind it): each gets its own id back, upstream and in its line, in order."""
    conn = Connection(stack, remembering=True)
    try:
        for i in range(4):
            await conn.ask(with_ids(stack, kind, i)[0])
        asked = stack.relay.calls
        requests = [with_ids(stack, kind, 100 + i) for i in range(3)]
        lines, heads, out = len(stack.lines), len(stack.upstream.heads), len(conn.transport.out)
        conn.proto.data_received(b"".join(request for request, _, _ in requests))
        for _ in range(5000):
            cycle = conn.proto.cycle
            if len(stack.lines) == lines + 3 and (cycle is None or cycle.response_complete):
                break
            await asyncio.sleep(0.002)
        else:
            raise AssertionError("not every response")
        raw = bytes(conn.transport.out[out:])
        assert raw.count(b"HTTP/1.1 200 ") == 3
        back = [m.decode() for m in re.findall(rb"x-request-id: ([^\r]*)\r\n", raw)]
        sent = [re.findall(rb"(?im)^x-request-id: ([^\r]*)\r?$", h) for h in stack.upstream.heads[heads:]]
        logged = [json.loads(line)["request_id"] for line in stack.lines[lines:]]
        assert [[b.encode()] for b in back] == sent and back == logged
        for (_, rid, trace), request_id, head in zip(
            requests, back, stack.upstream.heads[heads:], strict=True
        ):
            if rid is not None and _REQUEST_ID_OK.fullmatch(rid.encode()):
                assert request_id == rid
            else:
                assert _RID.fullmatch(request_id.encode())
            assert trace is None or f"traceparent: {trace}".encode() in head.lower()
        assert len(set(back)) == 3 and stack.relay.calls < asked + 3  # the first from the memo
    finally:
        conn.close()
        await asyncio.sleep(0)


async def test_the_keep_alive_timeout_counts_from_a_relayed_response_never_during_one(stack: Stack) -> None:
    """uvicorn's keep-alive timeout around relays (their end calls the protocol's
    ``on_response_complete``): a relayed request that waits on the upstream longer than the
    timeout, right after another response armed the timer, is not cut; the connection closes
    ``timeout_keep_alive`` after its response when nothing came since. Closing is waited for, not
    timed: a loaded machine may run the loop late, never early."""
    config = copy.copy(stack.uv)
    config.timeout_keep_alive = 0.2
    conn = Connection(stack, remembering=True, config=config)
    transport = conn.transport
    try:
        for _ in range(3):  # the full path, then from the memo: each response arms the timer
            out, _, _ = await conn.ask(get(stack))
            assert out.startswith(b"HTTP/1.1 200 OK")
        stack.upstream.delay = 0.6
        out, _, _ = await conn.ask(get(stack))  # 3 timeouts long, from the memo
        assert out.startswith(b"HTTP/1.1 200 OK") and not transport.closed
        for _ in range(500):
            if transport.closed:
                break
            await asyncio.sleep(0.01)
        assert transport.closed and transport.out.count(b"HTTP/1.1 200 OK") == 4
    finally:
        stack.upstream.delay = 0.0
        conn.close()
        await asyncio.sleep(0)
