"""The security battery: CSRF, flow binding, return_to, fixation, brute force, hostile input."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sidecar.security import csrf
from tests.api.public.conftest import PASSWORD, PUBLIC, Harness, HarnessFactory
from tests.api.public.helpers import (
    JSON,
    api_flow,
    browser_flow,
    login_api,
    message_ids,
    node_value,
    register_api,
    register_browser,
)


def _email() -> str:
    return f"s-{uuid.uuid4().hex[:8]}@example.test"


async def _identity_count(h: Harness) -> int:
    return int(await h.services.identity_store.count())


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(None, id="missing"),
        pytest.param("forged", id="garbage"),
        pytest.param(csrf.mask(csrf.new_token()), id="masked-other-token"),
    ],
)
async def test_csrf_violation_writes_nothing(harness: Harness, token: str | None) -> None:
    flow = await browser_flow(harness.client, "registration")
    body = {"method": "password", "traits.email": _email(), "password": PASSWORD}
    if token is not None:
        body["csrf_token"] = token
    before = await _identity_count(harness)
    r = await harness.client.post(
        f"/.auth/self-service/registration?flow={flow['id']}", data=body, headers=JSON
    )
    assert r.status_code == 403
    assert r.json()["error"]["id"] == "security_csrf_violation"
    assert await _identity_count(harness) == before
    assert "ory_kratos_session" not in harness.client.cookies


async def test_csrf_violation_of_a_plain_browser_goes_to_the_error_ui(harness: Harness) -> None:
    flow = await browser_flow(harness.client, "login")
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        data={"method": "password", "identifier": "a@b.c", "password": PASSWORD},
    )
    assert r.status_code == 303 and r.headers["location"].startswith(f"{PUBLIC}/ui/error?id=")
    error_id = r.headers["location"].split("id=")[1]
    stored = (await harness.client.get(f"/.auth/self-service/errors?id={error_id}")).json()
    assert stored["error"]["id"] == "security_csrf_violation" and stored["error"]["code"] == 403


async def test_header_token_is_accepted(harness: Harness) -> None:
    flow = await browser_flow(harness.client, "registration")
    r = await harness.client.post(
        f"/.auth/self-service/registration?flow={flow['id']}",
        json={"method": "password", "traits": {"email": _email()}, "password": PASSWORD},
        headers={"X-CSRF-Token": node_value(flow, "csrf_token")},
    )
    assert r.status_code == 200, r.text


async def test_flow_of_another_browser_is_refused(harness: Harness) -> None:
    victim_flow = await browser_flow(harness.client, "login")
    attacker = harness.new_client()
    own = await browser_flow(attacker, "login")
    r = await attacker.get(f"/.auth/self-service/login/flows?id={victim_flow['id']}")
    assert r.status_code == 403 and r.json()["error"]["id"] == "security_csrf_violation"
    r = await attacker.post(
        f"/.auth/self-service/login?flow={victim_flow['id']}",
        json={
            "method": "password",
            "csrf_token": node_value(own, "csrf_token"),
            "identifier": "a",
            "password": "b",
        },
    )
    assert r.status_code == 403
    await attacker.aclose()


@pytest.mark.parametrize(
    "return_to",
    [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/app",
        "http://127.0.0.1:4433@evil.example/app",
        "http://user@127.0.0.1:4433/app",
        "http://127.0.0.1:4433.evil.example/app",
        "http://127.0.0.1:4434/app",
        "https://127.0.0.1:4433/app",
        "http://127.0.0.1:4433/app/../admin",
        "http://127.0.0.1:4433/application",
        "javascript:alert(1)",
        "http://127.0.0.1:4433/app\\@evil.example",
        "http://127.0.0.1:4433/app%0d%0aSet-Cookie:x=1",
        "\thttps://evil.example",
    ],
)
@pytest.mark.parametrize("kind", ["login", "registration"])
async def test_return_to_elsewhere_is_forbidden(harness: Harness, kind: str, return_to: str) -> None:
    r = await harness.client.get(
        f"/.auth/self-service/{kind}/browser", params={"return_to": return_to}, headers=JSON
    )
    if r.status_code == 200:
        pytest.fail(f"{return_to!r} was accepted as {r.json().get('return_to')!r}")
    assert r.status_code == 400
    assert r.json()["error"]["id"] == "self_service_flow_return_to_forbidden"


@pytest.mark.parametrize(
    ("return_to", "stored"),
    [
        ("http://127.0.0.1:4433/app/x?y=1", "http://127.0.0.1:4433/app/x?y=1"),
        ("/app/dashboard", "http://127.0.0.1:4433/app/dashboard"),
        ("https://app.example.test/deep", "https://app.example.test/deep"),
        (f"{PUBLIC}/ui/welcome", f"{PUBLIC}/ui/welcome"),
    ],
)
async def test_allowed_return_to(harness: Harness, return_to: str, stored: str) -> None:
    r = await harness.client.get(
        "/.auth/self-service/login/browser", params={"return_to": return_to}, headers=JSON
    )
    assert r.status_code == 200
    assert r.json()["return_to"] == stored


async def test_planted_session_cookie_never_authenticates(harness: Harness) -> None:
    planted = "ory_st_" + "A" * 32
    harness.client.cookies.set("ory_kratos_session", planted, domain="127.0.0.1")
    assert (await harness.client.get("/.auth/sessions/whoami")).status_code == 401
    email = _email()
    r = await register_browser(harness.client, email)
    assert r.status_code == 200
    issued = harness.client.cookies["ory_kratos_session"]
    assert issued != planted
    victim_view = harness.new_client()
    victim_view.cookies.set("ory_kratos_session", planted, domain="127.0.0.1")
    assert (await victim_view.get("/.auth/sessions/whoami")).status_code == 401
    await victim_view.aclose()


async def test_parallel_wrong_passwords_are_all_counted(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(
        security={"rate_limit": {"free_failures": 10, "per_ip": 1000, "initial_delay": "60s"}}
    )
    email = _email()
    assert (await register_api(h.client, email)).status_code == 200
    results = await asyncio.gather(*(login_api(h.client, email, f"wrong-Password-{i}") for i in range(30)))
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(400) == 10 and statuses.count(429) == 20
    limited = next(r for r in results if r.status_code == 429)
    assert int(limited.headers["retry-after"]) > 0
    assert message_ids(limited.json()) == [4000429]
    # The right password during the delay gets the same answer.
    right = await login_api(h.client, email, PASSWORD)
    assert right.status_code == 429 and message_ids(right.json()) == [4000429]
    assert "session_token" not in right.json()


async def test_per_ip_limit(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(security={"rate_limit": {"per_ip": 3, "initial_delay": "60s"}})
    codes = [(await login_api(h.client, _email(), "wrong-Password-1")).status_code for _ in range(4)]
    assert codes == [400, 400, 400, 429]


async def test_disabled_rate_limit(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(security={"rate_limit": {"enabled": False, "free_failures": 1, "per_ip": 1}})
    codes = [(await login_api(h.client, "x@example.test", "wrong-Password-1")).status_code for _ in range(3)]
    assert codes == [400, 400, 400]


async def test_oversized_password(harness: Harness) -> None:
    r = await register_api(harness.client, _email(), "Aa1-" * 300)
    assert r.status_code == 400
    assert message_ids(r.json()) == [4000033]
    r = await login_api(harness.client, "someone@example.test", "x" * 100_000)
    assert r.status_code == 400 and message_ids(r.json()) == [4000006]


async def test_body_over_the_limit_is_413(harness: Harness) -> None:
    flow = await api_flow(harness.client, "login")
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        json={"method": "password", "identifier": "a", "password": "x" * 2_000_000},
    )
    assert r.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        {"method": "password", "password": PASSWORD, "traits": {"email": "nul\x00@example.test"}},
        {"method": "password", "password": "pass\x00word-Long-42", "traits": {"email": "n@example.test"}},
        {"method": "password\x00", "password": PASSWORD, "traits": {"email": "n@example.test"}},
    ],
)
async def test_nul_bytes_in_registration(harness: Harness, body: dict[str, object]) -> None:
    flow = await api_flow(harness.client, "registration")
    r = await harness.client.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)
    assert r.status_code == 400
    assert message_ids(r.json()) == [4000001]
    assert await _identity_count(harness) == 0


@pytest.mark.parametrize("field", ["identifier", "password"])
async def test_nul_bytes_in_login_form(harness: Harness, field: str) -> None:
    flow = await browser_flow(harness.client, "login")
    data = {
        "method": "password",
        "csrf_token": node_value(flow, "csrf_token"),
        "identifier": "a@b.c",
        "password": PASSWORD,
    }
    data[field] = data[field] + "\x00"
    r = await harness.client.post(f"/.auth/self-service/login?flow={flow['id']}", data=data, headers=JSON)
    assert r.status_code == 400 and message_ids(r.json()) == [4000001]


async def test_mass_assignment_through_registration_is_ignored(harness: Harness) -> None:
    email = _email()
    flow = await api_flow(harness.client, "registration")
    r = await harness.client.post(
        f"/.auth/self-service/registration?flow={flow['id']}",
        json={
            "method": "password",
            "password": PASSWORD,
            "traits": {"email": email},
            "metadata_admin": {"role": "admin"},
            "metadata_public": {"role": "admin"},
            "verifiable_addresses": [
                {"value": email, "verified": True, "via": "email", "status": "completed"}
            ],
            "state": "inactive",
            "schema_id": "other",
            "id": str(uuid.uuid4()),
            "credentials": {"password": {"config": {"hashed_password": "$2a$12$x"}}},
        },
    )
    assert r.status_code == 200, r.text
    stored = await harness.services.identity_store.get(uuid.UUID(r.json()["identity"]["id"]))
    assert stored is not None
    assert stored.metadata_admin is None and stored.metadata_public is None
    assert stored.state == "active" and stored.schema_id == "default"
    assert str(stored.id) == r.json()["identity"]["id"] != r.json().get("id")
    assert all(not a.verified for a in stored.verifiable_addresses)
    assert "metadata_admin" not in r.json()["identity"] and "credentials" not in r.json()["identity"]


async def test_mass_assignment_inside_traits_is_refused(harness: Harness) -> None:
    r = await harness.client.post(
        f"/.auth/self-service/registration?flow={(await api_flow(harness.client, 'registration'))['id']}",
        json={
            "method": "password",
            "password": PASSWORD,
            "traits": {"email": _email(), "metadata_admin": {"a": 1}},
        },
    )
    assert r.status_code == 400
    assert await _identity_count(harness) == 0


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Cookie": "something=1"}])
async def test_api_flow_with_browser_markers_is_400(harness: Harness, headers: dict[str, str]) -> None:
    flow = await api_flow(harness.client, "login")
    client = harness.new_client()
    r = await client.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        json={"method": "password", "identifier": "a@b.c", "password": PASSWORD},
        headers=headers,
    )
    assert r.status_code == 400 and "error" in r.json()
    await client.aclose()


async def test_unknown_method_and_flow(harness: Harness) -> None:
    flow = await api_flow(harness.client, "login")
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={flow['id']}", json={"method": "telepathy"}
    )
    assert r.status_code == 400 and message_ids(r.json()) == [4010002]
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={uuid.uuid4()}", json={"method": "password"}
    )
    assert r.status_code == 404
    r = await harness.client.post("/.auth/self-service/login?flow=not-a-uuid", json={"method": "password"})
    assert r.status_code == 404


async def test_completed_flow_cannot_be_replayed(harness: Harness) -> None:
    email = _email()
    await register_api(harness.client, email)
    flow = await api_flow(harness.client, "login")
    body = {"method": "password", "identifier": email, "password": PASSWORD}
    url = f"/.auth/self-service/login?flow={flow['id']}"
    assert (await harness.client.post(url, json=body)).status_code == 200
    again = await harness.client.post(url, json=body)
    assert again.status_code == 400 and message_ids(again.json()) == [4010007]


async def test_malformed_bodies_are_4xx(harness: Harness) -> None:
    flow = await api_flow(harness.client, "login")
    url = f"/.auth/self-service/login?flow={flow['id']}"
    for content, ctype in [
        (b"{", "application/json"),
        (b"[1]", "application/json"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b"x", "text/plain"),
    ]:
        r = await harness.client.post(url, content=content, headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (content, r.status_code)
    r = await harness.client.post(url, json={"method": "password", "identifier": ["a"], "password": {"x": 1}})
    assert r.status_code == 400 and message_ids(r.json()) == [4000002, 4000002]


async def test_form_with_too_many_fields_is_400(harness: Harness) -> None:
    flow = await api_flow(harness.client, "login")
    r = await harness.client.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        content="&".join(f"f{i}=1" for i in range(1500)).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", **JSON},
    )
    assert r.status_code == 400


async def test_deeply_nested_json_is_400(harness: Harness) -> None:
    flow = await api_flow(harness.client, "registration")
    r = await harness.client.post(
        f"/.auth/self-service/registration?flow={flow['id']}",
        content=b'{"method":"password","traits":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
