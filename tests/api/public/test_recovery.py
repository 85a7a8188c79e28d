"""``/self-service/recovery/*`` over HTTP (in process): browser, SPA and API answers."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.api.public.conftest import PUBLIC, Harness, HarnessFactory
from tests.api.public.helpers import JSON, api_flow, browser_flow, message_ids, node_value, register_api

RECOVERY = {"flows": {"recovery": {"enabled": True}, "verification": {"enabled": True}}}


async def mail_secret(h: Harness, email: str, pattern: str = r"^(\d{6})$") -> str:
    messages = await h.services.database.courier.list(page_size=10, recipient=email)
    assert messages, f"no mail to {email}"
    found = re.search(pattern, messages[0].body, re.M)
    assert found, messages[0].body
    return found.group(1)


@pytest.fixture
async def h(harness_factory: HarnessFactory) -> Harness:
    return await harness_factory(selfservice=RECOVERY)


async def registered(h: Harness, email: str) -> None:
    r = await register_api(h.new_client(), email)
    assert r.status_code == 200, r.text


async def browser_sent(client: httpx.AsyncClient, email: str) -> dict[str, Any]:
    flow = await browser_flow(client, "recovery")
    body = {"method": "code", "email": email, "csrf_token": node_value(flow, "csrf_token")}
    r = await client.post(f"/.auth/self-service/recovery?flow={flow['id']}", data=body, headers=JSON)
    assert r.status_code == 200, r.text
    sent: dict[str, Any] = r.json()
    assert sent["state"] == "sent_email" and message_ids(sent) == [1060003]
    return sent


async def test_browser_form_recovery_goes_to_settings_with_a_cookie(h: Harness) -> None:
    await registered(h, "ann@example.test")
    sent = await browser_sent(h.client, "ann@example.test")
    code = await mail_secret(h, "ann@example.test")
    body = {"method": "code", "code": code, "csrf_token": node_value(sent, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/recovery?flow={sent['id']}", data=body)
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"{PUBLIC}/ui/settings?flow=")
    assert "ory_kratos_session" in r.headers.get("set-cookie", "")
    assert r.headers["referrer-policy"] == "no-referrer"
    who = await h.client.get("/.auth/sessions/whoami")
    assert who.status_code == 200 and who.json()["authentication_methods"][0]["method"] == "code_recovery"


async def test_spa_gets_422_browser_location_change_required(h: Harness) -> None:
    await registered(h, "spa@example.test")
    sent = await browser_sent(h.client, "spa@example.test")
    code = await mail_secret(h, "spa@example.test")
    body = {"method": "code", "code": code, "csrf_token": node_value(sent, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/recovery?flow={sent['id']}", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["id"] == "browser_location_change_required"
    assert "/settings" in r.json()["redirect_browser_to"]
    assert "ory_kratos_session" in r.headers.get("set-cookie", "")


async def test_spa_with_continue_with_transitions(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(selfservice=RECOVERY, feature_flags={"use_continue_with_transitions": True})
    await registered(h, "flag@example.test")
    sent = await browser_sent(h.client, "flag@example.test")
    code = await mail_secret(h, "flag@example.test")
    body = {"method": "code", "code": code, "csrf_token": node_value(sent, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/recovery?flow={sent['id']}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "passed_challenge"
    [item] = r.json()["continue_with"]
    assert item["action"] == "show_settings_ui"
    settings = await h.client.get(f"/.auth/self-service/settings/flows?id={item['flow']['id']}", headers=JSON)
    assert settings.status_code == 200, settings.text
    assert 1060001 in message_ids(settings.json())


async def test_api_recovery_returns_a_session_token(h: Harness) -> None:
    await registered(h, "app@example.test")
    flow = await api_flow(h.client, "recovery")
    url = f"/.auth/self-service/recovery?flow={flow['id']}"
    r = await h.client.post(url, json={"method": "code", "email": "app@example.test"})
    assert r.status_code == 200 and r.json()["state"] == "sent_email"
    wrong = await h.client.post(url, json={"method": "code", "code": "000000x"})
    assert wrong.status_code == 200 and message_ids(wrong.json()) == [4060006]
    code = await mail_secret(h, "app@example.test")
    r = await h.client.post(url, json={"method": "code", "code": code})
    assert r.status_code == 200, r.text
    [token] = [
        c["ory_session_token"] for c in r.json()["continue_with"] if c["action"] == "set_ory_session_token"
    ]
    who = await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})
    assert who.status_code == 200 and who.json()["authenticator_assurance_level"] == "aal1"


async def test_too_many_codes_is_an_error(h: Harness) -> None:
    await registered(h, "brute@example.test")
    flow = await api_flow(h.client, "recovery")
    url = f"/.auth/self-service/recovery?flow={flow['id']}"
    await h.client.post(url, json={"method": "code", "email": "brute@example.test"})
    for _ in range(5):
        assert (await h.client.post(url, json={"method": "code", "code": "1"})).status_code == 200
    r = await h.client.post(url, json={"method": "code", "code": await mail_secret(h, "brute@example.test")})
    assert r.status_code == 400 and "too often" in r.json()["error"]["reason"]


async def test_recovery_init_with_a_session_is_refused(h: Harness) -> None:
    r = await register_api(h.client, "busy@example.test")
    token = r.json()["session_token"]
    r = await h.client.get("/.auth/self-service/recovery/api", headers={"X-Session-Token": token})
    assert r.status_code == 400 and r.json()["error"]["id"] == "session_already_available"


async def test_browser_submit_without_csrf_is_403(h: Harness) -> None:
    flow = await browser_flow(h.client, "recovery")
    r = await h.client.post(
        f"/.auth/self-service/recovery?flow={flow['id']}", json={"method": "code", "email": "x@example.test"}
    )
    assert r.status_code == 403 and r.json()["error"]["id"] == "security_csrf_violation"


async def test_recovery_disabled(harness_factory: HarnessFactory) -> None:
    h = await harness_factory()
    r = await h.client.get("/.auth/self-service/recovery/api")
    # Kratos: selfservice/flow/recovery/handler.go (a plain herodot.ErrBadRequest, no id)
    assert r.status_code == 400 and r.json()["error"] == {
        "code": 400,
        "status": "Bad Request",
        "message": "The request was malformed or contained invalid parameters",
        "reason": "Recovery is not allowed because it was disabled.",
        "request": r.json()["error"]["request"],
    }


async def test_fetch_and_ui_action(h: Harness) -> None:
    flow = await api_flow(h.client, "recovery")
    assert flow["ui"]["action"] == f"{PUBLIC}/self-service/recovery?flow={flow['id']}"
    r = await h.client.get(f"/.auth/self-service/recovery/flows?id={flow['id']}")
    assert r.status_code == 200 and r.json()["id"] == flow["id"]


async def test_recovery_does_not_skip_a_second_factor(h: Harness) -> None:
    from sidecar.identity.model import Credential

    r = await register_api(h.new_client(), "mfa@example.test")
    identity_id = __import__("uuid").UUID(r.json()["identity"]["id"])
    totp = Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"})
    await h.services.identity_store.save_credential(identity_id, totp)
    sent = await browser_sent(h.client, "mfa@example.test")
    code = await mail_secret(h, "mfa@example.test")
    body = {"method": "code", "code": code, "csrf_token": node_value(sent, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/recovery?flow={sent['id']}", data=body)
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"{PUBLIC}/self-service/login/browser?aal=aal2")
    who = await h.client.get("/.auth/sessions/whoami")
    assert who.status_code == 403 and who.json()["error"]["id"] == "session_aal2_required"
    settings = await h.client.get("/.auth/self-service/settings/browser", headers=JSON)
    assert settings.status_code == 403


async def test_recovery_on_redis(harness_factory: HarnessFactory, unique_prefix: str) -> None:
    h = await harness_factory(selfservice=RECOVERY, redis_prefix=unique_prefix)
    await registered(h, "redis@example.test")
    flow = await api_flow(h.client, "recovery")
    url = f"/.auth/self-service/recovery?flow={flow['id']}"
    await h.client.post(url, json={"method": "code", "email": "redis@example.test"})
    messages = await h.services.database.courier.list(page_size=10, recipient="redis@example.test")
    code = next(m for m in messages if m.template_type == "recovery_code_valid").body
    found = re.search(r"^(\d{6})$", code, re.M)
    assert found
    done = await h.client.post(url, json={"method": "code", "code": found.group(1)})
    assert done.status_code == 200 and done.json()["state"] == "passed_challenge"
    again = await h.client.post(url, json={"method": "code", "code": found.group(1)})
    assert again.status_code == 400 and message_ids(again.json()) == [4060001]


@pytest.mark.parametrize("revoke", [True, False], ids=["revoke_active_sessions", "no-hook"])
async def test_revoke_active_sessions_after_recovery(harness_factory: HarnessFactory, revoke: bool) -> None:
    """Kratos ``selfservice/hook/session_destroyer.go`` as a recovery after-hook
    (``selfServiceAfterRecoveryHooks``): whoever else was signed in is signed out."""
    hooks = [{"hook": "revoke_active_sessions"}] if revoke else []
    h = await harness_factory(
        selfservice={
            "flows": {
                "recovery": {"enabled": True, "after": {"hooks": hooks}},
                "verification": {"enabled": True},
            }
        }
    )
    registered_ = await register_api(h.new_client(), "stolen@example.test")
    old_token = registered_.json()["session_token"]
    flow = await api_flow(h.client, "recovery")
    url = f"/.auth/self-service/recovery?flow={flow['id']}"
    await h.client.post(url, json={"method": "code", "email": "stolen@example.test"})
    r = await h.client.post(url, json={"method": "code", "code": await mail_secret(h, "stolen@example.test")})
    [token] = [
        c["ory_session_token"] for c in r.json()["continue_with"] if c["action"] == "set_ory_session_token"
    ]
    old = await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": old_token})
    assert old.status_code == (401 if revoke else 200)
    new = await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})
    assert new.status_code == 200
