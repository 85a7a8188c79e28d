"""The access line of a request the fast relay served from a forward plan (``AccessLog.taking``
with the plan's ``log`` memo, ``AccessLog._finish_from``) is the line and count ``_finish`` makes
from the scope: the same text but for the time, request id and latency, for every route class,
status and size, in JSON and in the modes that fall back (text, leaked values, log off); and the
relay hands the plan's memo (or a rewrite's, shared by paths) to the log only for a request
planned from a kept plan (or rewrite)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from sidecar.logs import AccessLog, public_route_classifier
from sidecar.metrics import Metrics
from sidecar.proxy.fast import FastProxy
from sidecar.proxy.forward import Forward, Plan, Rewrite

IDENTITY = "0b3b0c8e-1111-2222-3333-444455556666"


def request(path: str = "/private/x", client: str = "10.1.2.3", method: str = "GET") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"token=secret",
        "headers": [(b"host", b"app.test"), (b"cookie", b"sid=secret")],
        "client": (client, 5555),
    }


def judged(scope: dict[str, Any], path: str) -> None:
    """What ``Access`` records for an allowed request (``Access._record``)."""
    scope["sidecar.path"] = path
    scope["sidecar.rule"] = "private"
    scope["sidecar.decision"] = "allow"
    scope["sidecar.identity_id"] = IDENTITY


def served(
    log: AccessLog, memo: dict[Any, Any] | None, path: str, status: int, size: int, method: str = "GET"
) -> None:
    def inner(scope: Any, done: Any) -> bool:
        judged(scope, path.replace("//", "/"))
        done(status, size, memo)
        return True

    assert log.taking(inner)(request(path, method=method)) is True


def normalised(line: str) -> str:
    """A JSON line less what differs per request (time, request id, latency); a text line less its
    latency and request id."""
    if line.startswith("{"):
        entry = json.loads(line)
        for key in ("time", "request_id", "latency_ms"):
            assert key in entry
            entry[key] = None
        entry.get("headers", {}).pop("x-request-id", None)  # leaked: the request's own id
        return json.dumps(entry)
    words = line.split()
    return " ".join(w for w in words if not w.endswith("ms") and not w.startswith("rid="))


def counts(metrics: Metrics) -> list[tuple[str, str, float]]:
    metrics.fold()
    return sorted(
        (s.name, json.dumps(s.labels, sort_keys=True), s.value)
        for family in metrics.registry.collect()
        if family.name == "sidecar_requests"
        for s in family.samples
        if s.name.endswith("_total")
    )


CASES = [
    ("/private/x", 200, 3),
    ("/private/x", 200, 70_000),
    ("/private/x", 502, 120),
    ("/private//x", 200, 3),  # another raw path, the same plan (the normalised path is logged)
    ("/private/x", 200, 0),
    ("/.auth/authz/x", 200, 3),  # another route class from the raw path
    ("/private/x", 304, 0),
]


def _public_log(out: io.StringIO, metrics: Metrics, mode: dict[str, Any]) -> AccessLog:
    """The public listener's access log around no app (the relays write through it), lines in ``out``."""
    return AccessLog(
        None,
        listener="public",
        trusted=lambda peer: False,
        metrics=metrics,
        stream=out,
        classify=public_route_classifier("/.auth"),
        **mode,
    )


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param({}, id="json"),
        pytest.param({"text": True}, id="text"),
        pytest.param({"leak_sensitive_values": True}, id="leak"),
        pytest.param({"enabled": False}, id="off"),
    ],
)
def test_a_planned_relay_logs_and_counts_what_the_scope_gives(mode: dict[str, Any]) -> None:
    logs = []
    for use_memo in (False, True):
        out, metrics = io.StringIO(), Metrics()
        log = _public_log(out, metrics, mode)
        memo: dict[Any, Any] = {}
        for _ in range(2):  # the memo's entries made, then used
            for path, status, size in CASES:
                served(log, memo if use_memo else None, path, status, size)
        if use_memo and not mode:
            assert len(memo) == 4  # one entry per route class and status
        logs.append(([normalised(line) for line in out.getvalue().splitlines()], counts(metrics)))
    plain, planned = logs
    assert planned == plain
    assert len(plain[0]) == (0 if mode.get("enabled") is False else 2 * len(CASES))
    assert sum(value for _, _, value in plain[1]) == 2 * len(CASES)


