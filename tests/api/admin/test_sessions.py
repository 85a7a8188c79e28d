"""Admin session endpoints, with and without the ``/admin`` prefix."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api.public.conftest import Harness, harnesses
from tests.api.public.helpers import login_api, register_api


@pytest.fixture
async def harness(services_factory: Any, sqlite_dsn: str) -> AsyncIterator[Harness]:
    async with harnesses(services_factory, sqlite_dsn) as factory:
        yield await factory()


def _email() -> str:
    return f"a-{uuid.uuid4().hex[:8]}@example.test"


async def _signed_in(h: Harness, email: str | None = None) -> dict[str, Any]:
    r = await register_api(h.client, email or _email())
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _cached(h: Harness, token: str) -> bool:
    """Whether the proxy's session cache serves ``token``. A revoked session stays cached for
    ``session.cache_ttl`` (5 s) unless its revocation was published, so right after a revocation
    this tells a published one from a silent one."""
    return await h.services.resolver.resolve(token) is not None


async def _whoami(h: Harness, token: str) -> int:
    return (await h.client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})).status_code


@pytest.mark.parametrize("prefix", ["/admin", ""])
async def test_get_disable_extend(harness: Harness, prefix: str) -> None:
    signed = await _signed_in(harness)
    sid = signed["session"]["id"]
    assert await _cached(harness, signed["session_token"])
    r = await harness.admin.get(f"{prefix}/sessions/{sid}?expand=identity")
    assert r.status_code == 200 and r.json()["identity"]["id"] == signed["identity"]["id"]
    assert "metadata_admin" in r.json()["identity"]  # the admin view
    assert "identity" not in (await harness.admin.get(f"{prefix}/sessions/{sid}")).json()

    before = r.json()["expires_at"]
    r = await harness.admin.patch(f"{prefix}/sessions/{sid}/extend")
    assert r.status_code == 200 and r.json()["expires_at"] > before

    r = await harness.admin.delete(f"{prefix}/sessions/{sid}")
    assert r.status_code == 204
    assert not await _cached(harness, signed["session_token"])
    assert await _whoami(harness, signed["session_token"]) == 401
    assert (await harness.admin.get(f"{prefix}/sessions/{sid}")).json()["active"] is False

    for method, path in [("GET", ""), ("DELETE", ""), ("PATCH", "/extend")]:
        r = await harness.admin.request(method, f"{prefix}/sessions/{uuid.uuid4()}{path}")
        assert r.status_code == 404
    assert (await harness.admin.get(f"{prefix}/sessions/not-a-uuid")).status_code == 400


async def test_list_with_paging_and_filters(harness: Harness) -> None:
    for _ in range(3):
        await _signed_in(harness)
    revoked = await _signed_in(harness)
    await harness.admin.delete(f"/admin/sessions/{revoked['session']['id']}")

    r = await harness.admin.get("/admin/sessions?page_size=2")
    assert r.status_code == 200 and len(r.json()) == 2
    assert "identity" not in r.json()[0] and "devices" not in r.json()[0]
    link = r.headers["link"]
    assert 'rel="next"' in link
    token = link.split("page_token=")[1].split(">")[0]
    rest = (await harness.admin.get(f"/admin/sessions?page_size=2&page_token={token}")).json()
    ids = [s["id"] for s in r.json()] + [s["id"] for s in rest]
    assert len(ids) == len(set(ids)) == 4
    assert (await harness.admin.get("/admin/sessions?page_token=forged")).status_code == 400

    active = (await harness.admin.get("/admin/sessions?active=true")).json()
    assert len(active) == 3 and all(s["active"] for s in active)
    inactive = (await harness.admin.get("/sessions?active=false&expand=identity&expand=devices")).json()
    assert [s["id"] for s in inactive] == [revoked["session"]["id"]]
    assert inactive[0]["identity"]["id"] == revoked["identity"]["id"] and inactive[0]["devices"]
    assert (await harness.admin.get("/admin/sessions?active=maybe")).status_code == 400


@pytest.mark.parametrize("prefix", ["/admin", ""])
async def test_identity_sessions(harness: Harness, prefix: str) -> None:
    email = _email()
    first = await _signed_in(harness, email)
    second = (await login_api(harness.client, email)).json()
    bystander = await _signed_in(harness)
    iid = first["identity"]["id"]
    for signed in (first, second, bystander):
        assert await _cached(harness, signed["session_token"])

    listed = (await harness.admin.get(f"{prefix}/identities/{iid}/sessions")).json()
    assert {s["id"] for s in listed} == {first["session"]["id"], second["session"]["id"]}

    r = await harness.admin.delete(f"{prefix}/identities/{iid}/sessions")
    assert r.status_code == 204
    assert not await _cached(harness, first["session_token"])
    assert not await _cached(harness, second["session_token"])
    assert await _cached(harness, bystander["session_token"])
    assert await _whoami(harness, first["session_token"]) == 401
    assert await _whoami(harness, second["session_token"]) == 401
    assert await _whoami(harness, bystander["session_token"]) == 200

    assert (await harness.admin.get(f"{prefix}/identities/{uuid.uuid4()}/sessions")).status_code == 404
    assert (await harness.admin.delete(f"{prefix}/identities/{uuid.uuid4()}/sessions")).status_code == 404


@pytest.mark.parametrize("faster", [True, False])
async def test_faster_session_extend(services_factory: Any, sqlite_dsn: str, faster: bool) -> None:
    """Kratos' ``feature_flags.faster_session_extend`` (session/handler.go adminSessionExtend): 204
    without a body; off, 200 with the session."""
    async with harnesses(services_factory, sqlite_dsn) as factory:
        h = await factory(feature_flags={"faster_session_extend": faster})
        sid = (await _signed_in(h))["session"]["id"]
        before = (await h.admin.get(f"/admin/sessions/{sid}")).json()["expires_at"]
        extended = await h.admin.patch(f"/admin/sessions/{sid}/extend")
        if faster:
            assert extended.status_code == 204 and extended.content == b""
        else:
            assert extended.status_code == 200 and extended.json()["id"] == sid
        assert (await h.admin.get(f"/admin/sessions/{sid}")).json()["expires_at"] > before
