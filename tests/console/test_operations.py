"""Console operations: an identity's sessions (revoke one, all), recovery made and shown once,
the courier queue (retry, abandon), the web hook outbox (retry), the access rules with
"explain", and the overview charts."""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.courier.model import Message
from sidecar.identity.manager import IdentitySpec
from sidecar.session.model import Device
from sidecar.webhooks.outbox import Delivery
from tests.console.conftest import KEY, Console, MakeConsole

RULES = """\
version: 1
rules:
  - id: probes
    match: { methods: [GET], paths: [/livez] }
    require: public
  - id: billing
    match: { paths: ["/billing/**"] }
    require: { level: authenticated, roles: [finance] }
  - id: app
    match: { paths: ["/**"] }
    require: authenticated
"""


@pytest.fixture
async def console(make_console: MakeConsole, tmp_path: Path) -> Console:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    c = await make_console(
        rules=[str(rules)],
        selfservice={"flows": {"recovery": {"enabled": True, "use": "code"}}},
    )
    c.services.rules.load()  # as create_public_app does in `sidecar serve`
    await c.sign_in()
    return c


async def make(console: Console, email: str = "ada@example.test", **kw: Any) -> uuid.UUID:
    spec = IdentitySpec(
        traits={"email": email}, credentials={"password": {"config": {"password": "x-Long-pass-99"}}}, **kw
    )
    return (await console.services.identities.create(spec)).id


