"""``log.audit.webhook`` through ``sidecar serve``: security audit events reach a real local receiver
through the durable outbox, signed (checked with the README's receiver snippet), filtered by
``events``, and the same JSON object as the audit log line. An audit delivery that dies is written
as ``webhook.dead_lettered`` to the log but not sent again as a delivery (no endless recursion).
Refusals at load: no signing secret, the audit log off, an unknown event name."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sidecar.config.loader import ConfigError
from tests.conftest import free_port, make_config
from tests.docs.test_snippets import ROOT
from tests.ops.serve import base_config, migrate, ports, running, serve_argv, write_config
from tests.receiver import http_receiver
from tests.webhooks.test_outbox import SECRET, deliveries, verify_signature, wait

PASSWORD = "an-audited-passphrase-1"


def _config(tmp: Path, url: str, **hook: Any) -> tuple[Path, int, int, Path]:
    public, admin = ports()
    config = base_config(tmp, public, admin)
    audit_path = tmp / f"audit-{public}.jsonl"
    config["log"] = {**config.get("log", {}), "audit": {"enabled": True, "path": str(audit_path)}}
    config["log"]["audit"]["webhook"] = {"url": url, "timeout": "1s", **hook}
    config["webhooks"] = {
        "signing_secret": SECRET,
        "initial_backoff": "100ms",
        "max_backoff": "200ms",
        "worker_interval": "100ms",
        "lease": "3s",
        "max_attempts": 2,
    }
    path = write_config(tmp / f"sidecar-{public}.yaml", config)
    return path, public, admin, audit_path


def _sign_up_and_in(public_url: str) -> str:
    email = f"a-{uuid.uuid4().hex[:8]}@example.test"
    with httpx.Client(base_url=public_url + "/.auth", timeout=30) as client:
        flow = client.get("/self-service/registration/api").json()
        done = client.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": email}},
        )
        assert done.status_code == 200, done.text
        flow = client.get("/self-service/login/api").json()
        wrong = client.post(
            f"/self-service/login?flow={flow['id']}",
            json={"method": "password", "identifier": email, "password": "not-the-password-0"},
        )
        assert wrong.status_code == 400, wrong.text
        flow = client.get("/self-service/login/api").json()
        good = client.post(
            f"/self-service/login?flow={flow['id']}",
            json={"method": "password", "identifier": email, "password": PASSWORD},
        )
        assert good.status_code == 200, good.text
    return email


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


EXAMPLE = yaml.safe_load((ROOT / "examples/operations/audit-webhook.yaml").read_text())


def test_a_login_reaches_the_siem_signed_and_filtered(tmp_path: Path) -> None:
    # docs/AUDIT.md's example, pointed at the local receiver.
    example = EXAMPLE["log"]["audit"]["webhook"]
    assert example["events"] == ["login.succeeded", "login.failed"]
    with http_receiver() as receiver:
        path, public, admin, audit_path = _config(
            tmp_path, f"{receiver.url}/siem", headers=example["headers"], events=example["events"]
        )
        migrate(path, tmp_path)
        with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
            _sign_up_and_in(proc.public_url)
            received = receiver.wait_for(2)
            wait(lambda: [d["status"] for d in deliveries(proc)] == ["delivered"] * 2)
            listed = deliveries(proc)
            assert {d["hook_id"] for d in listed} == {"log.audit.webhook"}
        bodies = [json.loads(r.body) for r in received]
        # The filter: registration.succeeded is in the log but was not sent.
        assert sorted(b["event"] for b in bodies) == ["login.failed", "login.succeeded"]
        logged = _lines(audit_path)
        assert "registration.succeeded" in {e["event"] for e in logged}
        for request, body in zip(received, bodies, strict=True):
            assert request.path == "/siem" and request.method == "POST"
            assert request.headers["content-type"] == "application/json"
            assert request.headers["authorization"] == example["headers"]["Authorization"]
            assert verify_signature(SECRET, request.headers, request.body)
            assert not verify_signature("another-secret-000000", request.headers, request.body)
            # The same object as the log line, byte for byte.
            line = next(e for e in logged if e["event"] == body["event"])
            assert body == line
            assert request.body.decode() in audit_path.read_text().splitlines()
        succeeded = next(b for b in bodies if b["event"] == "login.succeeded")
        assert succeeded["identity_id"] and succeeded["method"] == "password" and succeeded["aal"] == "aal1"
        assert PASSWORD not in "".join(r.body.decode() for r in received)


def test_a_dead_audit_delivery_is_logged_not_sent_again(tmp_path: Path) -> None:
    # Nobody listens on this port: every audit delivery dies after webhooks.max_attempts (2).
    path, public, admin, audit_path = _config(
        tmp_path, f"http://127.0.0.1:{free_port()}/siem", events=["login.succeeded", "webhook.dead_lettered"]
    )
    migrate(path, tmp_path)
    with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
        _sign_up_and_in(proc.public_url)
        wait(lambda: [d["status"] for d in deliveries(proc)] == ["dead"])
        wait(lambda: any(e["event"] == "webhook.dead_lettered" for e in _lines(audit_path)))
        dead = deliveries(proc)[0]
        (event,) = [e for e in _lines(audit_path) if e["event"] == "webhook.dead_lettered"]
        assert event["delivery_id"] == dead["id"] and event["hook_id"] == "log.audit.webhook"
        assert event["attempts"] == 2
        # Its own dead letter was not enqueued: still the one delivery, nothing new queued.
        wait(lambda: len(deliveries(proc)) == 1, timeout=2.0)
        time.sleep(1.0)
        assert len(deliveries(proc)) == 1


HOOK = {"url": "http://127.0.0.1:1/siem"}


def test_refused_without_a_signing_secret() -> None:
    with pytest.raises(ConfigError) as refused:
        make_config(log={"audit": {"enabled": True, "webhook": HOOK}})
    assert "log.audit.webhook" in str(refused.value)
    assert "webhooks.signing_secret" in str(refused.value)


def test_refused_with_the_audit_log_off() -> None:
    with pytest.raises(ConfigError) as refused:
        make_config(log={"audit": {"webhook": HOOK}}, webhooks={"signing_secret": SECRET})
    assert "log.audit.enabled" in str(refused.value)


@pytest.mark.parametrize(
    ("hook", "key"),
    [
        ({"url": "ftp://siem.example/x"}, "url"),
        ({"url": "http://127.0.0.1:1/x", "headers": {"Webhook-Signature": "x"}}, "headers"),
        ({"url": "http://127.0.0.1:1/x", "timeout": "1m"}, "timeout"),
        ({"url": "http://127.0.0.1:1/x", "colour": "red"}, "colour"),
    ],
)
def test_refused_bad_keys(hook: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_config(log={"audit": {"enabled": True, "webhook": hook}}, webhooks={"signing_secret": SECRET})
    assert f"log.audit.webhook.{key}" in str(refused.value)


def test_unknown_event_names_stop_the_start(tmp_path: Path) -> None:
    public, admin = ports()
    config = base_config(tmp_path, public, admin)
    config["log"] = {
        "audit": {"enabled": True, "webhook": {**HOOK, "events": ["login.succeeded", "login.suceeded"]}}
    }
    config["webhooks"] = {"signing_secret": SECRET}
    path = write_config(tmp_path / "sidecar.yaml", config)
    for argv in (serve_argv(path), [sys.executable, "-m", "sidecar", "config", "check", str(path)]):
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode != 0
        assert "log.audit.webhook.events: unknown event name(s) ['login.suceeded']" in done.stderr


def test_the_example_loads_as_it_is() -> None:
    config = make_config(**EXAMPLE)
    hook = config.log.audit.webhook
    assert hook is not None and hook.timeout.total_seconds() == 5
