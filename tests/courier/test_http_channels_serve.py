"""Kratos' HTTP courier through ``sidecar serve`` against a real local HTTP receiver.

Kratos v25.4.0: ``courier/http_channel.go`` (one request per message, built by
``request/builder.go`` from an ``httpRequestConfig``: Jsonnet body over ``httpDataModel``, headers,
``api_key`` / ``basic_auth``; a non-2xx answer is a failed attempt), ``courier/sms.go`` (``type: sms``
messages go to the channel with ``id: sms``), ``courier.delivery_strategy: http`` (emails through
``courier.http.request_config``), ``courier/template/courier/builtin/templates/verification_code/
valid/sms.body.gotmpl`` and ``selfservice/strategy/code/code_sender.go`` ``SendVerificationCodeTo``
(a verifiable address with ``via: sms`` gets its verification code by SMS; the flow takes the code)
and ``SendCode`` (a code identifier ``via: sms`` gets its login code by SMS,
``templates/login_code/valid/sms.body.gotmpl``).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config
from tests.receiver import Answer, Received, Receiver, http_receiver
from tests.schemas import person_schema

PASSWORD = "correct-Horse-battery-staple-42"
# Twilio-like: a form body with To and Body.
SMS_BODY = "function(ctx) { To: ctx.recipient, Body: ctx.body, Kind: ctx.message_type }"
# The email verified by mail; the phone verified by SMS and a login code identifier.
SCHEMA = person_schema(
    email_for=("verification",),
    phone={
        "type": "string",
        "format": "tel",
        "ory.sh/kratos": {
            "verification": {"via": "sms"},
            "credentials": {"code": {"identifier": True, "via": "sms"}},
        },
    },
)

FAIL_ONCE: set[str] = set()
_lock = threading.Lock()


def answer(request: Received) -> Answer:
    if request.path == "/sms":
        to = parse_qs(request.body.decode())["To"][0]
        with _lock:
            if to in FAIL_ONCE:
                FAIL_ONCE.discard(to)
                return Answer(503, b'{"message": "gateway busy"}')
    return Answer(201, b"{}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Receiver]]:
    tmp = tmp_path_factory.mktemp("http-courier")
    (tmp / "phone.schema.json").write_text(json.dumps(SCHEMA))
    (tmp / "sms.jsonnet").write_text(SMS_BODY)
    with http_receiver(answer) as receiver:
        public, admin = ports()
        config = base_config(tmp, public, admin)
        config["dev"] = True
        config["identity"] = {
            "default_schema_id": "phone",
            "schemas": [{"id": "phone", "url": "file://./phone.schema.json"}],
        }
        config["selfservice"]["methods"] = {"code": {"enabled": True, "passwordless_enabled": True}}
        config["selfservice"]["flows"] = {"verification": {"enabled": True, "use": "code"}}
        config["courier"] = {
            "worker_interval": "100ms",
            "delivery_strategy": "http",
            "http": {
                "request_config": {
                    "url": receiver.url + "/mail",
                    "auth": {"type": "basic_auth", "config": {"user": "mailer", "password": "s3cret"}},
                }
            },
            "channels": [
                {
                    "id": "sms",
                    "type": "http",
                    "request_config": {
                        "url": receiver.url + "/sms",
                        "method": "POST",
                        "body": "file://./sms.jsonnet",
                        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
                        "auth": {
                            "type": "api_key",
                            "config": {"name": "X-Gateway-Key", "value": "k3y", "in": "header"},
                        },
                    },
                }
            ],
        }
        path = write_config(tmp / "sidecar.yaml", config)
        with running(serve_argv(path), cwd=tmp, public_port=public, admin_port=admin) as proc:
            yield proc, receiver


def _register(proc: Proc, email: str, phone: str) -> dict[str, Any]:
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as c:
        flow = c.get("/self-service/registration/api").json()
        done = c.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": email, "phone": phone}},
        )
        assert done.status_code == 200, done.text
        return done.json()  # type: ignore[no-any-return]


def _sms_to(receiver: Receiver, phone: str, count: int = 1) -> list[dict[str, str]]:
    def mine() -> list[dict[str, str]]:
        found = []
        for r in list(receiver.received):
            if r.path == "/sms":
                form = {k: v[0] for k, v in parse_qs(r.body.decode()).items()}
                if form["To"] == phone:
                    found.append({**form, "x-gateway-key": r.headers.get("x-gateway-key", "")})
        return found

    receiver.wait_for(1)
    deadline = time.monotonic() + 30
    while len(mine()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    got = mine()
    assert len(got) >= count, f"expected {count} SMS to {phone}, got {got}"
    return got


def test_a_phone_trait_is_verified_with_a_code_sent_by_sms(server: tuple[Proc, Receiver]) -> None:
    proc, receiver = server
    email = f"p-{uuid.uuid4().hex[:8]}@example.test"
    phone = f"+49151{uuid.uuid4().int % 10**7:07d}"
    done = _register(proc, email, phone)
    items = {c["flow"]["verifiable_address"]: c["flow"]["id"] for c in done["continue_with"] if "flow" in c}
    assert set(items) == {email, phone}

    [sms] = _sms_to(receiver, phone)
    assert sms["Kind"] == "sms" and sms["x-gateway-key"] == "k3y"
    code = re.search(r"Your verification code is: (\d{6})", sms["Body"])
    assert code is not None, sms["Body"]

    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as c:
        wrong = c.post(
            f"/self-service/verification?flow={items[phone]}", json={"method": "code", "code": "000000"}
        )
        assert wrong.json()["ui"]["messages"][0]["id"] == 4070006
        ok = c.post(
            f"/self-service/verification?flow={items[phone]}",
            json={"method": "code", "code": code.group(1)},
        )
        assert ok.status_code == 200 and ok.json()["state"] == "passed_challenge", ok.text
    identity = httpx.get(f"{proc.admin_url}/admin/identities/{done['identity']['id']}").json()
    verified = {a["value"]: (a["via"], a["verified"]) for a in identity["verifiable_addresses"]}
    assert verified == {email: ("email", False), phone: ("sms", True)}

    # The email went through courier.http with Kratos' default body and basic auth.
    mails = [json.loads(r.body) for r in list(receiver.received) if r.path == "/mail"]
    [mail] = [m for m in mails if m["recipient"] == email]
    assert mail["template_type"] == "verification_code_valid"
    assert re.fullmatch(r"\d{6}", mail["verification_code"]) and mail["to"] == email
    assert mail["verification_code"] in mail["body"] and mail["subject"]
    [raw] = [r for r in list(receiver.received) if r.path == "/mail" and email.encode() in r.body]
    assert raw.headers["authorization"] == "Basic " + base64.b64encode(b"mailer:s3cret").decode()


def test_a_failed_sms_is_retried_through_the_durable_queue(server: tuple[Proc, Receiver]) -> None:
    proc, receiver = server
    phone = f"+44770{uuid.uuid4().int % 10**7:07d}"
    with _lock:
        FAIL_ONCE.add(phone)
    _register(proc, f"r-{uuid.uuid4().hex[:8]}@example.test", phone)
    first, second = _sms_to(receiver, phone, 2)[:2]
    assert first["Body"] == second["Body"]  # the same message, sent again
    deadline = time.monotonic() + 30
    while True:
        messages = httpx.get(f"{proc.admin_url}/admin/courier/messages", params={"recipient": phone}).json()
        [message] = messages
        if message["status"] == "sent" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert message["type"] == "sms" and message["channel"] == "sms" and message["status"] == "sent"
    assert message["template_type"] == "verification_code_valid" and message["subject"] == ""
    assert [d["status"] for d in message["dispatches"]] == ["failed", "success"]
    assert "503" in message["dispatches"][0]["error"]["message"]


def test_a_login_code_goes_to_the_phone_by_sms(server: tuple[Proc, Receiver]) -> None:
    proc, receiver = server
    phone = f"+33612{uuid.uuid4().int % 10**6:06d}"
    identity = _register(proc, f"l-{uuid.uuid4().hex[:8]}@example.test", phone)["identity"]
    _sms_to(receiver, phone)  # the verification code
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as c:
        flow = c.get("/self-service/login/api").json()
        sent = c.post(f"/self-service/login?flow={flow['id']}", json={"method": "code", "identifier": phone})
        assert sent.status_code == 400 and sent.json()["state"] == "sent_email", sent.text
        sms = _sms_to(receiver, phone, 2)[-1]
        code = re.search(r"Your login code is: (\d{6})", sms["Body"])
        assert code is not None, sms
        done = c.post(
            f"/self-service/login?flow={flow['id']}",
            json={"method": "code", "identifier": phone, "code": code.group(1)},
        )
        assert done.status_code == 200, done.text
        assert done.json()["session"]["identity"]["id"] == identity["id"]
