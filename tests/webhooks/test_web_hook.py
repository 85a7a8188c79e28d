"""Kratos ``web_hook`` hooks through ``sidecar serve`` against a real local HTTP receiver (Kratos
``selfservice/hook/web_hook.go``, ``request/builder.go``, ``request/auth.go``): the Jsonnet body over
``ctx``, headers and auth, ``response.parse`` changing the identity or stopping the flow with
Kratos' messages, ``error 'cancel'``, fire and forget, 502 on a bad answer and 504 on a timeout."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config
from tests.receiver import Answer, Received, Receiver, http_receiver

PASSWORD = "correct-Horse-battery-staple-42"

BODY = """
function(ctx) {
  email: ctx.identity.traits.email,
  identity_id: ctx.identity.id,
  flow_type: ctx.flow.type,
  method: ctx.request_method,
  user_agent: ctx.request_headers['User-Agent'][0],
}
"""
CANCEL_UNLESS_NOTIFY = """
function(ctx)
  if std.startsWith(ctx.identity.traits.email, 'notify') then { email: ctx.identity.traits.email }
  else error 'cancel'
"""
BEFORE = """
function(ctx) {
  flow_id: ctx.flow.id,
  url: ctx.request_url,
  header_names: std.objectFields(ctx.request_headers),
  cookies: ctx.request_cookies,
}
"""


def b64(text: str) -> str:
    return "base64://" + base64.b64encode(text.encode()).decode()


RELEASE = threading.Event()
ANSWERED = threading.Event()


def answer(request: Received) -> Answer:
    data = json.loads(request.body or b"{}")
    email = str(data.get("email", ""))
    if request.path == "/parse":
        if email.startswith("blocked"):
            messages = {
                "messages": [
                    {
                        "instance_ptr": "#/traits/email",
                        "messages": [{"id": 1234, "text": "This address is not welcome.", "type": "error"}],
                    }
                ]
            }
            return Answer(409, json.dumps(messages).encode())
        return Answer(200, json.dumps({"identity": {"metadata_public": {"plan": "gold"}}}).encode())
    if request.path == "/ignored":
        # Held until the test has its registration answer: a flow that waited would time out.
        RELEASE.wait(20)
        ANSWERED.set()
        return Answer(500, b"fire and forget: nobody reads this")
    return Answer(204)


def hook(receiver: Receiver, path: str, **config: Any) -> dict[str, Any]:
    return {"hook": "web_hook", "config": {"url": receiver.url + path, "method": "POST", **config}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Receiver]]:
    tmp = tmp_path_factory.mktemp("webhooks")
    (tmp / "body.jsonnet").write_text(BODY)
    with http_receiver(answer) as receiver:
        public, admin = ports()
        config = base_config(tmp, public, admin)
        config["dev"] = True
        config["selfservice"]["flows"] = {
            "registration": {
                "before": {
                    "hooks": [
                        hook(
                            receiver,
                            "/before",
                            body=b64(BEFORE),
                            auth={
                                "type": "api_key",
                                "config": {"name": "X-Api-Key", "value": "k3y", "in": "header"},
                            },
                        )
                    ]
                },
                "after": {
                    "password": {
                        "hooks": [
                            hook(receiver, "/parse", body="file://./body.jsonnet", response={"parse": True}),
                            {"hook": "session"},
                            hook(
                                receiver,
                                "/after",
                                body="file://./body.jsonnet",
                                headers={"X-Tenant": "acme"},
                                auth={
                                    "type": "basic_auth",
                                    "config": {"user": "hooks", "password": "s3cret"},
                                },
                            ),
                            hook(
                                receiver, "/ignored", body="file://./body.jsonnet", response={"ignore": True}
                            ),
                        ]
                    }
                },
            },
            "login": {"after": {"hooks": [hook(receiver, "/login", body=b64(CANCEL_UNLESS_NOTIFY))]}},
        }
        path = write_config(tmp / "sidecar.yaml", config)
        with running(serve_argv(path), cwd=tmp, public_port=public, admin_port=admin) as proc:
            yield proc, receiver


def register(proc: Proc, email: str) -> httpx.Response:
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as client:
        flow = client.get(
            "/self-service/registration/api", headers={"User-Agent": "hooks-test/1", "Cookie": "seen=1"}
        ).json()
        return client.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": email}},
            headers={"User-Agent": "hooks-test/1"},
        )


def received(receiver: Receiver, path: str, email: str | None = None) -> list[Received]:
    return [
        r
        for r in list(receiver.received)
        if r.path == path and (email is None or json.loads(r.body or b"{}").get("email") == email)
    ]


def test_registration_hooks_call_parse_and_forget(setup: tuple[Proc, Receiver]) -> None:
    proc, receiver = setup
    email = f"ok-{uuid.uuid4().hex[:8]}@example.test"
    done = register(proc, email)
    assert done.status_code == 200, done.text
    assert not ANSWERED.is_set()  # the flow answered while the ignored hook was still held
    RELEASE.set()
    identity = done.json()["identity"]
    [before] = [r for r in receiver.received if r.path == "/before"][-1:]
    assert before.headers["x-api-key"] == "k3y" and json.loads(before.body)["url"].endswith(
        "/registration/api"
    )

    [after] = received(receiver, "/after", email)
    body = json.loads(after.body)
    assert body["identity_id"] == identity["id"] and body["flow_type"] == "api" and body["method"] == "POST"
    assert body["user_agent"] == "hooks-test/1"
    assert after.headers["x-tenant"] == "acme"
    assert after.headers["authorization"] == "Basic " + base64.b64encode(b"hooks:s3cret").decode()
    assert after.headers["content-type"] == "application/json"

    # response.parse: the answer's metadata_public was saved on the new identity.
    stored = httpx.get(f"{proc.admin_url}/admin/identities/{identity['id']}").json()
    assert stored["metadata_public"] == {"plan": "gold"}
    deadline = time.monotonic() + 10
    while not received(receiver, "/ignored", email) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert received(receiver, "/ignored", email)


def test_parse_hook_stops_the_registration_with_kratos_messages(setup: tuple[Proc, Receiver]) -> None:
    proc, receiver = setup
    email = f"blocked-{uuid.uuid4().hex[:8]}@example.test"
    refused = register(proc, email)
    assert refused.status_code == 400, refused.text
    node = next(n for n in refused.json()["ui"]["nodes"] if n["attributes"]["name"] == "traits.email")
    assert node["messages"] == [{"id": 1234, "text": "This address is not welcome.", "type": "error"}]
    # Nothing half-written: no identity, and the later hooks never ran.
    found = httpx.get(f"{proc.admin_url}/admin/identities", params={"credentials_identifier": email}).json()
    assert found == []
    assert received(receiver, "/after", email) == []


def test_cancel_skips_the_call(setup: tuple[Proc, Receiver]) -> None:
    proc, receiver = setup
    for prefix in ("quiet", "notify"):
        email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.test"
        assert register(proc, email).status_code == 200
        with httpx.Client(base_url=proc.public_url + "/.auth") as client:
            flow = client.get("/self-service/login/api").json()
            signed_in = client.post(
                f"/self-service/login?flow={flow['id']}",
                json={"method": "password", "identifier": email, "password": PASSWORD},
            )
        assert signed_in.status_code == 200, signed_in.text
        assert len(received(receiver, "/login", email)) == (1 if prefix == "notify" else 0)


def test_bad_answers_and_timeouts(tmp_path: Path) -> None:
    def slow_or_failing(request: Received) -> Answer:
        if b"slow" in request.body:
            return Answer(204, delay=3.0)
        return Answer(500, b"oops")

    with http_receiver(slow_or_failing) as receiver:
        public, admin = ports()
        config = base_config(tmp_path, public, admin)
        config["dev"] = True
        config["selfservice"]["flows"] = {
            "registration": {
                "after": {
                    "password": {
                        "hooks": [
                            {"hook": "session"},
                            hook(
                                receiver,
                                "/fail",
                                body=b64("function(ctx) { email: ctx.identity.traits.email }"),
                                timeout="500ms",
                            ),
                        ]
                    }
                }
            }
        }
        path = write_config(tmp_path / "sidecar.yaml", config)
        with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
            failed = register(proc, f"fail-{uuid.uuid4().hex[:8]}@example.test")
            assert failed.status_code == 502
            assert failed.json()["error"]["reason"] == (
                "A third-party upstream service responded improperly. Please try again later."
            )
            slow = register(proc, f"slow-{uuid.uuid4().hex[:8]}@example.test")
            assert slow.status_code == 504
            assert slow.json()["error"]["reason"] == (
                "A third-party upstream service could not be reached. Please try again later."
            )
