"""sidecar/flows/settings.py without HTTP, for browser and API flows."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sidecar import errors
from sidecar.flows.outcome import Completed, FlowReplaced, ShowFlow
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import utcnow
from tests.conftest import make_config
from tests.flows.conftest import FLOW_TYPES, PASSWORD, client_for

URL = "http://127.0.0.1:4433/.auth/self-service/settings/api"


@pytest.fixture
async def services(services_factory: Any, sqlite_dsn: str) -> Any:
    methods = {"totp": {"enabled": True}, "lookup_secret": {"enabled": True}}
    return await services_factory(make_config(dsn=sqlite_dsn, selfservice={"methods": methods}))


async def _signed_in(services: Any) -> tuple[Any, Any]:
    email = f"s-{uuid.uuid4().hex[:8]}@example.test"
    identity = await services.identities.create(
        IdentitySpec(traits={"email": email}, password_plain=PASSWORD)
    )
    issued = await services.sessions.issue(identity.id, "password")
    return identity, issued


def _layout(flow: Any) -> list[tuple[str, str]]:
    return [(n["group"], n["attributes"].get("name") or n["attributes"]["id"]) for n in flow.ui.nodes]


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_init_layout(services: Any, flow_type: str) -> None:
    identity, issued = await _signed_in(services)
    client = client_for(flow_type, session=issued.session)
    outcome = await services.selfservice.settings.init(flow_type, client, request_url=URL)
    assert isinstance(outcome, ShowFlow)
    flow = outcome.flow
    assert flow.state == "show_form" and flow.identity_id == identity.id
    expected = [
        ("profile", "traits.email"),
        ("profile", "traits.name.first"),
        ("profile", "traits.name.last"),
        ("profile", "method"),
        ("password", "password"),
        ("password", "method"),
        ("totp", "totp_qr"),
        ("totp", "totp_secret_key"),
        ("totp", "totp_code"),
        ("totp", "method"),
        ("lookup_secret", "lookup_secret_regenerate"),
    ]
    if flow_type == "browser":
        expected.insert(0, ("default", "csrf_token"))
    assert _layout(flow) == expected
    assert flow.internal["totp_url"].startswith("otpauth://totp/")


async def test_needs_session_and_owner(services: Any) -> None:
    with pytest.raises(errors.SessionInactive):
        await services.selfservice.settings.init("api", client_for("api"), request_url=URL)
    _, mine = await _signed_in(services)
    _, theirs = await _signed_in(services)
    flow = (
        await services.selfservice.settings.init(
            "api", client_for("api", session=mine.session), request_url=URL
        )
    ).flow
    with pytest.raises(errors.IdentityMismatch):
        await services.selfservice.settings.fetch(flow.id, client_for("api", session=theirs.session))
    with pytest.raises(errors.IdentityMismatch):
        await services.selfservice.settings.submit(
            flow.id, {"method": "password", "password": "x"}, client_for("api", session=theirs.session)
        )


async def test_refresh_required_points_back_to_the_flow(services: Any) -> None:
    _, issued = await _signed_in(services)
    old = replace(issued.session, authenticated_at=utcnow() - timedelta(hours=2))
    client = client_for("api", session=old)
    flow = (await services.selfservice.settings.init("api", client, request_url=URL)).flow
    with pytest.raises(errors.RefreshRequired) as caught:
        await services.selfservice.settings.submit(
            flow.id, {"method": "password", "password": "n3w-Passw0rd-long"}, client
        )
    target = caught.value.extra["redirect_browser_to"]
    assert "refresh=true" in target and str(flow.id) in target
    done = await services.selfservice.settings.submit(
        flow.id,
        {
            "method": "profile",
            "traits": {"email": flow.ui.node("traits.email")["attributes"]["value"], "name": {"first": "A"}},
        },
        client,
    )
    assert isinstance(done, Completed) and done.flow.state == "success"


async def test_expired_flow_is_replaced(services: Any) -> None:
    _, issued = await _signed_in(services)
    client = client_for("api", session=issued.session)
    flow = (await services.selfservice.settings.init("api", client, request_url=URL)).flow
    flow.expires_at = utcnow() - timedelta(minutes=1)
    await services.selfservice.settings.life.store.save(flow)
    outcome = await services.selfservice.settings.submit(flow.id, {"method": "profile"}, client)
    assert isinstance(outcome, FlowReplaced)
    assert [m["id"] for m in outcome.flow.ui.messages] == [4050001]
