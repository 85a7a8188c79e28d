"""``/sessions/whoami``, ``/sessions`` and API logout over HTTP."""

from __future__ import annotations

import uuid

import pytest

from tests.api.public.conftest import Harness, HarnessFactory
from tests.api.public.helpers import login_api, register_api, register_browser


def _email() -> str:
    return f"w-{uuid.uuid4().hex[:8]}@example.test"


async def _token(h: Harness, email: str | None = None) -> tuple[str, dict[str, object]]:
    r = await register_api(h.client, email or _email())
    assert r.status_code == 200, r.text
    return r.json()["session_token"], r.json()


@pytest.mark.parametrize("how", ["x-session-token", "bearer", "cookie"])
async def test_whoami_credentials(harness: Harness, how: str) -> None:
    token, body = await _token(harness)
    client = harness.new_client()
    headers = {}
    if how == "x-session-token":
        headers["X-Session-Token"] = token
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {token}"
    else:
        client.cookies.set("ory_kratos_session", token, domain="127.0.0.1")
    r = await client.get("/.auth/sessions/whoami", headers=headers)
    assert r.status_code == 200
    assert r.headers["x-kratos-authenticated-identity-id"] == body["identity"]["id"]  # type: ignore[index]
    assert "no-store" in r.headers["cache-control"]
    identity = r.json()["identity"]
    assert "credentials" not in identity and "metadata_admin" not in identity
    head = await client.head("/.auth/sessions/whoami", headers=headers)
    assert head.status_code == 200 and head.content == b""
    await client.aclose()


