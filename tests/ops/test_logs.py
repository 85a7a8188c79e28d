"""sidecar.logs.AccessLog: request ids, one line per request, nothing secret."""

from __future__ import annotations

import io
import json
import os
import random
import re
from collections.abc import Sequence
from typing import Any

import pytest

from sidecar.logs import AccessLog, public_route_classifier
from sidecar.metrics import Metrics

Seen = dict[str, Any]


def make_app(seen: Seen, *, status: int = 200, fail: bool = False) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["headers"] = list(scope["headers"])
        seen["request_id"] = scope.get("sidecar.request_id")
        scope["sidecar.rule"] = "api"
        scope["sidecar.decision"] = "allow"
        scope["sidecar.identity_id"] = "0b3b0c8e-1111-2222-3333-444455556666"
        if fail:
            raise RuntimeError("boom")
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"hello"})

    return app


def scope(
    path: str = "/api/orders", *, headers: Sequence[tuple[bytes, bytes]] = (), client: str = "10.1.2.3"
) -> Any:
    return {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"token=secret-token-value",
        "headers": list(headers),
        "client": (client, 5555),
    }


async def call(wrapper: AccessLog, s: Any) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await wrapper(s, receive, send)
    return sent


def wrap(app: Any, stream: io.StringIO, **kw: Any) -> AccessLog:
    kw.setdefault("trusted", lambda peer: peer == "127.0.0.1")
    return AccessLog(app, listener="public", stream=stream, classify=public_route_classifier("/.auth"), **kw)


async def test_one_json_line_with_the_handler_facts_and_no_query() -> None:
    seen: Seen = {}
    out = io.StringIO()
    metrics = Metrics()
    sent = await call(
        wrap(make_app(seen), out, metrics=metrics), scope(headers=[(b"cookie", b"sess=cookie-secret-zz9")])
    )
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["request_id"] == seen["request_id"] and len(entry["request_id"]) == 32
    assert entry | {"time": None, "latency_ms": None} == {
        "time": None,
        "level": "info",
        "logger": "sidecar.access",
        "msg": "request",
        "listener": "public",
        "request_id": seen["request_id"],
        "method": "GET",
        "path": "/api/orders",
        "route_class": "proxy",
        "status": 200,
        "latency_ms": None,
        "bytes": 5,
        "client": "10.1.2.3",
        "rule": "api",
        "decision": "allow",
        "identity_id": "0b3b0c8e-1111-2222-3333-444455556666",
    }
    assert "secret-token-value" not in out.getvalue() and "cookie-secret-zz9" not in out.getvalue()
    # Forwarded upstream (the app's view of the headers) and returned to the client.
    assert (b"x-request-id", seen["request_id"].encode()) in seen["headers"]
    assert (b"x-request-id", seen["request_id"].encode()) in sent[0]["headers"]
    metrics.fold()  # what every scrape does first
    assert metrics._requests.labels("proxy", "200")._value.get() == 1


@pytest.mark.parametrize(
    ("client", "incoming", "kept"),
    [
        pytest.param("127.0.0.1", b"abc-123", True, id="trusted-proxy"),
        pytest.param("10.1.2.3", b"abc-123", False, id="untrusted-client"),
        pytest.param("127.0.0.1", b"bad value\r\nx: y", False, id="trusted-but-malformed"),
        pytest.param("127.0.0.1", b"x" * 200, False, id="trusted-but-too-long"),
    ],
)
async def test_request_id_from_a_trusted_proxy_only(client: str, incoming: bytes, kept: bool) -> None:
    seen: Seen = {}
    await call(
        wrap(make_app(seen), io.StringIO()), scope(headers=[(b"x-request-id", incoming)], client=client)
    )
    ids = [v for k, v in seen["headers"] if k == b"x-request-id"]
    assert len(ids) == 1  # never the client's copy beside ours
    assert (ids[0] == incoming) is kept
    assert seen["request_id"] == ids[0].decode("latin-1")


async def test_failure_is_logged_as_500_and_reraised() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        await call(wrap(make_app({}, fail=True), out), scope())
    assert json.loads(out.getvalue())["status"] == 500


