"""sidecar/flows/login.py without HTTP, for browser and API flows."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sidecar import errors
from sidecar.flows.model import flow_to_json
from sidecar.flows.outcome import AlreadySignedIn, Completed, FlowReplaced, ShowFlow
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import utcnow
from sidecar.security import csrf
from tests.flows.conftest import FLOW_TYPES, PASSWORD, api_client, browser_client, client_for

URL = "http://127.0.0.1:4433/.auth/self-service/login/browser"


async def _identity(services: Any, email: str | None = None) -> Any:
    email = email or f"l-{uuid.uuid4().hex[:8]}@example.test"
    return await services.identities.create(IdentitySpec(traits={"email": email}, password_plain=PASSWORD))


def _layout(flow: Any) -> list[tuple[str, str, str, int | None]]:
    return [
        (n["attributes"]["name"], n["group"], n["attributes"]["type"], n["meta"].get("label", {}).get("id"))
        for n in flow_to_json(flow)["ui"]["nodes"]
    ]


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_init_layout(services: Any, flow_type: str) -> None:
    outcome = await services.selfservice.login.init(flow_type, client_for(flow_type), request_url=URL)
    assert isinstance(outcome, ShowFlow) and outcome.status == 200
    expected: list[tuple[str, str, str, int | None]] = [
        ("identifier", "default", "text", 1070002),
        ("password", "password", "password", 1070001),
        ("method", "password", "submit", 1010022),
    ]
    if flow_type == "browser":
        expected.insert(0, ("csrf_token", "default", "hidden", None))
    assert _layout(outcome.flow) == expected
    body = flow_to_json(outcome.flow)
    assert body["type"] == flow_type and body["state"] == "choose_method" and body["refresh"] is False
    assert body["ui"]["action"] == f"http://127.0.0.1:4433/.auth/self-service/login?flow={outcome.flow.id}"
    assert body["ui"]["method"] == "POST"


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_submit_success(services: Any, flow_type: str) -> None:
    identity = await _identity(services)
    client = client_for(flow_type)
    flow = (await services.selfservice.login.init(flow_type, client, request_url=URL)).flow
    body = {"method": "password", "identifier": identity.traits["email"].upper(), "password": PASSWORD}
    done = await services.selfservice.login.submit(flow.id, body, client)
    assert isinstance(done, Completed)
    assert done.identity.id == identity.id and done.session is not None and done.token
    assert done.session.devices[0].ip_address == client.ip
    assert done.redirect_to == "http://127.0.0.1:4433/"
    assert (await services.sessions.resolve(done.token)).id == done.session.id
    assert done.flow.state == "passed_challenge"


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
@pytest.mark.parametrize("known", [True, False])
async def test_wrong_password(services: Any, flow_type: str, known: bool) -> None:
    identity = await _identity(services)
    client = client_for(flow_type)
    flow = (await services.selfservice.login.init(flow_type, client, request_url=URL)).flow
    identifier = identity.traits["email"] if known else "ghost@example.test"
    out = await services.selfservice.login.submit(
        flow.id, {"method": "password", "identifier": identifier, "password": "wrong-Password-9"}, client
    )
    assert isinstance(out, ShowFlow) and out.status == 400
    assert [m["id"] for m in out.flow.ui.messages] == [4000006]
    assert out.flow.active == "password"
    stored = await services.selfservice.login.fetch(flow.id, client)
    assert [m["id"] for m in stored.ui.messages] == [4000006]


async def test_browser_submit_needs_the_csrf_token(services: Any) -> None:
    client = browser_client()
    flow = (await services.selfservice.login.init("browser", client, request_url=URL)).flow
    body = {"method": "password", "identifier": "a", "password": "b"}
    for bad in (
        replace(client, csrf_submitted=None),
        replace(client, csrf_submitted=csrf.mask(csrf.new_token())),
    ):
        with pytest.raises(errors.CSRFViolation):
            await services.selfservice.login.submit(flow.id, body, bad)
    with pytest.raises(errors.CSRFViolation):
        await services.selfservice.login.fetch(flow.id, browser_client())


async def test_api_flow_refuses_browser_markers(services: Any) -> None:
    flow = (await services.selfservice.login.init("api", api_client(), request_url=URL)).flow
    with pytest.raises(errors.BadRequest):
        await services.selfservice.login.submit(
            flow.id, {"method": "password"}, api_client(browser_markers=True)
        )


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_expired_flow_is_replaced(services: Any, flow_type: str) -> None:
    client = client_for(flow_type)
    login = services.selfservice.login
    flow = (await login.init(flow_type, client, request_url=URL)).flow
    flow.expires_at = utcnow() - timedelta(seconds=1)
    await login.life.store.save(flow)
    out = await login.submit(flow.id, {"method": "password"}, client)
    assert isinstance(out, FlowReplaced)
    assert out.flow.id != flow.id and [m["id"] for m in out.flow.ui.messages] == [4010001]
    assert out.flow.type == flow_type
    with pytest.raises(errors.FlowExpired):
        await login.fetch(flow.id, client)


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_signed_in(services: Any, flow_type: str) -> None:
    identity = await _identity(services)
    issued = await services.sessions.issue(identity.id, "password")
    client = client_for(flow_type, session=issued.session, session_token=issued.token)
    login = services.selfservice.login
    assert isinstance(await login.init(flow_type, client, request_url=URL), AlreadySignedIn)
    refresh = await login.init(flow_type, client, request_url=URL, refresh=True)
    assert isinstance(refresh, ShowFlow) and refresh.flow.refresh
    assert [m["id"] for m in refresh.flow.ui.messages] == [1010003]
    body = {"method": "password", "identifier": identity.traits["email"], "password": PASSWORD}
    done = await login.submit(refresh.flow.id, body, client)
    assert isinstance(done, Completed) and done.session is not None
    assert done.session.id == issued.session.id and done.token == issued.token


async def test_refresh_as_someone_else_is_refused(services: Any) -> None:
    me, other = await _identity(services), await _identity(services)
    issued = await services.sessions.issue(me.id, "password")
    client = api_client(session=issued.session, session_token=issued.token)
    flow = (await services.selfservice.login.init("api", client, request_url=URL, refresh=True)).flow
    with pytest.raises(errors.IdentityMismatch):
        await services.selfservice.login.submit(
            flow.id, {"method": "password", "identifier": other.traits["email"], "password": PASSWORD}, client
        )


async def test_aal(services: Any) -> None:
    login = services.selfservice.login
    with pytest.raises(errors.SessionAAL1Required):
        await login.init("api", api_client(), request_url=URL, aal="aal2")
    with pytest.raises(errors.BadRequest):
        await login.init("api", api_client(), request_url=URL, aal="aal9")
    identity = await _identity(services)
    issued = await services.sessions.issue(identity.id, "password")
    out = await login.init("api", api_client(session=issued.session), request_url=URL, aal="aal2")
    assert isinstance(out, ShowFlow) and [m["id"] for m in out.flow.ui.messages] == [1010004]


async def test_return_to_is_checked_on_init(services: Any) -> None:
    with pytest.raises(errors.ReturnToForbidden):
        await services.selfservice.login.init(
            "browser", browser_client(), request_url=URL, return_to="https://evil.example"
        )


async def test_revoke_active_sessions_hook(services_factory: Any, sqlite_dsn: str) -> None:
    from tests.conftest import make_config

    services = await services_factory(
        make_config(
            dsn=sqlite_dsn,
            selfservice={"flows": {"login": {"after": {"hooks": [{"hook": "revoke_active_sessions"}]}}}},
        )
    )
    identity = await _identity(services)
    old = await services.sessions.issue(identity.id, "password")
    flow = (await services.selfservice.login.init("api", api_client(), request_url=URL)).flow
    done = await services.selfservice.login.submit(
        flow.id,
        {"method": "password", "identifier": identity.traits["email"], "password": PASSWORD},
        api_client(),
    )
    assert isinstance(done, Completed)
    assert await services.sessions.resolve(old.token) is None
    assert await services.sessions.resolve(done.token) is not None