async def test_token_precedence(harness: Harness) -> None:
    token, _ = await _token(harness)
    r = await harness.client.get(
        "/.auth/sessions/whoami",
        headers={"X-Session-Token": "ory_st_bogus", "Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 401  # X-Session-Token wins, even when wrong
    r = await harness.client.get("/.auth/sessions/whoami", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


@pytest.mark.parametrize("token", [None, "", "ory_st_unknown", "x" * 10_000, "Bearer"])
async def test_whoami_without_a_valid_session(harness: Harness, token: str | None) -> None:
    headers = {"X-Session-Token": token} if token else {}
    r = await harness.client.get("/.auth/sessions/whoami", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["id"] == "session_inactive"
    assert "no-store" in r.headers["cache-control"]


async def test_my_sessions(harness: Harness) -> None:
    email = _email()
    first, _ = await _token(harness, email)
    second = (await login_api(harness.client, email)).json()
    third = (await login_api(harness.client, email)).json()
    mine = {"X-Session-Token": second["session_token"]}

    listed = await harness.client.get("/.auth/sessions", headers=mine)
    assert listed.status_code == 200
    ids = {s["id"] for s in listed.json()}
    assert second["session"]["id"] not in ids and third["session"]["id"] in ids and len(ids) == 2

    r = await harness.client.delete(f"/.auth/sessions/{second['session']['id']}", headers=mine)
    assert r.status_code == 400
    r = await harness.client.delete(f"/.auth/sessions/{third['session']['id']}", headers=mine)
    assert r.status_code == 204
    assert (
        await harness.client.get(
            "/.auth/sessions/whoami", headers={"X-Session-Token": third["session_token"]}
        )
    ).status_code == 401

    r = await harness.client.delete("/.auth/sessions", headers=mine)
    assert r.status_code == 200 and r.json() == {"count": 1}
    assert (
        await harness.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": first})
    ).status_code == 401
    assert (await harness.client.get("/.auth/sessions/whoami", headers=mine)).status_code == 200


async def test_someone_elses_session_cannot_be_revoked(harness: Harness) -> None:
    mine, _ = await _token(harness)
    _, theirs = await _token(harness)
    r = await harness.client.delete(
        f"/.auth/sessions/{theirs['session']['id']}",  # type: ignore[index]
        headers={"X-Session-Token": mine},
    )
    assert r.status_code == 404


async def test_my_sessions_paging(harness: Harness) -> None:
    email = _email()
    token, _ = await _token(harness, email)
    for _ in range(3):
        await login_api(harness.client, email)
    r = await harness.client.get("/.auth/sessions?page_size=2", headers={"X-Session-Token": token})
    assert len(r.json()) == 2 and 'rel="next"' in r.headers["link"]
    next_token = r.headers["link"].split("page_token=")[1].split(">")[0]
    r2 = await harness.client.get(
        f"/.auth/sessions?page_size=2&page_token={next_token}", headers={"X-Session-Token": token}
    )
    assert len(r2.json()) == 1
    assert not {s["id"] for s in r.json()} & {s["id"] for s in r2.json()}
    forged = await harness.client.get("/.auth/sessions?page_token=forged", headers={"X-Session-Token": token})
    assert forged.status_code == 400


async def test_api_logout(harness: Harness) -> None:
    token, _ = await _token(harness)
    r = await harness.client.request(
        "DELETE", "/.auth/self-service/logout/api", json={"session_token": token}
    )
    assert r.status_code == 204
    r = await harness.client.request(
        "DELETE", "/.auth/self-service/logout/api", json={"session_token": token}
    )
    assert r.status_code == 403
    r = await harness.client.request("DELETE", "/.auth/self-service/logout/api", json={"nope": 1})
    assert r.status_code == 400
    r = await harness.client.request("DELETE", "/.auth/self-service/logout/api", content=b"[")
    assert r.status_code == 400


async def test_logout_requires_a_token(harness: Harness) -> None:
    await register_browser(harness.client, _email())
    r = await harness.client.get("/.auth/self-service/logout", headers={"Accept": "application/json"})
    assert r.status_code == 400


async def test_registration_without_session_hook(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(selfservice={"flows": {"registration": {"after": {"password": {"hooks": []}}}}})
    r = await register_api(h.client, _email())
    assert r.status_code == 200
    assert "session_token" not in r.json() and "session" not in r.json()


async def test_disabled_registration(harness_factory: HarnessFactory) -> None:
    h = await harness_factory(selfservice={"flows": {"registration": {"enabled": False}}})
    r = await h.client.get("/.auth/self-service/registration/api")
    # Kratos: selfservice/flow/registration/error.go ErrRegistrationDisabled
    error = r.json()["error"]
    assert r.status_code == 400 and error["id"] == "self_service_flow_disabled"
    assert (error["message"], error["reason"]) == (
        "registration flow disabled",
        "Registration is not allowed because it was disabled.",
    )


async def test_sessions_on_redis(harness_factory: HarnessFactory, redis_url: str, unique_prefix: str) -> None:
    h = await harness_factory(redis_prefix=unique_prefix)
    token, _ = await _token(h)
    assert (
        await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})
    ).status_code == 200
    r = await h.client.request("DELETE", "/.auth/self-service/logout/api", json={"session_token": token})
    assert r.status_code == 204
    assert (
        await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})
    ).status_code == 401


async def test_sessions_on_postgres(harness_factory: HarnessFactory, postgres_dsn: str) -> None:
    h = await harness_factory(dsn=postgres_dsn)
    email = _email()
    token, _ = await _token(h, email)
    other = (await login_api(h.client, email)).json()["session_token"]
    assert (
        await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})
    ).status_code == 200
    r = await h.client.delete("/.auth/sessions", headers={"X-Session-Token": token})
    assert r.json() == {"count": 1}
    assert (
        await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": other})
    ).status_code == 401


@pytest.mark.parametrize("how", ["api-logout", "revoke-other", "admin-delete"])
async def test_revocation_drops_the_proxy_cache_at_once(harness: Harness, how: str) -> None:
    email = _email()
    token, body = await _token(harness, email)
    resolver = harness.services.resolver
    assert await resolver.resolve(token) is not None  # now cached for session.cache_ttl
    if how == "api-logout":
        r = await harness.client.request(
            "DELETE", "/.auth/self-service/logout/api", json={"session_token": token}
        )
    elif how == "revoke-other":
        other = (await login_api(harness.client, email)).json()["session_token"]
        r = await harness.client.delete("/.auth/sessions", headers={"X-Session-Token": other})
    else:
        r = await harness.admin.delete(f"/admin/sessions/{body['session']['id']}")  # type: ignore[index]
    assert r.status_code in (200, 204)
    assert await resolver.resolve(token) is None