async def test_sessions_listed_and_revoked_one_then_all(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    who = await make(console)
    sessions = console.services.sessions
    laptop = await sessions.issue(
        who, "password", device=Device(ip_address="192.0.2.7", user_agent="Firefox on Linux")
    )
    phone = await sessions.issue(
        who, "password", device=Device(ip_address="192.0.2.8", user_agent="Safari on iPhone")
    )
    page = await console.client.get(f"/console/identities/{who}")
    assert "Firefox on Linux" in page.text and "Safari on iPhone" in page.text and "192.0.2.7" in page.text
    assert page.text.count('<span class="badge active">active</span>') == 3  # state + two sessions

    r = await console.post(f"/console/identities/{who}/sessions/{laptop.session.id}/revoke")
    assert r.status_code == 303
    assert await sessions.resolve(laptop.token) is None
    assert await sessions.resolve(phone.token) is not None
    # Another identity's session id under this identity is refused.
    other = await make(console, "bob@example.test")
    theirs = await sessions.issue(other, "password")
    wrong = await console.post(f"/console/identities/{who}/sessions/{theirs.session.id}/revoke")
    assert wrong.status_code == 404
    assert await sessions.resolve(theirs.token) is not None

    r = await console.post(f"/console/identities/{who}/sessions/revoke-all")
    assert r.status_code == 303
    assert await sessions.resolve(phone.token) is None
    assert await sessions.resolve(theirs.token) is not None
    page = await console.client.get(f"/console/identities/{who}")
    assert page.text.count("ended</span>") == 2
    actions = [(a["action"], a["identity_id"], a["detail"]) for a in audit()]
    assert ("session.revoke", str(who), f"session {laptop.session.id}") in actions
    assert ("session.revoke_all", str(who), "1 sessions") in actions


async def test_recovery_code_is_shown_once_and_never_logged(
    console: Console, audit: Callable[[], list[dict[str, Any]]], caplog: pytest.LogCaptureFixture
) -> None:
    who = await make(console)
    page = await console.client.get(f"/console/identities/{who}")
    assert 'action="/console/identities/' in page.text
    assert '<option value="code">Recovery code</option>' in page.text
    made = await console.post(f"/console/identities/{who}/recovery", {"kind": "code", "expires_in": "15m"})
    assert made.status_code == 200
    assert made.headers["cache-control"] == "no-store"
    code = re.search(r'id="recovery-code">(\d+)<', made.text)
    link = re.search(r'id="recovery-link">([^<]+)<', made.text)
    assert code and link
    assert link.group(1).startswith("http://127.0.0.1:4433/.auth/self-service/recovery?flow=")
    assert code.group(1) not in caplog.text
    assert [a["action"] for a in audit()][-1] == "recovery.code"
    # Not a method that is enabled; a nonsense duration.
    assert (await console.post(f"/console/identities/{who}/recovery", {"kind": "link"})).status_code == 400
    bad = await console.post(f"/console/identities/{who}/recovery", {"kind": "code", "expires_in": "forever"})
    assert bad.status_code == 400


def message(recipient: str, **kw: Any) -> Message:
    return Message(recipient=recipient, subject="Hi", body="b", template_type="stub", **kw)


async def test_courier_queue_retry_and_abandon(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    store = console.services.database.courier
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = await store.enqueue(message("wait@example.test", next_attempt_at=later))
    dead = await store.enqueue(message("dead@example.test"))
    [claimed] = await store.claim_batch("w", limit=1, lease=timedelta(minutes=1))
    assert claimed.id == dead.id
    await store.mark_failed(dead.id, "w", error="550 mailbox unavailable", retry_at=None)

    page = await console.client.get("/console/courier")
    assert "wait@example.test" in page.text and "550 mailbox unavailable" in page.text
    assert "abandoned (1)" in page.text and "queued (1)" in page.text
    only = await console.client.get("/console/courier?status=abandoned")
    assert "dead@example.test" in only.text and "wait@example.test" not in only.text
    assert (await console.client.get("/console/courier?status=nonsense")).status_code == 400

    assert (await console.post(f"/console/courier/{dead.id}/retry")).status_code == 303
    got = await store.get(dead.id)
    assert got is not None and got.status == "queued" and got.send_count == 1
    assert (await console.post(f"/console/courier/{waiting.id}/abandon")).status_code == 303
    got = await store.get(waiting.id)
    assert got is not None and got.status == "abandoned" and "Ada Admin" in (got.last_error or "")
    again = await console.post(f"/console/courier/{waiting.id}/abandon")
    assert again.status_code == 409
    assert (await console.post(f"/console/courier/{uuid.uuid4()}/retry")).status_code == 404
    results = [(a["action"], a["result"]) for a in audit() if a["action"].startswith("courier.")]
    assert results == [
        ("courier.retry", "ok"),
        ("courier.abandon", "ok"),
        ("courier.abandon", "refused"),
        ("courier.retry", "refused"),
    ]


async def test_courier_queue_pages_keep_the_status_filter(make_console: MakeConsole) -> None:
    c = await make_console(serve={"admin": {"api_key": KEY, "console": {"page_size": 2}}})
    await c.sign_in()
    store = c.services.database.courier
    await store.enqueue(message("sent@example.test"))
    [claimed] = await store.claim_batch("w", limit=1, lease=timedelta(minutes=1))
    assert await store.mark_sent(claimed.id, "w")
    queued = [f"queued-{n}@example.test" for n in range(3)]
    for recipient in queued:
        await store.enqueue(message(recipient))

    first = await c.client.get("/console/courier?status=queued")
    nxt = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert nxt is not None, first.text[:2000]
    link = html.unescape(nxt.group(1))
    assert link.startswith("/console/courier?status=queued&page_token=")
    second = await c.client.get(link)
    assert second.status_code == 200 and 'rel="next"' not in second.text
    # Every queued message on exactly one of the two pages; the sent one on neither.
    assert [(r in first.text) + (r in second.text) for r in queued] == [1, 1, 1]
    assert "sent@example.test" not in first.text + second.text
    forged = await c.client.get("/console/courier", params={"page_token": "forged"})
    assert forged.status_code == 400


def delivery(url: str) -> Delivery:
    return Delivery(
        method="POST", url=url, headers=[], body=b"{}", timeout_seconds=5, hook_id="registration.after"
    )


async def test_webhook_outbox_listed_and_a_dead_delivery_retried(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    store = console.services.database.outbox
    dead, sent = delivery("https://hooks.example.test/dead"), delivery("https://hooks.example.test/sent")
    for d in (dead, sent):
        await store.enqueue(d)
    claimed = await store.claim_batch("w", limit=2, lease=timedelta(minutes=1))
    assert {d.id for d in claimed} == {dead.id, sent.id}
    await store.mark_failed(dead.id, "w", error="receiver answered 500", status_code=500, retry_at=None)
    await store.mark_delivered(sent.id, "w", status_code=204)

    page = await console.client.get("/console/webhooks")
    assert page.status_code == 200
    assert "https://hooks.example.test/dead" in page.text and "HTTP 500 receiver answered 500" in page.text
    assert "dead (1)" in page.text and "delivered (1)" in page.text
    only = await console.client.get("/console/webhooks?status=dead")
    assert "/dead" in only.text and "/sent" not in only.text
    assert (await console.client.get("/console/webhooks?status=nonsense")).status_code == 400

    assert (await console.post(f"/console/webhooks/{dead.id}/retry")).status_code == 303
    got = await store.get(dead.id)
    assert got is not None and got.status == "queued"
    assert (await console.post(f"/console/webhooks/{sent.id}/retry")).status_code == 409  # delivered: done
    assert (await console.post(f"/console/webhooks/{uuid.uuid4()}/retry")).status_code == 404
    results = [(a["action"], a["result"]) for a in audit() if a["action"].startswith("webhook.")]
    assert results == [("webhook.retry", "ok"), ("webhook.retry", "refused"), ("webhook.retry", "refused")]


async def test_rules_in_order_and_explained_by_the_proxy_engine(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    page = await console.client.get("/console/rules")
    assert [m for m in re.findall(r"<td><code>([a-z]+)</code>", page.text)] == ["probes", "billing", "app"]

    anon = await console.client.get(
        "/console/rules", params={"method": "GET", "url": "https://app.test/billing/x"}
    )
    assert "login required" in anon.text
    text = html.unescape(anon.text)
    assert re.search(r"skip</td><td><code>probes</code>.*path '/billing/x' not matched", text, re.S)
    assert "MATCH</td><td><code>billing</code>" in anon.text

    who = await make(console, metadata_public={"roles": ["finance"]})
    ok = await console.client.get(
        "/console/rules",
        params={"method": "GET", "url": "https://app.test/billing/x/../y", "identity": str(who)},
    )
    assert (
        'id="decision">Decision for' in ok.text
        and ": allow" in ok.text
        and "path <code>/billing/y</code>" in ok.text
    )
    other = await make(console, "bob@example.test")
    refused = await console.client.get(
        "/console/rules",
        params={"method": "GET", "url": "https://app.test/billing/x", "identity": str(other)},
    )
    assert "forbidden (403)" in refused.text
    bad = await console.client.get(
        "/console/rules", params={"url": "https://app.test/x", "identity": "nobody"}
    )
    assert bad.status_code == 400 and "UUID" in bad.text
    odd = await console.client.get("/console/rules", params={"url": "https://app.test/a%2fb"})
    assert "ambiguous or malformed" in odd.text
    relative = await console.client.get("/console/rules", params={"url": "/billing"})
    assert "not an absolute URL" in relative.text
    explained = [a for a in audit() if a["action"] == "rules.explain"]
    assert explained[1]["identity_id"] == str(who) and explained[1]["detail"].endswith("-> allow")


async def test_overview_counts_and_charts(console: Console) -> None:
    await make(console)
    console.services.metrics.observe_decision("app", "allow", 0.001)
    console.services.metrics.observe_decision("app", "allow", 0.001)
    console.services.metrics.observe_decision("billing", "403", 0.001)
    console.services.metrics.flow_submission("login", "password", "success")
    page = await console.client.get("/console")
    assert 'id="identity-count">1<' in page.text
    assert 'id="decision-count">3<' in page.text
    chart = page.text.split('id="chart-decisions"')[1].split("</figure>")[0]
    assert '<text x="' in chart and 'data-value="allow">2<' in chart and 'data-value="403">1<' in chart
    logins = page.text.split('id="chart-logins"')[1].split("</figure>")[0]
    assert 'data-value="success">1<' in logins


async def test_step_two_pages_need_a_session(make_console: MakeConsole) -> None:
    c = await make_console()
    for path in ("/console", "/console/courier", "/console/webhooks", "/console/rules"):
        assert (await c.client.get(path)).status_code == 303, path
    assert (await c.client.post(f"/console/courier/{uuid.uuid4()}/retry", data={})).status_code == 401


async def test_only_the_newest_sessions_are_listed(console: Console) -> None:
    who = await make(console)
    for _ in range(53):
        await console.services.sessions.issue(who, "password")
    page = await console.client.get(f"/console/identities/{who}")
    assert page.text.count("data-session=") == 50
    assert "3 older sessions are not shown." in page.text
    r = await console.post(f"/console/identities/{who}/sessions/revoke-all")
    assert r.status_code == 303
    live = await console.services.sessions.list_for_identity(who, active_only=True)
    assert live == []


async def test_changes_are_security_audit_events_too(make_console: MakeConsole, tmp_path: Path) -> None:
    """The ``log.audit`` stream gets the console's changes as the admin API's, ``actor: console``."""
    import json

    stream = tmp_path / "audit.jsonl"
    console = await make_console(log={"audit": {"enabled": True, "path": str(stream)}})
    await console.sign_in()
    who = await make(console)
    issued = await console.services.sessions.issue(who, "password")
    await console.post(f"/console/identities/{who}/traits", {"traits.email": "new@example.test"})
    await console.post(f"/console/identities/{who}/sessions/{issued.session.id}/revoke")
    await console.post(f"/console/identities/{who}/delete", {"confirm": str(who)})
    events = [json.loads(line) for line in stream.read_text().splitlines()]
    mine = [(e["event"], e.get("actor"), e.get("operation"), e["identity_id"]) for e in events]
    assert mine == [
        ("identity.updated", "console", "patch:traits", str(who)),
        ("session.revoked", "console", None, str(who)),
        ("identity.deleted", "console", None, str(who)),
    ]
    assert events[1]["session_id"] == str(issued.session.id) and events[0]["client_ip"] == "127.0.0.1"


async def test_a_recovery_link_when_the_link_method_is_on(make_console: MakeConsole, tmp_path: Path) -> None:
    console = await make_console(
        selfservice={
            "flows": {"recovery": {"enabled": True, "use": "link"}},
            "methods": {"link": {"enabled": True}},
        },
    )
    await console.sign_in()
    who = await make(console)
    page = await console.client.get(f"/console/identities/{who}")
    assert '<option value="code">Recovery code</option>' in page.text
    assert '<option value="link">Recovery link</option>' in page.text
    made = await console.post(f"/console/identities/{who}/recovery", {"kind": "link"})
    assert made.status_code == 200 and 'id="recovery-code"' not in made.text
    link = html.unescape(re.search(r'id="recovery-link">([^<]+)<', made.text).group(1))  # type: ignore[union-attr]
    assert re.fullmatch(
        r"http://127\.0\.0\.1:4433/\.auth/self-service/recovery\?flow=[0-9a-f-]{36}&token=\S+", link
    )
