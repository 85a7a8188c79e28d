"""whoami on the raw-ASGI path: the Starlette route's answer, from the cache, without the store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from sidecar.app import create_public_app
from tests.api.public.conftest import BASE, Harness, harnesses
from tests.api.public.helpers import register_api

WHOAMI = "/.auth/sessions/whoami"


@pytest.fixture
async def h(services_factory: Any, sqlite_dsn: str) -> AsyncIterator[Harness]:
    async with harnesses(services_factory, sqlite_dsn) as factory:
        yield await factory(session={"whoami": {"required_aal": "highest_available"}})


@pytest.fixture
async def plain(h: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """The Starlette app alone on the same services: the reference answer."""
    app = create_public_app(h.services, manage_lifespan=False, gateway=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield client


@pytest.fixture
def statements(h: Harness) -> Iterator[list[str]]:
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "sessions" in statement or "identit" in statement:  # not the revocation poller's kv reads
            sent.append(statement)

    engine = h.services.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    yield sent
    event.remove(engine, "before_cursor_execute", record)


async def _token(h: Harness) -> str:
    r = await register_api(h.client, f"fast-{uuid.uuid4().hex[:8]}@example.test")
    assert r.status_code == 200, r.text
    token: str = r.json()["session_token"]
    return token


async def test_the_fast_answer_is_the_routes_answer(h: Harness, plain: httpx.AsyncClient) -> None:
    headers = {"X-Session-Token": await _token(h)}
    fast = await h.client.get(WHOAMI, headers=headers)
    slow = await plain.get(WHOAMI, headers=headers)
    assert fast.status_code == slow.status_code == 200
    assert fast.json() == slow.json()
    for name in ("content-type", "cache-control", "x-kratos-authenticated-identity-id"):
        assert fast.headers[name] == slow.headers[name], name
    body = fast.json()
    assert set(body) == {
        "id",
        "active",
        "expires_at",
        "authenticated_at",
        "authenticator_assurance_level",
        "authentication_methods",
        "issued_at",
        "identity",
        "devices",
    }
    assert "credentials" not in body["identity"] and "metadata_admin" not in body["identity"]
    for method in ("POST", "PUT", "PATCH", "DELETE"):  # Kratos answers every method; the route does
        other = await h.client.request(method, WHOAMI, headers=headers)
        assert other.status_code == 200 and other.json() == body, method


async def test_a_cached_whoami_sends_no_sql(h: Harness, statements: list[str]) -> None:
    headers = {"X-Session-Token": await _token(h)}
    assert (await h.client.get(WHOAMI, headers=headers)).status_code == 200
    statements.clear()
    for _ in range(5):
        assert (await h.client.get(WHOAMI, headers=headers)).status_code == 200
        assert (await h.client.head(WHOAMI, headers=headers)).status_code == 200
    assert statements == []


async def test_token_order_is_kratos(h: Harness) -> None:
    """X-Session-Token, then the cookie, then Authorization: Bearer; a wrong earlier one wins."""
    token = await _token(h)
    cases = [
        ({"X-Session-Token": "ory_st_bogus", "Cookie": f"ory_kratos_session={token}"}, 401),
        ({"Cookie": f"ory_kratos_session={token}", "Authorization": "Bearer ory_st_bogus"}, 200),
        ({"Cookie": "ory_kratos_session=ory_st_bogus", "Authorization": f"Bearer {token}"}, 401),
        ({"Cookie": f"other=1; ory_kratos_session={token}"}, 200),
        ({"Authorization": f"bearer {token}"}, 200),
        ({"Authorization": f"Basic {token}"}, 401),
        ({"X-Session-Token": "", "Authorization": f"Bearer {token}"}, 200),
    ]
    client = h.new_client()
    for headers, status in cases:
        r = await client.get(WHOAMI, headers=headers)
        assert r.status_code == status, headers
        if status == 401:
            assert r.json()["error"]["id"] == "session_inactive"
            assert "no-store" in r.headers["cache-control"]
    await client.aclose()


async def test_head_and_errors(h: Harness) -> None:
    token = await _token(h)
    head = await h.client.head(WHOAMI, headers={"X-Session-Token": token})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["x-kratos-authenticated-identity-id"]
    missing = await h.client.head(WHOAMI)
    assert missing.status_code == 401 and missing.content == b""
    r = await h.client.get(WHOAMI, headers={"X-Session-Token": "x" * 10_000})
    assert r.status_code == 401 and r.json()["error"]["id"] == "session_inactive"


async def test_aal2_required_names_the_step_up(h: Harness) -> None:
    from sidecar.identity.model import Credential

    token = await _token(h)
    me = (await h.client.get(WHOAMI, headers={"X-Session-Token": token})).json()
    totp = Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"})
    await h.services.identities.save_credential(uuid.UUID(me["identity"]["id"]), totp)
    r = await h.client.get(WHOAMI, headers={"X-Session-Token": token})
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["id"] == "session_aal2_required"
    assert r.json()["redirect_browser_to"].endswith("/self-service/login/browser?aal=aal2")


async def test_what_the_fast_path_leaves_to_the_route(services_factory: Any, sqlite_dsn: str) -> None:
    """Cross-origin calls with CORS on get the CORS middleware's headers, and paths that only
    decode to whoami are the route's; both answer the same session."""
    async with harnesses(services_factory, sqlite_dsn) as factory:
        h = await factory(
            serve={
                "public": {
                    "base_url": "http://127.0.0.1:4433/.auth",
                    "cors": {"enabled": True, "allowed_origins": ["https://spa.example.test"]},
                }
            }
        )
        token = await _token(h)
        headers = {"X-Session-Token": token}
        plain = (await h.client.get(WHOAMI, headers=headers)).json()
        cors = await h.client.get(WHOAMI, headers={**headers, "Origin": "https://spa.example.test"})
        assert cors.status_code == 200 and cors.json() == plain
        assert cors.headers["access-control-allow-origin"] == "https://spa.example.test"
        assert "access-control-allow-origin" not in (await h.client.get(WHOAMI, headers=headers)).headers
        encoded = await h.client.get("/.auth/sessions/%77hoami", headers=headers)
        assert encoded.status_code == 200 and encoded.json() == plain
