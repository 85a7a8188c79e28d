"""``/self-service/verification/*`` over HTTP (in process), plus the registration and login hooks."""

from __future__ import annotations

import re

import pytest

from tests.api.public.conftest import PUBLIC, Harness, HarnessFactory
from tests.api.public.helpers import (
    JSON,
    api_flow,
    browser_flow,
    login_api,
    login_browser,
    message_ids,
    node_value,
    register_api,
    register_browser,
)

VERIFY = {"flows": {"verification": {"enabled": True}}}


async def mail_to(h: Harness, email: str) -> str:
    messages = await h.services.database.courier.list(page_size=10, recipient=email)
    assert messages, f"no mail to {email}"
    return str(messages[0].body)


@pytest.fixture
async def h(harness_factory: HarnessFactory) -> Harness:
    return await harness_factory(selfservice=VERIFY)


async def test_registration_continues_with_verification(h: Harness) -> None:
    r = await register_api(h.client, "reg@example.test")
    assert r.status_code == 200, r.text
    items = [c for c in r.json()["continue_with"] if c["action"] == "show_verification_ui"]
    assert len(items) == 1 and items[0]["flow"]["verifiable_address"] == "reg@example.test"
    code = re.search(r"^(\d{6})$", await mail_to(h, "reg@example.test"), re.M)
    assert code
    url = f"/.auth/self-service/verification?flow={items[0]['flow']['id']}"
    r = await h.client.post(url, json={"method": "code", "code": code.group(1)})
    assert r.status_code == 200 and r.json()["state"] == "passed_challenge"
    assert message_ids(r.json()) == [1080002]


async def test_mail_link_lands_as_get_in_a_fresh_browser(h: Harness) -> None:
    r = await register_browser(h.client, "link@example.test")
    assert r.status_code == 200, r.text
    [item] = [c for c in r.json()["continue_with"] if c["action"] == "show_verification_ui"]
    assert item["flow"]["url"] == f"{PUBLIC}/ui/verification?flow={item['flow']['id']}"
    link = re.search(r"(http://\S+/self-service/verification\?\S+)", await mail_to(h, "link@example.test"))
    assert link
    fresh = h.new_client()
    r = await fresh.get(link.group(1).replace("http://127.0.0.1:4433", ""))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == item["flow"]["url"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "ory_kratos_session" not in r.headers.get("set-cookie", "")  # verification signs nobody in
    shown = await fresh.get(f"/.auth/self-service/verification/flows?id={item['flow']['id']}")
    assert shown.status_code == 200 and shown.json()["state"] == "passed_challenge"
    who = await fresh.get("/.auth/sessions/whoami")
    assert who.status_code == 401


async def test_browser_verification_by_form(h: Harness) -> None:
    await register_api(h.new_client(), "form@example.test")
    flow = await browser_flow(h.client, "verification")
    body = {"method": "code", "email": "form@example.test", "csrf_token": node_value(flow, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/verification?flow={flow['id']}", data=body)
    assert r.status_code == 303 and r.headers["location"].endswith(f"/ui/verification?flow={flow['id']}")
    r = await h.client.get(f"/.auth/self-service/verification/flows?id={flow['id']}")
    assert r.json()["state"] == "sent_email" and message_ids(r.json()) == [1080003]


async def test_login_hook_require_verified_address(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(
        selfservice={
            "flows": {
                "verification": {"enabled": True},
                "login": {"after": {"hooks": [{"hook": "require_verified_address"}]}},
            }
        }
    )
    await register_api(h.new_client(), "gate@example.test")
    r = await login_api(h.client, "gate@example.test")
    assert r.status_code == 400 and r.json()["error"]["id"] == "session_verified_address_required"
    code = re.search(r"^(\d{6})$", await mail_to(h, "gate@example.test"), re.M)
    assert code
    flow = await api_flow(h.client, "verification")
    url = f"/.auth/self-service/verification?flow={flow['id']}"
    await h.client.post(url, json={"method": "code", "email": "gate@example.test"})
    messages = await h.services.database.courier.list(page_size=10, recipient="gate@example.test")
    code = re.search(r"^(\d{6})$", messages[0].body, re.M)
    assert code
    r = await h.client.post(url, json={"method": "code", "code": code.group(1)})
    assert r.json()["state"] == "passed_challenge"
    r = await login_api(h.client, "gate@example.test")
    assert r.status_code == 200, r.text


async def test_verification_disabled(harness_factory: HarnessFactory) -> None:
    h = await harness_factory()
    r = await h.client.get("/.auth/self-service/verification/browser", headers=JSON)
    # Kratos: selfservice/flow/verification/handler.go (a plain herodot.ErrBadRequest, no id)
    error = r.json()["error"]
    assert r.status_code == 400 and "id" not in error
    assert error["reason"] == "Verification is not allowed because it was disabled."


@pytest.mark.parametrize("show", [False, True], ids=["verification", "verification+show_verification_ui"])
async def test_login_hooks_verification_and_show_verification_ui(
    harness_factory: HarnessFactory, show: bool
) -> None:
    """Kratos ``selfservice/hook/verification.go`` (ExecuteLoginPostHook, aal1 only) and
    ``show_verification_ui.go`` as login after-hooks: an unverified address gets a new
    verification message and flow; the browser is sent to it when ``show_verification_ui`` is on."""
    hooks = [{"hook": "verification"}] + ([{"hook": "show_verification_ui"}] if show else [])
    h = await harness_factory(
        selfservice={"flows": {"verification": {"enabled": True}, "login": {"after": {"hooks": hooks}}}}
    )
    email = f"login-verify-{int(show)}@example.test"
    assert (await register_api(h.new_client(), email)).status_code == 200
    before = len(await h.services.database.courier.list(page_size=10, recipient=email))
    r = await login_api(h.new_client(), email)
    assert r.status_code == 200, r.text
    [item] = [c for c in r.json()["continue_with"] if c["action"] == "show_verification_ui"]
    assert item["flow"]["verifiable_address"] == email
    assert len(await h.services.database.courier.list(page_size=10, recipient=email)) == before + 1

    browser = h.new_client()
    done = await login_browser(browser, email)
    assert done.status_code == 200, done.text
    actions = {c["action"]: c for c in done.json()["continue_with"]}
    assert "show_verification_ui" in actions
    target = actions["redirect_browser_to"]["redirect_browser_to"]
    assert target.startswith(f"{PUBLIC}/ui/verification?flow=") == show
