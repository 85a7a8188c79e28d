"""Security audit events from ``sidecar serve``: every fact of docs/AUDIT.md, from real traffic.

One sidecar (production mode, SQLite, mail to a real SMTP server) is driven through sign-up,
failed and good sign-ins, a throttled guesser, settings (password, TOTP, backup codes), recovery
and verification by code, session revocation, logout and the admin identity API. The audit file
must then hold one JSON line per fact, each naming who and where, and none of the secrets the
test used anywhere in it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sidecar.audit import EVENTS
from tests.api.public.mfa import (
    enrol_codes,
    fresh_step,
    mfa_selfservice,
    oathtool,
    settings_api_flow,
    submit_settings,
    tok,
    totp_secret,
)
from tests.conftest import free_port
from tests.mail import SmtpServer, code_in
from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

COMMON = (
    "time",
    "event",
    "version",
    "service",
    "identity_id",
    "client_ip",
    "user_agent",
    "request_id",
    "trace_id",
)
PASSWORD = "an-audited-passphrase-1"
NEW_PASSWORD = "an-audited-passphrase-2"
EXAMPLE = yaml.safe_load(
    (Path(__file__).parents[2] / "examples" / "operations" / "observability.yaml").read_text()
)
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.fixture
def audited(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Proc, Path]]:
    public_port, admin_port = ports()
    audit = tmp_path / "audit.jsonl"
    selfservice = mfa_selfservice(
        recovery={"enabled": True, "use": "code"}, verification={"enabled": True, "use": "code"}
    )
    selfservice["methods"]["code"] = {"enabled": True}
    # A fire-and-forget web hook to a closed port, given one attempt: its delivery dead-letters.
    dead_end = {
        "url": f"http://127.0.0.1:{free_port()}/events",
        "method": "POST",
        "response": {"ignore": True},
    }
    selfservice["flows"]["registration"] = {
        "after": {"password": {"hooks": [{"hook": "session"}, {"hook": "web_hook", "config": dead_end}]}}
    }
    selfservice["default_browser_return_url"] = f"http://127.0.0.1:{public_port}/"
    cfg = base_config(
        tmp_path,
        public_port,
        admin_port,
        selfservice=selfservice,
        courier={"smtp": {"connection_uri": smtp.uri, "from_address": "sidecar@example.test"}},
        # The shipped example, with only the file moved into the test's folder.
        log={"audit": {**EXAMPLE["log"]["audit"], "path": str(audit)}},
        session={"whoami": {"required_aal": "aal1"}},
        webhooks={
            "signing_secret": "audit-test-signing-secret",
            "max_attempts": 1,
            "worker_interval": "100ms",
        },
    )
    path = write_config(tmp_path / "sidecar.yaml", cfg)
    migrate(path, tmp_path)
    with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
        yield proc, audit


def read_events(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def one(events: list[dict[str, Any]], name: str, **match: Any) -> dict[str, Any]:
    found = [e for e in events if e["event"] == name and all(e.get(k) == v for k, v in match.items())]
    assert found, f"no {name} {match} in {[e['event'] for e in events]}"
    return found[-1]


async def test_every_security_fact_is_one_audit_line_without_secrets(
    audited: tuple[Proc, Path], smtp: SmtpServer
) -> None:
    proc, audit = audited
    email = f"audit-{uuid.uuid4().hex[:8]}@example.test"
    secrets: list[str] = [PASSWORD, NEW_PASSWORD]
    who = {"User-Agent": "audit-test/1.0", "X-Forwarded-For": "203.0.113.7", "traceparent": TRACEPARENT}
    async with (
        httpx.AsyncClient(base_url=proc.public_url, timeout=20, headers=who) as c,
        httpx.AsyncClient(base_url=proc.admin_url, timeout=20) as admin,
    ):
        # Sign-up (a verification mail goes out: its code is a secret too).
        flow = (await c.get("/.auth/self-service/registration/api")).json()
        r = await c.post(
            f"/.auth/self-service/registration?flow={flow['id']}",
            json={"method": "password", "traits": {"email": email}, "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        signup_request = r.headers["x-request-id"]
        token = r.json()["session_token"]
        identity_id = r.json()["identity"]["id"]
        secrets += [token, code_in(smtp.mailbox.wait_for(email)[0])]

        # A wrong password, then the right one.
        flow = (await c.get("/.auth/self-service/login/api")).json()
        r = await c.post(
            f"/.auth/self-service/login?flow={flow['id']}",
            json={"method": "password", "identifier": email, "password": "not-" + PASSWORD},
        )
        assert r.status_code == 400
        r = await c.post(
            f"/.auth/self-service/login?flow={flow['id']}",
            json={"method": "password", "identifier": email, "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        login_token = r.json()["session_token"]
        secrets.append(login_token)

        # A guesser from another address is throttled (429), never its victim.
        guesser = {"X-Forwarded-For": "198.51.100.99"}
        statuses = []
        for _ in range(8):
            flow = (await c.get("/.auth/self-service/login/api", headers=guesser)).json()
            r = await c.post(
                f"/.auth/self-service/login?flow={flow['id']}",
                json={"method": "password", "identifier": email, "password": "guess-" + uuid.uuid4().hex},
                headers=guesser,
            )
            statuses.append(r.status_code)
        assert 429 in statuses, statuses

        # Settings: a new password, an authenticator app linked then unlinked, backup codes.
        flow = await settings_api_flow(c, token)
        r = await submit_settings(c, flow["id"], token, {"method": "password", "password": NEW_PASSWORD})
        assert r.status_code == 200, r.text
        flow = await settings_api_flow(c, token)
        secret = totp_secret(flow)
        fresh_step()
        totp_code = oathtool(secret)
        secrets += [secret, totp_code]
        r = await submit_settings(c, flow["id"], token, {"method": "totp", "totp_code": totp_code})
        assert r.status_code == 200, r.text
        flow = await settings_api_flow(c, token)
        r = await submit_settings(c, flow["id"], token, {"method": "totp", "totp_unlink": True})
        assert r.status_code == 200, r.text
        secrets += await enrol_codes(c, token)

        # Recovery and verification by code, read from the delivered mail.
        flow = (await c.get("/.auth/self-service/recovery/api")).json()
        r = await c.post(
            f"/.auth/self-service/recovery?flow={flow['id']}", json={"method": "code", "email": email}
        )
        assert r.status_code == 200, r.text
        code = code_in(smtp.mailbox.wait_for(email, 2)[-1])
        r = await c.post(
            f"/.auth/self-service/recovery?flow={flow['id']}", json={"method": "code", "code": code}
        )
        assert r.status_code == 200, r.text
        secrets += [
            code,
            *(i["ory_session_token"] for i in r.json()["continue_with"] if "ory_session_token" in i),
        ]
        flow = (await c.get("/.auth/self-service/verification/api")).json()
        r = await c.post(
            f"/.auth/self-service/verification?flow={flow['id']}", json={"method": "code", "email": email}
        )
        assert r.status_code == 200, r.text
        code = code_in(smtp.mailbox.wait_for(email, 3)[-1])
        r = await c.post(
            f"/.auth/self-service/verification?flow={flow['id']}", json={"method": "code", "code": code}
        )
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "passed_challenge"
        secrets.append(code)

        # The owner revokes their other sessions, then logs out.
        r = await c.delete("/.auth/sessions", headers=tok(token))
        assert r.status_code == 200 and r.json()["count"] >= 1, r.text
        r = await c.request("DELETE", "/.auth/self-service/logout/api", json={"session_token": token})
        assert r.status_code == 204, r.text

        # The admin API: create, change, revoke sessions, delete.
        r = await admin.post(
            "/admin/identities",
            json={"schema_id": "default", "traits": {"email": f"made-{email}"}},
            headers={"User-Agent": "admin-console/2"},
        )
        assert r.status_code == 201, r.text
        made = r.json()["id"]
        r = await admin.patch(
            f"/admin/identities/{made}", json=[{"op": "replace", "path": "/state", "value": "inactive"}]
        )
        assert r.status_code == 200, r.text
        assert (await admin.delete(f"/admin/identities/{identity_id}/sessions")).status_code == 204
        assert (await admin.delete(f"/admin/identities/{made}")).status_code == 204

    deadline = time.monotonic() + 20
    while '"event":"webhook.dead_lettered"' not in audit.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    events = read_events(audit)
    # Every event of the table occurred, each line has the common fields and only its own.
    assert {e["event"] for e in events} == set(EVENTS)
    background = [e for e in events if e["event"] == "webhook.dead_lettered"]
    for e in events:
        assert tuple(e) == (*COMMON, *EVENTS[e["event"]].fields), e
        assert e["version"] == 1 and e["service"] == "sidecar"
        if e not in background:
            assert e["request_id"] and len(e["request_id"]) == 32
    # The client address is the one the trusted proxy (loopback) reported: the user's or the guesser's.
    by_admin = [e for e in events if e["event"].startswith("identity.") or e.get("actor") == "admin_api"]
    for e in events:
        if e not in by_admin and e not in background:
            assert e["client_ip"] in ("203.0.113.7", "198.51.100.99"), e
            assert e["user_agent"] == "audit-test/1.0" and e["trace_id"] == TRACE_ID, e
    assert one(events, "attempt.throttled")["client_ip"] == "198.51.100.99"
    assert len([e for e in events if e["event"] == "login.failed" and e["client_ip"] == "198.51.100.99"]) >= 5

    signup = one(events, "registration.succeeded")
    assert signup["identity_id"] == identity_id and signup["request_id"] == signup_request
    assert signup["method"] == "password" and signup["flow_type"] == "api" and signup["session_id"]
    failed = one(events, "login.failed", client_ip="203.0.113.7")
    assert failed["reason"] == "4000006" and failed["method"] == "password" and failed["identity_id"] is None
    ok = one(events, "login.succeeded")
    assert ok["identity_id"] == identity_id and ok["aal"] == "aal1" and ok["method"] == "password"
    throttled = one(events, "attempt.throttled")
    assert (
        throttled["flow"] == "login" and throttled["method"] == "password" and throttled["retry_after"] >= 1
    )
    assert one(events, "password.changed")["identity_id"] == identity_id
    assert one(events, "mfa.enrolled", method="totp")["identity_id"] == identity_id
    assert one(events, "mfa.removed", method="totp")["identity_id"] == identity_id
    assert one(events, "mfa.enrolled", method="lookup_secret")["identity_id"] == identity_id
    started = one(events, "recovery.started")
    assert started["method"] == "code" and started["identity_id"] is None  # says no more than the answer
    assert one(events, "recovery.completed")["identity_id"] == identity_id
    assert one(events, "verification.started")["method"] == "code"
    verified = one(events, "verification.completed")
    assert verified["identity_id"] == identity_id and verified["via"] == "email"
    assert one(events, "session.revoked", actor="self")["count"] >= 1
    assert one(events, "logout")["identity_id"] == identity_id
    created = one(events, "identity.created")
    assert created["identity_id"] == made and created["user_agent"] == "admin-console/2"
    assert created["client_ip"] == "127.0.0.1" and created["trace_id"] is None
    assert one(events, "identity.updated")["operation"] == "patch"
    assert one(events, "identity.deleted")["identity_id"] == made
    assert one(events, "session.revoked", actor="admin_api")["identity_id"] == identity_id

    [dead] = background
    assert dead["attempts"] == 1 and dead["status_code"] is None and dead["delivery_id"]
    assert dead["identity_id"] is None and dead["client_ip"] is None and dead["request_id"] is None

    text = audit.read_text(encoding="utf-8")
    for secret in secrets:
        assert secret and secret not in text, "a secret reached the audit log"
    # The audit stream is its own: the process log has none of these lines.
    assert '"event":"login.succeeded"' not in proc.log()