async def test_nested_wrappers_log_once_and_text_mode() -> None:
    out = io.StringIO()
    inner = wrap(make_app({}), out, text=True)
    await call(wrap(inner, out, text=True), scope("/.auth/authz/nginx"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("GET /.auth/authz/nginx 200 ") and "rule=api decision=allow" in lines[0]


async def test_a_decision_is_counted_as_a_decision_under_the_uri_it_judged() -> None:
    """The decision endpoints log the URI they judged as the path (what an operator searches
    for); the route class and the request metric still say "decision", not "proxy"."""
    inner = make_app({})

    async def judge(s: Any, receive: Any, send: Any) -> None:
        s["sidecar.path"] = "/members/one"
        await inner(s, receive, send)

    out = io.StringIO()
    metrics = Metrics()
    await call(wrap(judge, out, metrics=metrics), scope("/.auth/authz/nginx"))
    entry = json.loads(out.getvalue())
    assert (entry["path"], entry["route_class"]) == ("/members/one", "decision")
    metrics.fold()
    assert metrics._requests.labels("decision", "200")._value.get() == 1
    assert metrics._requests.labels("proxy", "200")._value.get() == 0


def test_route_classes() -> None:
    classify = public_route_classifier("/.auth")
    assert classify("/.auth/authz/nginx") == "decision"
    assert classify("/.auth/decisions/x") == "decision"
    assert classify("/.auth/health/ready") == "health"
    assert classify("/.auth/self-service/login/api") == "api"
    assert classify("/.authx") == "proxy"
    assert classify("/") == "proxy"


@pytest.mark.parametrize("prefix", ["/.auth", "/a", ""])
def test_route_classes_are_those_of_the_rule_in_order(prefix: str) -> None:
    """The classifier's order of tests (a proxied path told first) gives what the rule in its
    documented order gives: decision, health, then api for the sidecar's own paths, else proxy."""
    classify = public_route_classifier(prefix)
    names = ["", "/", "/authz/", "/authz/x", "/decisions/", "/decisions/y", "/health/", "/health/alive"]
    names += ["/self-service/login", "/authz", "x", "x/authz/", "/private/x", "//", "/./health/"]
    for tail in names:
        for path in {prefix + tail, tail, "/" + tail, prefix + "x" + tail}:
            if path.startswith((prefix + "/authz/", prefix + "/decisions/")):
                expected = "decision"
            elif path.startswith(prefix + "/health/"):
                expected = "health"
            elif not prefix or path.startswith(prefix + "/") or path == prefix:
                expected = "api"
            else:
                expected = "proxy"
            assert classify(path) == expected, (prefix, path)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/plain", id="plain"),
        pytest.param('/q"uote\\back', id="quote-backslash"),
        pytest.param("/ctl\r\n\x00\x7f", id="controls"),
        pytest.param("/ünï\u2028cøde\U0001f600", id="non-ascii"),
    ],
)
async def test_json_line_is_exactly_what_json_dumps_writes(path: str) -> None:
    out = io.StringIO()
    wrapper = wrap(make_app({}), out)
    for _ in range(2):  # the second line comes from the escaped-value cache
        await call(wrapper, scope(path))
    for line in out.getvalue().splitlines():
        entry = json.loads(line)
        assert entry["path"] == path
        assert json.dumps(entry, default=str, separators=(",", ":")) == line


async def test_client_chosen_paths_cannot_grow_the_escape_cache() -> None:
    wrapper = wrap(make_app({}), io.StringIO())
    for i in range(5000):
        await call(wrapper, scope(f"/p/{i}"))
    assert len(wrapper._escaped) <= wrapper._escaped.LIMIT


async def test_lines_go_to_the_writer_when_one_is_given() -> None:
    out, lines = io.StringIO(), list[str]()
    await call(wrap(make_app({}), out, write=lines.append), scope())
    assert out.getvalue() == ""
    assert len(lines) == 1 and json.loads(lines[0])["path"] == "/api/orders"


