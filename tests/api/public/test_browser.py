"""Browser flows over raw HTTP with a cookie jar: 303s, CSRF cookies, session cookies."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from sidecar.flows.store import FlowStore
from sidecar.identity.model import utcnow
from sidecar.security import csrf
from tests.api.public.conftest import PUBLIC, Harness, HarnessFactory
from tests.api.public.helpers import (
    JSON,
    browser_flow,
    login_browser,
    message_ids,
    node_value,
    register_browser,
)

CSRF_COOKIE = csrf.cookie_name(PUBLIC)


def _email() -> str:
    return f"b-{uuid.uuid4().hex[:8]}@example.test"


def _set_cookie(response: object, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):  # type: ignore[attr-defined]
        if value.startswith(name + "="):
            return str(value)
    raise AssertionError(f"no Set-Cookie for {name}")


@pytest.mark.parametrize("kind", ["login", "registration"])
async def test_init_redirects_to_the_ui_and_sets_the_csrf_cookie(harness: Harness, kind: str) -> None:
    r = await harness.client.get(f"/.auth/self-service/{kind}/browser")
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"{PUBLIC}/ui/{kind}?flow=")
    cookie = _set_cookie(r, CSRF_COOKIE)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # dev mode over http
    flow_id = r.headers["location"].split("flow=")[1]
    fetched = await harness.client.get(f"/.auth/self-service/{kind}/flows?id={flow_id}")
    assert fetched.status_code == 200
    assert fetched.headers["cache-control"].startswith("private, no-cache, no-store")
    assert fetched.json()["type"] == "browser"


async def test_cookies_are_secure_outside_dev_mode(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(dev=False)
    r = await h.client.get("/.auth/self-service/login/browser")
    assert "Secure" in _set_cookie(r, CSRF_COOKIE)


async def test_masked_token_differs_on_every_render(harness: Harness) -> None:
    flow = await browser_flow(harness.client, "login")
    again = (await harness.client.get(f"/.auth/self-service/login/flows?id={flow['id']}")).json()
    first, second = node_value(flow, "csrf_token"), node_value(again, "csrf_token")
    cookie = harness.client.cookies[CSRF_COOKIE]
    assert first != second and cookie not in (first, second)
    assert csrf.verify(cookie, first) and csrf.verify(cookie, second)


async def test_registration_then_login_plain_browser(harness: Harness) -> None:
    email = _email()
    r = await register_browser(harness.client, email, json_req=False)
    assert r.status_code == 303
    assert r.headers["location"] == "http://127.0.0.1:4433/"
    cookie = _set_cookie(r, "ory_kratos_session")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=" in cookie and "expires=" in cookie
    me = await harness.client.get("/.auth/sessions/whoami")
    assert me.status_code == 200 and me.json()["identity"]["traits"]["email"] == email

    other = harness.new_client()
    r = await login_browser(other, email, json_req=False, query="?return_to=http://127.0.0.1:4433/app/home")
    assert r.status_code == 303
    assert r.headers["location"] == "http://127.0.0.1:4433/app/home"
    assert other.cookies["ory_kratos_session"] != harness.client.cookies["ory_kratos_session"]
    await other.aclose()


async def test_spa_login_returns_session_json(harness: Harness) -> None:
    email = _email()
    await register_browser(harness.client, email)
    spa = harness.new_client()
    r = await login_browser(spa, email)
    assert r.status_code == 200
    body = r.json()
    assert "session_token" not in body
    assert body["session"]["identity"]["traits"]["email"] == email
    assert body["continue_with"][0]["action"] == "redirect_browser_to"
    assert spa.cookies["ory_kratos_session"].startswith("ory_st_")
    await spa.aclose()


async def test_content_type_json_alone_makes_a_json_request(harness: Harness) -> None:
    flow = await browser_flow(harness.client, "login")
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        json={"method": "password", "csrf_token": node_value(flow, "csrf_token"), "identifier": "x@y.z"},
    )
    assert r.status_code == 400
    assert message_ids(r.json()) == [4000002]


async def test_validation_error_redirects_back_to_the_ui(harness: Harness) -> None:
    flow = await browser_flow(harness.client, "login")
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        data={
            "method": "password",
            "csrf_token": node_value(flow, "csrf_token"),
            "identifier": "nobody@example.test",
            "password": "whatever-Password-1",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"{PUBLIC}/ui/login?flow={flow['id']}"
    shown = (await harness.client.get(f"/.auth/self-service/login/flows?id={flow['id']}")).json()
    assert message_ids(shown) == [4000006]
    assert node_value(shown, "identifier") == "nobody@example.test"
    with pytest.raises(KeyError):
        node_value(
            {"ui": {"nodes": [n for n in shown["ui"]["nodes"] if n["attributes"].get("value")]}}, "password"
        )


async def test_login_while_signed_in(harness: Harness) -> None:
    await register_browser(harness.client, _email())
    r = await harness.client.get("/.auth/self-service/login/browser")
    assert r.status_code == 303 and r.headers["location"] == "http://127.0.0.1:4433/"
    r = await harness.client.get("/.auth/self-service/login/browser", headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["id"] == "session_already_available"
    r = await harness.client.get("/.auth/self-service/registration/browser", headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["id"] == "session_already_available"


async def test_refresh_reauthenticates_the_same_session(harness: Harness) -> None:
    email = _email()
    await register_browser(harness.client, email)
    before = (await harness.client.get("/.auth/sessions/whoami")).json()
    r = await login_browser(harness.client, email, query="?refresh=true")
    assert r.status_code == 200, r.text
    after = (await harness.client.get("/.auth/sessions/whoami")).json()
    assert after["id"] == before["id"]
    assert after["authenticated_at"] > before["authenticated_at"]
    assert len(after["authentication_methods"]) == 2


async def _expire(harness: Harness, kind: str, flow_id: str) -> None:
    store = FlowStore(harness.services.kv)
    flow = await store.get(kind, uuid.UUID(flow_id))  # type: ignore[arg-type]
    assert flow is not None
    flow.expires_at = utcnow() - timedelta(minutes=5)
    await store.save(flow)


@pytest.mark.parametrize(("kind", "expired_id"), [("login", 4010001), ("registration", 4040001)])
async def test_expired_flow(harness: Harness, kind: str, expired_id: int) -> None:
    flow = await browser_flow(harness.client, kind)
    await _expire(harness, kind, flow["id"])
    body = {"method": "password", "csrf_token": node_value(flow, "csrf_token")}
    url = f"/.auth/self-service/{kind}?flow={flow['id']}"
    r = await harness.client.post(url, data=body)
    assert r.status_code == 303
    new_id = r.headers["location"].split("flow=")[1]
    assert new_id != flow["id"]
    fresh = (await harness.client.get(f"/.auth/self-service/{kind}/flows?id={new_id}")).json()
    assert message_ids(fresh) == [expired_id]
    r = await harness.client.post(url, data=body, headers=JSON)
    assert r.status_code == 410
    assert r.json()["error"]["id"] == "self_service_flow_expired" and r.json()["use_flow_id"]
    r = await harness.client.get(f"/.auth/self-service/{kind}/flows?id={flow['id']}")
    assert r.status_code == 410


async def test_browser_logout(harness: Harness) -> None:
    await register_browser(harness.client, _email())
    r = await harness.client.get("/.auth/self-service/logout/browser?return_to=http://127.0.0.1:4433/app/bye")
    assert r.status_code == 200
    made = r.json()
    assert made["logout_token"].startswith("ory_lo_")
    assert made["logout_url"].startswith(f"{PUBLIC}/self-service/logout?token=ory_lo_")

    stranger = harness.new_client()
    await register_browser(stranger, _email())
    r = await stranger.get(made["logout_url"], headers=JSON)
    assert r.status_code == 403  # the token belongs to another session
    await stranger.aclose()

    r = await harness.client.get(made["logout_url"])
    assert r.status_code == 303 and r.headers["location"] == "http://127.0.0.1:4433/app/bye"
    assert "ory_kratos_session" not in harness.client.cookies
    assert (await harness.client.get("/.auth/sessions/whoami")).status_code == 401
    assert (await harness.client.get("/.auth/self-service/logout/browser")).status_code == 401


async def test_browser_flows_on_redis(
    harness_factory: HarnessFactory, redis_url: str, unique_prefix: str
) -> None:
    h = await harness_factory(redis_prefix=unique_prefix)
    email = _email()
    assert (await register_browser(h.client, email)).status_code == 200
    other = h.new_client()
    assert (await login_browser(other, email)).status_code == 200
    assert (await other.get("/.auth/sessions/whoami")).json()["identity"]["traits"]["email"] == email
    await other.aclose()


@pytest.mark.parametrize("mode", ["browser", "api", "spa"])
@pytest.mark.parametrize("right", [True, False])
async def test_login_answer_per_client_kind(harness: Harness, mode: str, right: bool) -> None:
    from tests.api.public.helpers import login_api, register_api

    email = _email()
    assert (await register_api(harness.client, email)).status_code == 200
    client = harness.new_client()
    password = "correct-Horse-battery-staple-42" if right else "wrong-Password-7"
    if mode == "api":
        r = await login_api(client, email, password)
    else:
        r = await login_browser(client, email, password, json_req=mode == "spa")
    if mode == "browser":
        assert r.status_code == 303
        if right:
            assert (
                r.headers["location"] == "http://127.0.0.1:4433/" and "ory_kratos_session" in client.cookies
            )
        else:
            assert r.headers["location"].startswith(f"{PUBLIC}/ui/login?flow=")
    elif right:
        assert r.status_code == 200 and r.json()["session"]["identity"]["traits"]["email"] == email
        assert ("session_token" in r.json()) is (mode == "api")
        assert ("ory_kratos_session" in client.cookies) is (mode == "spa")
    else:
        assert r.status_code == 400 and message_ids(r.json()) == [4000006]
    assert r.headers["cache-control"].startswith("private, no-cache, no-store")
    await client.aclose()
