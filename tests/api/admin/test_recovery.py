"""``POST /admin/recovery/{code,link}`` (kratos-api.md §2, §11.7) and using what they return."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.api.public.conftest import PUBLIC, Harness, HarnessFactory, harnesses
from tests.api.public.helpers import JSON, node_value, register_api


@pytest.fixture
async def harness_factory(services_factory: Any, sqlite_dsn: str) -> AsyncIterator[HarnessFactory]:
    async with harnesses(services_factory, sqlite_dsn) as factory:
        yield factory


@pytest.fixture
async def h(harness_factory: HarnessFactory) -> Harness:
    return await harness_factory(
        selfservice={"methods": {"link": {"enabled": True}}, "flows": {"recovery": {"enabled": True}}}
    )


async def identity_id(h: Harness, email: str) -> str:
    r = await register_api(h.new_client(), email)
    return str(r.json()["identity"]["id"])


async def test_code_201_and_the_code_recovers_in_a_browser(h: Harness) -> None:
    iid = await identity_id(h, "adm@example.test")
    r = await h.admin.post("/admin/recovery/code", json={"identity_id": iid, "expires_in": "15m"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"recovery_link", "recovery_code", "expires_at"}
    assert len(body["recovery_code"]) == 6 and body["recovery_code"].isdigit()
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(minutes=14) < expires - datetime.now(expires.tzinfo) <= timedelta(minutes=15)
    browser = h.new_client()
    r = await browser.get(body["recovery_link"].replace("http://127.0.0.1:4433", ""))
    assert r.status_code == 303 and "/ui/recovery?flow=" in r.headers["location"]
    flow_id = r.headers["location"].split("flow=")[1]
    flow = (await browser.get(f"/.auth/self-service/recovery/flows?id={flow_id}")).json()
    assert flow["state"] == "sent_email"
    form = {"method": "code", "code": body["recovery_code"], "csrf_token": node_value(flow, "csrf_token")}
    r = await browser.post(f"/.auth/self-service/recovery?flow={flow_id}", data=form)
    assert r.status_code == 303 and r.headers["location"].startswith(f"{PUBLIC}/ui/settings?flow=")
    assert (await browser.get("/.auth/sessions/whoami")).status_code == 200


async def test_link_200_and_the_link_signs_in(h: Harness) -> None:
    iid = await identity_id(h, "lnk@example.test")
    r = await h.admin.post("/admin/recovery/link", json={"identity_id": iid})
    assert r.status_code == 200, r.text
    link = r.json()["recovery_link"]
    assert link.startswith(f"{PUBLIC}/self-service/recovery?flow=") and "token=" in link
    browser = h.new_client()
    r = await browser.get(link.replace("http://127.0.0.1:4433", ""))
    assert r.status_code == 303 and "/ui/settings?flow=" in r.headers["location"]
    who = await browser.get("/.auth/sessions/whoami")
    assert who.json()["authentication_methods"][0]["method"] == "link_recovery"
    again = await h.new_client().get(link.replace("http://127.0.0.1:4433", ""), headers=JSON)
    assert again.status_code == 400 and again.json()["ui"]["messages"][0]["id"] == 4060001


async def test_api_flow_code(h: Harness) -> None:
    iid = await identity_id(h, "api@example.test")
    r = await h.admin.post("/recovery/code", json={"identity_id": iid, "flow_type": "api"})
    assert r.status_code == 201
    flow_id = r.json()["recovery_link"].split("flow=")[1]
    done = await h.client.post(
        f"/.auth/self-service/recovery?flow={flow_id}",
        json={"method": "code", "code": r.json()["recovery_code"]},
    )
    assert done.status_code == 200, done.text
    assert any(c["action"] == "set_ory_session_token" for c in done.json()["continue_with"])


@pytest.mark.parametrize("path", ["/admin/recovery/code", "/admin/recovery/link"])
async def test_unknown_identity_404(h: Harness, path: str) -> None:
    r = await h.admin.post(path, json={"identity_id": str(uuid.uuid4())})
    assert r.status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="missing-id"),
        pytest.param({"identity_id": "nope"}, id="bad-id"),
        pytest.param({"identity_id": str(uuid.uuid4()), "expires_in": "soon"}, id="bad-duration"),
        pytest.param({"identity_id": str(uuid.uuid4()), "expires_in": "0s"}, id="zero-duration"),
        pytest.param({"identity_id": str(uuid.uuid4()), "flow_type": "carrier-pigeon"}, id="bad-type"),
        pytest.param([], id="not-an-object"),
    ],
)
async def test_bad_input_400(h: Harness, body: object) -> None:
    r = await h.admin.post("/admin/recovery/code", json=body)
    assert r.status_code == 400, r.text


async def test_recovery_disabled_400(harness_factory: HarnessFactory) -> None:
    h = await harness_factory()
    iid = await identity_id(h, "off@example.test")
    r = await h.admin.post("/admin/recovery/link", json={"identity_id": iid})
    assert r.status_code == 400