# A session's rewrite's memo (``forward.Rewrite.log``) serves every path: the paths differ.
PATHS = [
    ("/private/a", 200, 3, "GET"),
    ("/private/b", 200, 3, "GET"),
    ("/private/a", 502, 120, "GET"),
    ("/private/c", 502, 120, "GET"),
    ('/private/%C3%A9/\u00e9"q', 200, 3, "GET"),  # escaped in the line
    ("/private//d", 200, 0, "GET"),
    ("/private/e", 200, 3, "HEAD"),  # not the fast path's: made from the scope
    ("/private/f", 200, 3, "GET"),
    ("/.auth/authz/x", 200, 3, "GET"),  # another route class from the raw path
]


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param({}, id="json"),
        pytest.param({"text": True}, id="text"),
        pytest.param({"leak_sensitive_values": True}, id="leak"),
        pytest.param({"enabled": False}, id="off"),
    ],
)
def test_a_memo_shared_by_paths_logs_and_counts_what_the_scope_gives(mode: dict[str, Any]) -> None:
    logs = []
    for use_memo in (False, True):
        out, metrics = io.StringIO(), Metrics()
        log = _public_log(out, metrics, mode)
        memo: dict[Any, Any] = {}
        for _ in range(2):
            for path, status, size, method in PATHS:
                served(log, memo if use_memo else None, path, status, size, method)
        if use_memo and not mode:
            assert len(memo) == 3  # one entry per route class and status
        logs.append(([normalised(line) for line in out.getvalue().splitlines()], counts(metrics)))
    plain, kept = logs
    assert kept == plain
    assert len({line for line in plain[0]}) == (0 if mode.get("enabled") is False else len(PATHS))


class _Client:
    """``Http1Client`` as ``FastProxy.take`` uses it, with no upstream: every connection fails."""

    class _Origin:
        prefix = b""

    def origin(self, base: str) -> Any:
        return self._Origin()

    def request_head(self, method: str, origin: Any, target: bytes, headers: Any) -> bytes:
        return b"GET / HTTP/1.1\r\n\r\n"

    def header_block(self, origin: Any, headers: Any) -> bytes:
        return b"\r\n"

    def checkout(self, origin: Any) -> None:
        return None


@pytest.mark.parametrize("kept", ["plan", "rewrite", "none"])
async def test_the_relay_hands_the_log_the_memo_of_a_kept_plan_or_rewrite_only(kept: str) -> None:
    headers = [(b"host", b"app.test")]
    plan = Plan("http://up", b"/private/x", headers, head=b"GET / HTTP/1.1\r\n\r\n")
    rewrite = Rewrite(headers)
    forward = {
        "plan": plan.forward(None),
        "rewrite": Forward("http://up", b"/private/x", headers, rewrite=rewrite),
        "none": Forward("http://up", b"/private/x", headers),
    }[kept]
    proxy = FastProxy(lambda scope: forward, _Client(), None)  # type: ignore[arg-type]
    relay = proxy.take({"sidecar.request_id": "rid", "method": "GET"}, lambda *a: None, _Proto(), True)
    assert relay is not None
    assert relay.log is {"plan": plan.log, "rewrite": rewrite.log, "none": None}[kept]
    assert relay.task is not None  # connecting (no pooled connection): given up here
    relay.task.cancel()


class _Proto:
    class server_state:
        default_headers: list[Any] = []

    transport = None
    flow = None
    cycle = None


@pytest.mark.parametrize(
    "mode",
    [
        pytest.param({}, id="json"),
        pytest.param({"text": True}, id="text"),
        pytest.param({"leak_sensitive_values": True}, id="leak"),
        pytest.param({"enabled": False}, id="off"),
    ],
)
def test_a_relay_served_again_logs_and_counts_as_the_first(mode: dict[str, Any]) -> None:
    """A relay's ``sidecar.relay`` (served again: ``sidecar.http_protocol.RememberedRelay``) is
    offered to the protocol only where the line is made from parts the plan decides (not in the
    text and leak modes, whose lines read the request's own headers); served again, it has the
    same line and count with a new request id."""
    out, metrics = io.StringIO(), Metrics()
    log = _public_log(out, metrics, mode)
    memo: dict[Any, Any] = {}
    ids: list[str] = []

    def again(request_id: str, done: Any, *args: Any) -> bool:
        ids.append(request_id)
        done(200, 3, memo)
        return True

    def inner(scope: Any, done: Any) -> bool:
        judged(scope, "/private/x")
        ids.append(scope["sidecar.request_id"])
        scope["sidecar.relay"] = again
        done(200, 3, memo)
        return True

    scope = request()
    assert log.taking(inner)(scope) is True
    relayed = scope.get("sidecar.relay")
    if mode.get("text") or mode.get("leak_sensitive_values"):
        assert relayed is None
        return
    assert relayed is not None and relayed(object(), True) is True
    assert len(set(ids)) == 2
    lines = out.getvalue().splitlines()
    assert sum(value for _, _, value in counts(metrics)) == 2
    if mode.get("enabled") is False:
        assert lines == []
        return
    assert [json.loads(line)["request_id"] for line in lines] == ids
    assert normalised(lines[0]) == normalised(lines[1])
