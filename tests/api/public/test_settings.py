"""The settings flow over HTTP: profile, password, privileged sessions, ownership, browser answers."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.public.conftest import PASSWORD, Harness, HarnessFactory
from tests.api.public.helpers import (
    JSON,
    browser_flow,
    login_api,
    login_browser,
    message_ids,
    node_value,
    register_api,
    register_browser,
)
from tests.api.public.mfa import has_node, mfa_selfservice, node, settings_api_flow, submit_settings, tok

NEW_PASSWORD = "another-Long-secret-phrase-77"


def _email() -> str:
    return f"set-{uuid.uuid4().hex[:10]}@example.test"


async def _user(h: Harness) -> tuple[str, str, str]:
    email = _email()
    r = await register_api(h.client, email)
    assert r.status_code == 200, r.text
    return email, str(r.json()["session_token"]), str(r.json()["identity"]["id"])


@pytest.fixture
async def h(harness_factory: HarnessFactory) -> Harness:
    return await harness_factory(
        selfservice=mfa_selfservice(
            settings={"after": {"password": {"hooks": [{"hook": "revoke_active_sessions"}]}}}
        )
    )


async def test_api_flow_shape(h: Harness) -> None:
    email, token, identity_id = await _user(h)
    flow = await settings_api_flow(h.client, token)
    assert flow["type"] == "api" and flow["state"] == "show_form"
    assert flow["identity"]["id"] == identity_id
    assert "metadata_admin" not in flow["identity"] and "credentials" not in flow["identity"]
    assert flow["ui"]["action"] == f"http://127.0.0.1:4433/.auth/self-service/settings?flow={flow['id']}"
    assert node_value(flow, "traits.email") == email
    assert not has_node(flow, "csrf_token")
    groups = [n["group"] for n in flow["ui"]["nodes"]]
    assert {"profile", "password", "totp", "lookup_secret"} <= set(groups)
    qr = node(flow, "totp_qr")
    assert qr["type"] == "img" and qr["attributes"]["src"].startswith("data:image/png;base64,")
    assert node(flow, "totp_secret_key")["attributes"]["text"]["id"] == 1050006
    r = await h.client.get(f"/.auth/self-service/settings/flows?id={flow['id']}", headers=tok(token))
    assert r.status_code == 200 and r.json()["id"] == flow["id"]
    assert "internal" not in r.json()


async def test_profile_update_and_mass_assignment(h: Harness) -> None:
    email, token, identity_id = await _user(h)
    flow = await settings_api_flow(h.client, token)
    body: dict[str, Any] = {
        "method": "profile",
        "traits": {"email": email, "name": {"first": "Ada", "last": "Lovelace"}},
        "metadata_admin": {"role": "admin"},
        "metadata_public": {"role": "admin"},
        "verifiable_addresses": [{"value": email, "verified": True, "via": "email", "status": "completed"}],
        "state": "inactive",
        "schema_id": "other",
        "credentials": {"password": {"config": {"password": "x"}}},
    }
    r = await submit_settings(h.client, flow["id"], token, body)
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "success"
    assert done["ui"]["messages"][0] == {
        "id": 1050001,
        "text": "Your changes have been saved!",
        "type": "success",
    }
    assert node_value(done, "traits.name.first") == "Ada"
    admin = (await h.admin.get(f"/admin/identities/{identity_id}")).json()
    assert admin["traits"]["name"] == {"first": "Ada", "last": "Lovelace"}
    assert admin["metadata_admin"] is None and admin["metadata_public"] is None
    assert admin["state"] == "active" and admin["schema_id"] == "default"
    assert admin["verifiable_addresses"][0]["verified"] is False
    assert (await login_api(h.client, email)).status_code == 200  # password untouched


async def test_profile_invalid_traits_show_the_flow(h: Harness) -> None:
    _, token, _ = await _user(h)
    flow = await settings_api_flow(h.client, token)
    r = await submit_settings(h.client, flow["id"], token, {"method": "profile", "traits": {"email": "nope"}})
    assert r.status_code == 400
    assert r.json()["state"] == "show_form"
    assert message_ids(r.json())
    r = await submit_settings(h.client, flow["id"], token, {"method": "profile", "traits": "x"})
    assert r.status_code == 400
    r = await submit_settings(h.client, flow["id"], token, {"method": "nothing"})
    assert r.status_code == 400
    assert 4010004 in message_ids(r.json())


async def test_changed_address_is_unverified(h: Harness) -> None:
    email, token, identity_id = await _user(h)
    current = (await h.admin.get(f"/admin/identities/{identity_id}")).json()
    put = {
        "schema_id": "default",
        "state": "active",
        "traits": current["traits"],
        "verifiable_addresses": [{"value": email, "verified": True, "via": "email", "status": "completed"}],
    }
    assert (await h.admin.put(f"/admin/identities/{identity_id}", json=put)).status_code == 200
    flow = await settings_api_flow(h.client, token)
    changed = _email()
    r = await submit_settings(
        h.client, flow["id"], token, {"method": "profile", "traits": {"email": changed}}
    )
    assert r.status_code == 200, r.text
    addresses = r.json()["identity"]["verifiable_addresses"]
    assert [(a["value"], a["verified"]) for a in addresses] == [(changed, False)]
    assert (await login_api(h.client, changed)).status_code == 200  # the identifier followed


async def test_password_change_revokes_other_sessions(h: Harness) -> None:
    email, token, _ = await _user(h)
    other = (await login_api(h.client, email)).json()["session_token"]
    flow = await settings_api_flow(h.client, token)
    r = await submit_settings(h.client, flow["id"], token, {"method": "password", "password": "short"})
    assert r.status_code == 400
    assert 4000032 in message_ids(r.json())
    r = await submit_settings(h.client, flow["id"], token, {"method": "password", "password": email})
    assert r.status_code == 400
    r = await submit_settings(h.client, flow["id"], token, {"method": "password", "password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "success"
    assert (await h.client.get("/.auth/sessions/whoami", headers=tok(other))).status_code == 401
    assert (await h.client.get("/.auth/sessions/whoami", headers=tok(token))).status_code == 200
    assert (await login_api(h.client, email)).status_code == 400
    assert (await login_api(h.client, email, NEW_PASSWORD)).status_code == 200


async def test_privileged_changes_need_a_recent_session(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(selfservice=mfa_selfservice(settings={"privileged_session_max_age": "1ms"}))
    email, token, _ = await _user(h)
    flow = await settings_api_flow(h.client, token)
    bodies: list[dict[str, Any]] = [
        {"method": "password", "password": NEW_PASSWORD},
        {"method": "profile", "traits": {"email": _email()}},
        {"method": "totp", "totp_code": "123456"},
        {"method": "lookup_secret", "lookup_secret_regenerate": True},
    ]
    for body in bodies:
        r = await submit_settings(h.client, flow["id"], token, body)
        assert r.status_code == 403, body
        error = r.json()
        assert error["error"]["id"] == "session_refresh_required"
        target = urlsplit(error["redirect_browser_to"])
        query = parse_qs(target.query)
        assert target.path == "/.auth/self-service/login/browser" and query["refresh"] == ["true"]
        # Kratos settings/error.go reauthenticate: the settings submit URL, for API flows too.
        assert query["return_to"] == [f"http://127.0.0.1:4433/.auth/self-service/settings?flow={flow['id']}"]
    # Other traits are no privileged change.
    body = {"method": "profile", "traits": {"email": email, "name": {"first": "Ada"}}}
    assert (await submit_settings(h.client, flow["id"], token, body)).status_code == 200


async def test_another_identitys_flow_is_refused(h: Harness) -> None:
    _, token_a, _ = await _user(h)
    _, token_b, _ = await _user(h)
    flow = await settings_api_flow(h.client, token_a)
    r = await h.client.get(f"/.auth/self-service/settings/flows?id={flow['id']}", headers=tok(token_b))
    assert r.status_code == 403 and r.json()["error"]["id"] == "security_identity_mismatch"
    body = {"method": "password", "password": NEW_PASSWORD}
    r = await submit_settings(h.client, flow["id"], token_b, body)
    assert r.status_code == 403 and r.json()["error"]["id"] == "security_identity_mismatch"


async def test_session_required(h: Harness) -> None:
    r = await h.client.get("/.auth/self-service/settings/api")
    assert r.status_code == 401 and r.json()["error"]["id"] == "session_inactive"
    r = await h.client.get("/.auth/self-service/settings/browser", headers=JSON)
    assert r.status_code == 401
    r = await h.client.get("/.auth/self-service/settings/browser")
    assert r.status_code == 303
    assert r.headers["location"].startswith(
        "http://127.0.0.1:4433/.auth/self-service/login/browser?return_to="
    )
    _, token, _ = await _user(h)
    flow = await settings_api_flow(h.client, token)
    r = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", json={"method": "profile"})
    assert r.status_code == 401


async def test_browser_flow_csrf_and_success_redirect(h: Harness) -> None:
    email = _email()
    assert (await register_browser(h.client, email)).status_code == 200
    r = await h.client.get("/.auth/self-service/settings/browser")
    assert r.status_code == 303
    assert r.headers["location"].startswith("http://127.0.0.1:4433/.auth/ui/settings?flow=")
    flow = await browser_flow(h.client, "settings")
    assert flow["type"] == "browser" and node_value(flow, "csrf_token")
    url = f"/.auth/self-service/settings?flow={flow['id']}"
    form = {"method": "profile", "traits.email": email, "traits.name.first": "Grace"}
    r = await h.client.post(url, data=form)
    assert r.status_code == 303  # no CSRF token: to the error page
    assert "/ui/error?id=" in r.headers["location"]
    r = await h.client.post(url, data={**form, "csrf_token": node_value(flow, "csrf_token")})
    assert r.status_code == 303
    assert r.headers["location"] == f"http://127.0.0.1:4433/.auth/ui/settings?flow={flow['id']}"
    fetched = (await h.client.get(f"/.auth/self-service/settings/flows?id={flow['id']}")).json()
    assert fetched["state"] == "success" and 1050001 in message_ids(fetched)
    assert node_value(fetched, "traits.name.first") == "Grace"
    # JSON request: 200 + flow. Another browser cannot read this flow (its CSRF cookie differs).
    r = await h.client.post(
        url,
        json={"method": "profile", "traits": {"email": email}, "csrf_token": node_value(flow, "csrf_token")},
    )
    assert r.status_code == 200 and r.json()["state"] == "success"
    stranger = h.new_client()
    assert (await login_browser(stranger, email)).status_code == 200
    r = await stranger.get(f"/.auth/self-service/settings/flows?id={flow['id']}")
    assert r.status_code == 403


async def test_browser_refresh_and_step_up_redirects(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(selfservice=mfa_selfservice(settings={"privileged_session_max_age": "1ms"}))
    email = _email()
    assert (await register_browser(h.client, email)).status_code == 200
    flow = await browser_flow(h.client, "settings")
    body = {"method": "password", "password": NEW_PASSWORD, "csrf_token": node_value(flow, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", data=body)
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(
        "http://127.0.0.1:4433/.auth/self-service/login/browser?refresh=true&return_to="
    )
    # The refresh login flow is offered and returns to the settings page.
    r = await h.client.get(location.removeprefix("http://127.0.0.1:4433"), headers=JSON)
    assert r.status_code == 200 and r.json()["refresh"] is True
    # Kratos settings/error.go: back to the submit URL, where the paused change resumes.
    assert r.json()["return_to"] == f"http://127.0.0.1:4433/.auth/self-service/settings?flow={flow['id']}"


async def test_browser_aal2_required_redirect(h: Harness) -> None:
    from tests.api.public.mfa import fresh_step, oathtool, totp_secret

    email = _email()
    assert (await register_browser(h.client, email)).status_code == 200
    flow = await browser_flow(h.client, "settings")
    secret = totp_secret(flow)
    fresh_step()
    body = {"method": "totp", "totp_code": oathtool(secret), "csrf_token": node_value(flow, "csrf_token")}
    r = await h.client.post(f"/.auth/self-service/settings?flow={flow['id']}", data=body, headers=JSON)
    assert r.status_code == 200, r.text
    fresh = h.new_client()
    r = await login_browser(fresh, email, PASSWORD, json_req=False)
    assert "aal=aal2" in r.headers["location"]
    r = await fresh.get("/.auth/self-service/settings/browser")
    assert r.status_code == 303
    assert r.headers["location"].startswith("http://127.0.0.1:4433/.auth/self-service/login/browser?aal=aal2")
    r = await fresh.get("/.auth/self-service/settings/browser", headers=JSON)
    assert r.status_code == 403 and r.json()["error"]["id"] == "session_aal2_required"
