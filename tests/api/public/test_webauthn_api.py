"""WebAuthn and passkeys over HTTP with a software authenticator: the happy paths, and the
attacks a relying party must refuse (wrong origin, wrong RP id, replayed challenge, cloned
authenticator, unknown credential id)."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest

from tests.api.public.conftest import Harness, HarnessFactory
from tests.api.public.helpers import api_flow, login_api, message_ids, register_api
from tests.api.public.mfa import aal2_login_flow, node, settings_api_flow, submit_login, submit_settings, tok
from tests.strategies.webauthn_device import SoftAuthenticator

ALLOWED = ["http://127.0.0.1:4433/app"]


def _methods(passwordless: bool = False) -> dict[str, Any]:
    return {
        "webauthn": {
            "enabled": True,
            "config": {"passwordless": passwordless, "rp": {"display_name": "Test"}},
        },
        "passkey": {"enabled": True, "config": {"rp": {"display_name": "Test"}}},
    }


@pytest.fixture(params=["sql", "redis"])
async def h(request: pytest.FixtureRequest, harness_factory: HarnessFactory, unique_prefix: str) -> Harness:
    prefix = unique_prefix if request.param == "redis" else None
    return await harness_factory(
        redis_prefix=prefix, selfservice={"methods": _methods(), "allowed_return_urls": ALLOWED}
    )


def _email() -> str:
    return f"key-{uuid.uuid4().hex[:10]}@example.test"


def _value(flow: dict[str, Any], name: str) -> Any:
    return node(flow, name)["attributes"]["value"]


async def _passkey_signup(h: Harness, device: SoftAuthenticator, email: str) -> httpx.Response:
    flow = await api_flow(h.client, "registration")
    data = json.loads(_value(flow, "passkey_create_data"))
    assert data["displayNameFieldName"] == "traits.email"
    options = data["credentialOptions"]
    assert options["publicKey"]["authenticatorSelection"]["residentKey"] == "required"
    body = {"method": "passkey", "traits": {"email": email}, "passkey_register": device.create(options)}
    return await h.client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)


async def _passkey_login(h: Harness, answer: Any) -> httpx.Response:
    flow = await api_flow(h.client, "login")
    options = json.loads(_value(flow, "passkey_challenge"))
    assert options["publicKey"]["allowCredentials"] == []
    body = {"method": "passkey", "passkey_login": answer(options)}
    return await h.client.post(f"/.auth/self-service/login?flow={flow['id']}", json=body)


async def test_passkey_sign_up_and_sign_in_without_identifier(h: Harness) -> None:
    device, email = SoftAuthenticator(), _email()
    r = await _passkey_signup(h, device, email)
    assert r.status_code == 200, r.text
    identity_id = r.json()["identity"]["id"]
    r = await _passkey_login(h, device.get)
    assert r.status_code == 200, r.text
    session = r.json()["session"]
    assert session["identity"]["id"] == identity_id
    assert session["authentication_methods"][-1]["method"] == "passkey"
    assert session["authenticator_assurance_level"] == "aal1"
    # The admin API lists the key; the counter went up.
    r = await h.admin.get(f"/admin/identities/{identity_id}?include_credential=passkey")
    credential = r.json()["credentials"]["passkey"]
    assert credential["config"]["credentials"][0]["authenticator"]["sign_count"] == 1
    assert (
        f"key:{base64.urlsafe_b64encode(device.credential_id).decode().rstrip('=')}"
        in (credential["identifiers"])
    )
    # The passkey is the only way in: the admin API will not delete it.
    r = await h.admin.delete(f"/admin/identities/{identity_id}/credentials/passkey")
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("case", "answer"),
    [
        pytest.param("origin", lambda d, o: d.get(o, origin="https://evil.example"), id="wrong-origin"),
        pytest.param("rp", lambda d, o: d.get(o, rp_id="evil.example"), id="wrong-rp-id"),
        pytest.param("clone", lambda d, o: d.get(o, counter=0), id="cloned-counter-backwards"),
        pytest.param("unknown", lambda d, o: d.get(o, credential_id=b"\x01" * 32), id="unknown-credential"),
        pytest.param("stranger", lambda d, o: SoftAuthenticator().get(o), id="unregistered-device"),
    ],
)
async def test_passkey_login_refuses(h: Harness, case: str, answer: Any) -> None:
    device = SoftAuthenticator()
    assert (await _passkey_signup(h, device, _email())).status_code == 200
    assert (await _passkey_login(h, device.get)).status_code == 200  # counter now 1
    r = await _passkey_login(h, lambda o: answer(device, o))
    assert r.status_code == 400, r.text
    assert 4000006 in message_ids(r.json())
    assert "session_token" not in r.json()


async def test_passkey_challenge_is_single_use(h: Harness) -> None:
    device = SoftAuthenticator()
    assert (await _passkey_signup(h, device, _email())).status_code == 200
    flow = await api_flow(h.client, "login")
    answer = device.get(json.loads(_value(flow, "passkey_challenge")))
    url = f"/.auth/self-service/login?flow={flow['id']}"
    # A wrong submission spends the challenge too: the same good answer afterwards is refused.
    r = await h.client.post(url, json={"method": "passkey", "passkey_login": answer.replace('"', "'", 1)})
    assert r.status_code == 400
    r = await h.client.post(url, json={"method": "passkey", "passkey_login": answer})
    assert r.status_code == 400, r.text
    assert _value(r.json(), "passkey_challenge") != _value(flow, "passkey_challenge")
    # Replayed into a new flow, an answer signed over the old challenge is refused.
    r = await _passkey_login(h, lambda o: answer)
    assert r.status_code == 400
    assert 4000006 in message_ids(r.json())


async def test_passkey_registration_refuses_wrong_origin_and_duplicate_key(h: Harness) -> None:
    device = SoftAuthenticator(origin="https://evil.example")
    r = await _passkey_signup(h, device, _email())
    assert r.status_code == 400
    assert 4000001 in message_ids(r.json())
    device.origin = "http://127.0.0.1:4433"
    assert (await _passkey_signup(h, device, _email())).status_code == 200
    # The same credential id for another account: refused, and no half-made identity is left.
    email = _email()
    r = await _passkey_signup(h, device, email)
    assert r.status_code == 400
    r = await h.admin.get("/admin/identities", params={"credentials_identifier": email})
    assert r.json() == []


async def test_a_refused_passkey_registration_gets_a_fresh_challenge_on_the_same_flow(h: Harness) -> None:
    flow = await api_flow(h.client, "registration")
    first = json.loads(_value(flow, "passkey_create_data"))["credentialOptions"]
    email, device = _email(), SoftAuthenticator(origin="https://evil.example")
    body = {"method": "passkey", "traits": {"email": email}, "passkey_register": device.create(first)}
    refused = await h.client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)
    assert refused.status_code == 400 and 4000001 in message_ids(refused.json())
    # The spent challenge is replaced on the flow shown again; the retry with it succeeds.
    fresh = json.loads(_value(refused.json(), "passkey_create_data"))["credentialOptions"]
    assert fresh["publicKey"]["challenge"] != first["publicKey"]["challenge"]
    device.origin = "http://127.0.0.1:4433"
    body["passkey_register"] = device.create(fresh)
    done = await h.client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)
    assert done.status_code == 200, done.text


async def _enrol_key(h: Harness, token: str, device: SoftAuthenticator, name: str = "yubi") -> dict[str, Any]:
    flow = await settings_api_flow(h.client, token)
    options = json.loads(_value(flow, "webauthn_register_trigger"))
    trigger = node(flow, "webauthn_register_trigger")["attributes"]
    assert trigger["onclickTrigger"] == "oryWebAuthnRegistration"
    body = {
        "method": "webauthn",
        "webauthn_register": device.create(options),
        "webauthn_register_displayname": name,
    }
    r = await submit_settings(h.client, flow["id"], token, body)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "success"
    result: dict[str, Any] = r.json()
    return result


async def test_security_key_as_second_factor(h: Harness) -> None:
    email = _email()
    r = await register_api(h.client, email)
    token = r.json()["session_token"]
    identity_id = r.json()["identity"]["id"]
    device = SoftAuthenticator()
    flow = await _enrol_key(h, token, device)
    assert any(n["attributes"].get("name") == "webauthn_remove" for n in flow["ui"]["nodes"])
    # A fresh password login is aal1 and must step up; the key lifts it to aal2.
    r = await login_api(h.client, email)
    token = r.json()["session_token"]
    who = await h.client.get("/.auth/sessions/whoami", headers=tok(token))
    assert who.status_code == 403 and who.json()["error"]["id"] == "session_aal2_required"
    flow = await aal2_login_flow(h.client, token)
    assert node(flow, "webauthn_script")["type"] == "script"
    options = json.loads(_value(flow, "webauthn_login_trigger"))
    allowed = [c["id"] for c in options["publicKey"]["allowCredentials"]]
    assert allowed == [base64.urlsafe_b64encode(device.credential_id).decode().rstrip("=")]
    body = {"method": "webauthn", "webauthn_login": device.get(options)}
    r = await submit_login(h.client, flow["id"], token, body)
    assert r.status_code == 200, r.text
    assert r.json()["session"]["authenticator_assurance_level"] == "aal2"
    # A cloned key (counter going backwards) is refused on the next step-up.
    r = await login_api(h.client, email)
    token = r.json()["session_token"]
    flow = await aal2_login_flow(h.client, token)
    options = json.loads(_value(flow, "webauthn_login_trigger"))
    r = await submit_login(
        h.client, flow["id"], token, {"method": "webauthn", "webauthn_login": device.get(options, counter=1)}
    )
    assert r.status_code == 400
    # The admin API shows and deletes the key.
    r = await h.admin.get(f"/admin/identities/{identity_id}?include_credential=webauthn")
    keys = r.json()["credentials"]["webauthn"]["config"]["credentials"]
    assert [k["display_name"] for k in keys] == ["yubi"]
    assert keys[0]["is_passwordless"] is False
    r = await h.admin.delete(f"/admin/identities/{identity_id}/credentials/webauthn")
    assert r.status_code == 204
    r = await h.admin.get(f"/admin/identities/{identity_id}?include_credential=webauthn")
    assert "webauthn" not in r.json().get("credentials", {})


async def test_security_key_wrong_rp_and_removal(h: Harness) -> None:
    r = await register_api(h.client, _email())
    token = r.json()["session_token"]
    flow = await settings_api_flow(h.client, token)
    options = json.loads(_value(flow, "webauthn_register_trigger"))
    body = {
        "method": "webauthn",
        "webauthn_register": SoftAuthenticator().create(options, rp_id="evil.example"),
    }
    r = await submit_settings(h.client, flow["id"], token, body)
    assert r.status_code == 400
    assert 4000001 in message_ids(r.json())
    device = SoftAuthenticator()
    flow = await _enrol_key(h, token, device)
    key_hex = device.credential_id.hex()
    assert _value(flow, "webauthn_remove") == key_hex
    r = await submit_settings(h.client, flow["id"], token, {"method": "webauthn", "webauthn_remove": key_hex})
    assert r.status_code == 200, r.text
    assert not any(n["attributes"].get("name") == "webauthn_remove" for n in r.json()["ui"]["nodes"])


async def test_passwordless_webauthn_two_steps(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(
        selfservice={"methods": _methods(passwordless=True), "allowed_return_urls": ALLOWED}
    )
    email = _email()
    flow = await api_flow(h.client, "registration")
    device = SoftAuthenticator()
    body = {
        "method": "webauthn",
        "traits": {"email": email},
        "webauthn_register": device.create(json.loads(_value(flow, "webauthn_register_trigger"))),
    }
    r = await h.client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)
    assert r.status_code == 200, r.text
    flow = await api_flow(h.client, "login")
    url = f"/.auth/self-service/login?flow={flow['id']}"
    r = await h.client.post(url, json={"method": "webauthn", "identifier": "nobody@example.test"})
    assert r.status_code == 400 and 4000015 in message_ids(r.json())
    r = await h.client.post(url, json={"method": "webauthn", "identifier": email})
    assert r.status_code == 200, r.text
    options = json.loads(_value(r.json(), "webauthn_login_trigger"))
    assert len(options["publicKey"]["allowCredentials"]) == 1
    r = await h.client.post(
        url, json={"method": "webauthn", "identifier": email, "webauthn_login": device.get(options)}
    )
    assert r.status_code == 200, r.text
    assert r.json()["session"]["authentication_methods"][0]["method"] == "webauthn"


async def test_webauthn_js_is_served_with_its_integrity(h: Harness) -> None:
    r = await h.client.get("/.auth/.well-known/ory/webauthn.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    for helper in (
        "oryWebAuthnRegistration",
        "oryWebAuthnLogin",
        "oryPasskeyLogin",
        "oryPasskeyLoginAutocompleteInit",
        "oryPasskeyRegistration",
        "oryPasskeySettingsRegistration",
    ):
        assert helper in r.text
    flow = await api_flow(h.client, "login")
    script = node(flow, "webauthn_script")["attributes"]
    assert script["src"] == "http://127.0.0.1:4433/.auth/.well-known/ory/webauthn.js"
    digest = base64.b64encode(hashlib.sha512(r.content).digest()).decode()
    assert script["integrity"] == f"sha512-{digest}"
