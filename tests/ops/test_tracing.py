"""OpenTelemetry traces from ``sidecar serve`` to a real OTLP/HTTP receiver started by the test.

The receiver speaks OTLP/HTTP as the OpenTelemetry Collector does (``POST /v1/traces``, protobuf
``ExportTraceServiceRequest``, decoded with the project's own ``opentelemetry-proto`` messages).
Traffic goes through a sign-up (hashing, a mail through the courier), a sign-in, proxied requests
(rules, session cache miss then hit, identity load, the upstream call) and a decision endpoint;
the spans must have the documented names, parents and attributes, carry a trusted proxy's trace
and hand it to the app, ignore an untrusted client's, and hold no secret anywhere.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.mail import SmtpServer, code_in
from tests.ops.probes import Recorder, recording_upstream
from tests.ops.serve import migrate, ports, proxied_config, running, serve_argv, write_config
from tests.receiver import Answer, Received, http_receiver

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "examples" / "operations" / "observability.yaml").read_text())
PASSWORD = "a-traced-passphrase-42"
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class Receiver:
    port: int = 0
    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, predicate: Any, timeout: float = 30) -> list[Span]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [s for s in self.spans if predicate(s)]
            if found or time.monotonic() > deadline:
                assert found, f"no such span among {sorted({s.name for s in self.spans})}"
                return found
            time.sleep(0.1)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


@contextlib.contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """OTLP/HTTP as the Collector speaks it, on a recording server (``tests/receiver.py``)."""
    receiver = Receiver()

    def answer(request: Received) -> Answer:
        body = request.body
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        ok = request.path == "/v1/traces" and request.headers.get("content-type") == "application/x-protobuf"
        if ok:
            export = ExportTraceServiceRequest()
            export.ParseFromString(body)
            with receiver.lock:
                receiver.requests += 1
                for rs in export.resource_spans:
                    resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        for sp in ss.spans:
                            receiver.spans.append(
                                Span(
                                    sp.name,
                                    sp.trace_id.hex(),
                                    sp.span_id.hex(),
                                    sp.parent_span_id.hex(),
                                    sp.kind,
                                    {a.key: _value(a.value) for a in sp.attributes},
                                    resource,
                                )
                            )
        reply = ExportTraceServiceResponse().SerializeToString()
        return Answer(200 if ok else 404, reply, "application/x-protobuf")

    with http_receiver(answer) as server:
        receiver.port = server.port
        yield receiver


def children(spans: list[Span], parent: Span) -> list[Span]:
    return [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]


def test_spans_reach_a_real_otlp_receiver_with_parents_and_no_secrets(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    public_port, admin_port = ports()
    audit = tmp_path / "audit.jsonl"
    with otlp_receiver() as receiver, recording_upstream() as upstream:
        assert isinstance(upstream, Recorder)
        tracing = json.loads(json.dumps(EXAMPLE["tracing"]))
        tracing["providers"]["otlp"]["server_url"] = f"127.0.0.1:{receiver.port}"  # the test's receiver
        tracing["providers"]["otlp"]["sampling"]["sampling_ratio"] = 1.0  # every trace, not a tenth
        cfg = proxied_config(
            tmp_path,
            public_port,
            admin_port,
            upstream.port,
            tracing=tracing,
            log={"audit": {"enabled": True, "path": str(audit)}},
            courier={"smtp": {"connection_uri": smtp.uri, "from_address": "sidecar@example.test"}},
            serve={
                "public": {
                    "host": "127.0.0.1",
                    "port": public_port,
                    "base_url": f"http://127.0.0.1:{public_port}/.auth",
                    # 127.0.0.1 is the trusted proxy; the test's "outside client" comes from 127.0.0.2.
                    "trusted_proxies": ["127.0.0.1"],
                },
                "admin": {"host": "127.0.0.1", "port": admin_port},
            },
        )
        # A fire-and-forget web hook on sign-up, delivered by the outbox to the recording upstream.
        hook = {
            "url": f"http://127.0.0.1:{upstream.port}/hook",
            "method": "POST",
            "response": {"ignore": True},
        }
        cfg["selfservice"]["flows"] = {
            "verification": {"enabled": True, "use": "code"},
            "registration": {
                "after": {"password": {"hooks": [{"hook": "session"}, {"hook": "web_hook", "config": hook}]}}
            },
        }
        cfg["webhooks"] = {"signing_secret": "tracing-test-signing-secret", "worker_interval": "100ms"}
        path = write_config(tmp_path / "sidecar.yaml", cfg)
        migrate(path, tmp_path)
        email = f"trace-{uuid.uuid4().hex[:8]}@example.test"
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
            outside = httpx.HTTPTransport(local_address="127.0.0.2")
            with (
                httpx.Client(base_url=proc.public_url, timeout=20) as c,
                httpx.Client(base_url=proc.public_url, timeout=20, transport=outside) as stranger,
            ):
                flow = c.get("/.auth/self-service/registration/api").json()
                r = c.post(
                    f"/.auth/self-service/registration?flow={flow['id']}",
                    json={"method": "password", "traits": {"email": email}, "password": PASSWORD},
                )
                assert r.status_code == 200, r.text
                code = code_in(smtp.mailbox.wait_for(email)[0])
                flow = c.get("/.auth/self-service/login/api").json()
                r = c.post(
                    f"/.auth/self-service/login?flow={flow['id']}",
                    json={"method": "password", "identifier": email, "password": PASSWORD},
                )
                assert r.status_code == 200, r.text
                token = r.json()["session_token"]
                login_request = r.headers["x-request-id"]
                # Proxied twice (a session-cache miss, then a hit), from the trusted proxy.
                traced = {"traceparent": traceparent, "Cookie": f"ory_kratos_session={token}"}
                r1 = c.get("/members/one", headers=traced)
                r2 = c.get("/members/two", headers=traced)
                assert r1.status_code == r2.status_code == 200, r1.text
                # A decision endpoint, and a stranger's forged trace.
                d = c.get(
                    "/.auth/authz/nginx", headers={"X-Original-URI": "/members/x", "X-Session-Token": token}
                )
                assert d.status_code == 200, d.text
                forged = f"00-{'1' * 32}-{'2' * 16}-01"
                s = stranger.get("/public/page", headers={"traceparent": forged})
                assert s.status_code == 200
            # Spans are exported in batches every second; the courier's send comes in its own trace.
            receiver.wait(lambda sp: sp.name == "sidecar.courier.send")
            receiver.wait(lambda sp: sp.name == "sidecar.webhook.call")
            receiver.wait(lambda sp: sp.attributes.get("sidecar.request_id") == s.headers["x-request-id"])
            proc.terminate()  # a clean stop flushes what is left
        spans = list(receiver.spans)

    names = {sp.name for sp in spans}
    assert {
        "sidecar.rules.match",
        "sidecar.session.resolve",
        "sidecar.session.store",
        "sidecar.identity.load",
        "sidecar.password.hash",
        "sidecar.password.verify",
        "sidecar.courier.send",
        "sidecar.upstream",
        "sidecar.webhook.call",
    } <= names, names
    assert {sp.resource["service.name"] for sp in spans} == {"sidecar"}
    assert {sp.resource["deployment.environment"] for sp in spans} == {"production"}

    def root_of(request_id: str) -> Span:
        [root] = [sp for sp in spans if sp.attributes.get("sidecar.request_id") == request_id]
        assert root.kind == 2  # SERVER
        return root

    # The first proxied request continues the trusted proxy's trace and its span.
    first = root_of(r1.headers["x-request-id"])
    assert first.trace_id == TRACE_ID and first.parent_id == PARENT_ID
    assert first.name == "GET proxy"
    assert first.attributes["http.request.method"] == "GET"
    assert first.attributes["url.path"] == "/members/one"
    assert first.attributes["http.response.status_code"] == 200
    assert first.attributes["sidecar.rule"] == "members" and first.attributes["sidecar.decision"] == "allow"
    kids = {sp.name: sp for sp in children(spans, first)}
    assert set(kids) == {"sidecar.rules.match", "sidecar.session.resolve", "sidecar.upstream"}, kids
    assert kids["sidecar.rules.match"].attributes["sidecar.rule"] == "members"
    resolve = kids["sidecar.session.resolve"]
    assert resolve.attributes["sidecar.session.cache"] == "miss"
    assert {sp.name for sp in children(spans, resolve)} == {"sidecar.session.store", "sidecar.identity.load"}
    call = kids["sidecar.upstream"]
    assert call.kind == 3  # CLIENT
    # The app got the trace with the upstream span as its parent, not the proxy's span.
    sent = dict(upstream.headers_of(b"/members/one"))
    assert sent["traceparent"] == f"00-{TRACE_ID}-{call.span_id}-01".encode()

    second = root_of(r2.headers["x-request-id"])
    hit = next(sp for sp in children(spans, second) if sp.name == "sidecar.session.resolve")
    assert hit.attributes["sidecar.session.cache"] == "hit" and not children(spans, hit)

    decision = root_of(d.headers["x-request-id"])
    assert decision.name == "GET decision"
    assert {sp.name for sp in children(spans, decision)} == {"sidecar.rules.match", "sidecar.session.resolve"}

    # A stranger's traceparent starts nothing: a new trace, and the app sees ours, not theirs.
    strange = root_of(s.headers["x-request-id"])
    assert strange.trace_id != "1" * 32 and strange.parent_id == ""
    sent = dict(upstream.headers_of(b"/public/page"))
    assert sent["traceparent"].split(b"-")[1].decode() == strange.trace_id

    # The outbox's web hook call is a client span; the receiver got its traceparent.
    [hook_call] = [sp for sp in spans if sp.name == "sidecar.webhook.call"]
    assert hook_call.kind == 3 and hook_call.attributes["http.response.status_code"] == 200
    assert hook_call.attributes["server.address"] == "127.0.0.1"
    sent = dict(upstream.headers_of(b"/hook"))
    # (flags 03: sampled, and the trace id is random, W3C Trace Context level 2)
    assert sent["traceparent"].split(b"-")[:3] == [
        b"00",
        hook_call.trace_id.encode(),
        hook_call.span_id.encode(),
    ]

    # Sign-in: the hash check is a child of the request; the audit event names the same trace.
    signin = root_of(login_request)
    verify = [sp for sp in spans if sp.name == "sidecar.password.verify" and sp.trace_id == signin.trace_id]
    assert verify and all(sp.parent_id == signin.span_id for sp in verify)
    events = [json.loads(line) for line in audit.read_text().splitlines()]
    succeeded = next(e for e in events if e["event"] == "login.succeeded")
    assert succeeded["trace_id"] == signin.trace_id and succeeded["request_id"] == login_request

    # No secret in any span name, attribute or resource attribute.
    secrets = [PASSWORD, token, code]
    text = json.dumps([(sp.name, sp.attributes, sp.resource) for sp in spans], default=str)
    for secret in secrets:
        assert secret and secret not in text, "a secret reached a span"