def test_the_line_clock_and_latency_texts_are_what_the_slow_calls_write() -> None:
    from datetime import UTC, datetime, timedelta

    from sidecar.logs import _MILLISECONDS, _Clock, _Latencies

    clock = _Clock()
    first = clock.stamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first)
    assert abs((datetime.fromisoformat(first) - datetime.now(UTC)).total_seconds()) < 5
    assert clock.stamp() >= first  # the cached text, or a later millisecond's
    # Each millisecond's text after the second, as isoformat writes it.
    second = datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC)
    for ms in range(1000):
        text = (second + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds")
        assert _MILLISECONDS[ms] == text[19:], ms
    latencies = _Latencies()
    for us in (0, 7, 321, 1500, 9_999, 10_000, 123_456_789):
        assert latencies[us] == json.dumps(us / 1000)
    assert set(latencies) == {0, 7, 321, 1500, 9_999}  # only the ones under LIMIT are kept
    # Past LIMIT the text is put together from its parts: the float's own text, every fraction.
    for us in [*range(10_000, 40_000), *random.Random(7).sample(range(10**12), 20_000), 10**12, 10**15]:
        assert latencies[us] == repr(us / 1000), us


def test_a_responder_that_does_not_claim_the_request_is_not_asked_and_leaves_no_trace() -> None:
    asked: list[Any] = []

    def inner(scope: Any) -> Any:
        asked.append(scope)
        return None

    wrapper = AccessLog(object(), listener="public", trusted=lambda _: False, stream=io.StringIO())
    headers = [(b"host", b"a")]
    scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/x", "headers": headers}
    assert wrapper.answering(inner, lambda s: False)(scope) is None
    assert asked == [] and scope == {"type": "http", "method": "GET", "path": "/x", "headers": headers}
    assert wrapper.answering(inner, lambda s: True)(scope) is None
    assert len(asked) == 1 and scope["headers"] is headers and "sidecar.request_id" not in scope


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({}, id="bare"),
        pytest.param(
            {"sidecar.path": "/m/\u2028x", "sidecar.rule": "r", "sidecar.decision": "allow"}, id="judged"
        ),
        pytest.param(
            {"sidecar.identity_id": "id-1", "sidecar.route_class": "api", "client": None}, id="no-client"
        ),
        pytest.param({"type": "websocket", "method": "GET"}, id="websocket"),
        pytest.param({"method": "PATCH"}, id="patch"),
    ],
)
@pytest.mark.parametrize("status", [200, 401, 503])
def test_the_line_is_the_one_its_parts_make(extra: dict[str, Any], status: int) -> None:
    """``_finish`` writes its JSON line in one string; the line ``_json_parts``' parts make (the
    lines made again from them: ``_replaying``, ``_finish_from``) must be the same text. Fails on a
    version whose line differs from the parts' in any field."""
    out = io.StringIO()
    log = wrap(make_app({}), out)
    s = {**scope("/.auth/authz/nginx"), **extra}
    log._finish(s, status, 123, 0.0042, "rid-1")
    route_class = s.get("sidecar.route_class") or log.classify(s["path"])
    before, logged, after, tail = log._json_parts(s, route_class, status, 123)
    line = out.getvalue()
    rest = line.partition('"request_id":"rid-1",')[2]
    assert rest == f"{before}{logged}{after}4.2{tail}"
    assert json.dumps(json.loads(line), default=str, separators=(",", ":")) + "\n" == line


def test_request_ids_are_128_random_bits_each_never_repeated_nor_shared_with_a_forked_child() -> None:
    from sidecar.logs import new_request_id

    ids = [new_request_id() for _ in range(1000)]  # past several reads from the kernel
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 1000
    # No two share their bits: each id is 16 bytes of its own (not a window sliding over them).
    halves = [i[:16] for i in ids] + [i[16:] for i in ids]
    assert len(set(halves)) == 2000
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert status == 0 and re.fullmatch("[0-9a-f]{32}", child)
    assert child != new_request_id()  # the child read its own bits; it did not go on with ours
