"""The verification flow without HTTP: code and link, no session ever, after-registration mails."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from sidecar import errors
from sidecar.app import build_flows
from sidecar.flows.outcome import Completed, FlowReplaced, ShowFlow
from sidecar.identity.model import Identity
from tests.flows.challenge_helpers import PASSWORD, Kit, Outbox, make_kit
from tests.flows.conftest import FLOW_TYPES, client_for


@pytest.fixture
async def kit(services_factory: Any, sqlite_dsn: str) -> Kit:
    return await make_kit(services_factory, sqlite_dsn, selfservice={"methods": {"link": {"enabled": True}}})


def ids(flow: Any) -> list[int]:
    return [m["id"] for m in flow.ui.messages] + [m["id"] for n in flow.ui.nodes for m in n["messages"]]


async def verified(kit: Kit, identity: Identity) -> bool:
    fresh = await kit.services.identity_store.get(identity.id)
    return bool(fresh.verifiable_addresses[0].verified)


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_code_verifies_the_address_and_signs_nobody_in(kit: Kit, flow_type: str) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    client = client_for(flow_type)
    shown = await kit.verification.init(flow_type, client, request_url="http://x", return_to=None)  # type: ignore[arg-type]
    sent = await kit.verification.submit(shown.flow.id, {"method": "code", "email": email}, client)
    assert isinstance(sent, ShowFlow) and sent.flow.state == "sent_email" and ids(sent.flow) == [1080003]
    template, data = kit.outbox.last(email)
    assert template == "verification_code_valid"
    assert f"flow={shown.flow.id}" in data["verification_url"]
    assert not await verified(kit, identity)
    wrong = await kit.verification.submit(shown.flow.id, {"method": "code", "code": "1"}, client)
    assert isinstance(wrong, ShowFlow) and wrong.status == 200 and ids(wrong.flow) == [4070006]
    done = await kit.verification.submit(
        shown.flow.id, {"method": "code", "code": data["verification_code"]}, client
    )
    assert isinstance(done, ShowFlow) and not isinstance(done, Completed)
    assert done.flow.state == "passed_challenge" and ids(done.flow) == [1080002]
    assert [n["type"] for n in done.flow.ui.nodes][-1] == "a"
    assert await verified(kit, identity)
    assert await kit.services.sessions.list_for_identity(identity.id) == []


async def test_the_mail_link_with_the_code_lands_as_a_get(kit: Kit) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    browser = client_for("browser")
    shown = await kit.verification.init("browser", browser, request_url="http://x")
    await kit.verification.submit(shown.flow.id, {"method": "code", "email": email}, browser)
    code = kit.outbox.last(email)[1]["verification_code"]
    elsewhere = client_for("browser", csrf_submitted=None)  # another browser, no CSRF token sent
    done = await kit.verification.submit(shown.flow.id, {"code": code}, elsewhere, landing=True)
    assert isinstance(done, ShowFlow) and done.flow.state == "passed_challenge"
    assert done.flow.csrf_token == elsewhere.csrf_token  # the finished flow shows in that browser
    assert await verified(kit, identity)


async def test_a_post_without_csrf_is_refused(kit: Kit) -> None:
    browser = client_for("browser")
    shown = await kit.verification.init("browser", browser, request_url="http://x")
    attacker = client_for("browser", csrf_submitted=None)
    with pytest.raises(errors.CSRFViolation):
        await kit.verification.submit(shown.flow.id, {"method": "code", "email": "a@example.test"}, attacker)


async def test_link_verification_and_expired_link(kit: Kit, services_factory: Any, sqlite_dsn: str) -> None:
    kit = await make_kit(
        services_factory,
        sqlite_dsn,
        selfservice={
            "methods": {"link": {"enabled": True, "config": {"lifespan": "15m"}}},
            "flows": {"verification": {"enabled": True, "use": "link"}},
        },
    )
    identity = await kit.identity()
    email = identity.traits["email"]
    client = client_for("api")
    shown = await kit.verification.init("api", client, request_url="http://x")
    await kit.verification.submit(shown.flow.id, {"method": "link", "email": email}, client)
    template, data = kit.outbox.last(email)
    assert template == "verification_valid"
    token = data["verification_url"].split("token=")[1]
    kit.clock.advance(timedelta(minutes=15))
    expired = await kit.verification.submit(shown.flow.id, {"token": token}, client, landing=True)
    assert isinstance(expired, FlowReplaced) and ids(expired.flow) == [4070005]
    assert not await verified(kit, identity)

    await kit.verification.submit(expired.flow.id, {"method": "link", "email": email}, client)
    token = kit.outbox.last(email)[1]["verification_url"].split("token=")[1]
    kit.clock.advance(timedelta(minutes=15) - timedelta(milliseconds=1))
    done = await kit.verification.submit(expired.flow.id, {"token": token}, client, landing=True)
    assert isinstance(done, ShowFlow) and done.flow.state == "passed_challenge"
    assert await verified(kit, identity)


async def test_unknown_address_answers_sent(kit: Kit) -> None:
    client = client_for("api")
    shown = await kit.verification.init("api", client, request_url="http://x")
    out = await kit.verification.submit(
        shown.flow.id, {"method": "code", "email": "who@example.test"}, client
    )
    assert isinstance(out, ShowFlow) and ids(out.flow) == [1080003] and kit.outbox.sent == []


def _wired(services: Any, config_hooks: Any = None) -> tuple[Any, Outbox]:
    outbox = Outbox()
    flows, _ = build_flows(
        services.config,
        services.kv,
        services.identities,
        services.schemas,
        services.sessions,
        services.assurance,
        courier=outbox,
        addresses=services.identity_store,
    )
    return flows, outbox


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_registration_mails_each_address_and_continues_with_verification(
    services_factory: Any, sqlite_dsn: str, flow_type: str
) -> None:
    from tests.conftest import make_config

    config = make_config(
        dsn=sqlite_dsn,
        selfservice={
            "flows": {
                "verification": {"enabled": True},
                "registration": {"after": {"hooks": [{"hook": "session"}, {"hook": "show_verification_ui"}]}},
            }
        },
    )
    services = await services_factory(config)
    flows, outbox = _wired(services)
    client = client_for(flow_type)
    shown = await flows.registration.init(flow_type, client, request_url="http://x")
    body = {"method": "password", "password": PASSWORD, "traits": {"email": "new@example.test"}}
    done = await flows.registration.submit(shown.flow.id, body, client)
    assert isinstance(done, Completed)
    [item] = done.continue_with
    assert item["action"] == "show_verification_ui"
    assert item["flow"]["verifiable_address"] == "new@example.test"
    assert ("url" in item["flow"]) == (flow_type == "browser")
    if flow_type == "browser":
        assert done.redirect_to == item["flow"]["url"]
    template, data = outbox.last("new@example.test")
    assert template == "verification_code_valid"
    vflow = await flows.verification.fetch(__import__("uuid").UUID(item["flow"]["id"]), client)
    assert vflow.state == "sent_email"
    ok = await flows.verification.submit(
        vflow.id, {"method": "code", "code": data["verification_code"]}, client
    )
    assert isinstance(ok, ShowFlow) and ok.flow.state == "passed_challenge"


async def test_login_requires_a_verified_address_when_configured(
    services_factory: Any, sqlite_dsn: str
) -> None:
    from tests.conftest import make_config

    config = make_config(
        dsn=sqlite_dsn,
        selfservice={
            "flows": {
                "verification": {"enabled": True},
                "login": {"after": {"hooks": [{"hook": "require_verified_address"}]}},
            }
        },
    )
    services = await services_factory(config)
    flows, _outbox = _wired(services)
    from sidecar.identity.manager import IdentitySpec

    identity = await services.identities.create(
        IdentitySpec(traits={"email": "late@example.test"}, password_plain=PASSWORD)
    )
    client = client_for("api")
    login = await flows.login.init("api", client, request_url="http://x")
    body = {"method": "password", "identifier": "late@example.test", "password": PASSWORD}
    with pytest.raises(errors.VerifiedAddressRequired):
        await flows.login.submit(login.flow.id, body, client)
    assert await services.sessions.list_for_identity(identity.id) == []
    await services.identity_store.mark_address_verified(identity.verifiable_addresses[0].id)
    login = await flows.login.init("api", client, request_url="http://x")
    assert isinstance(await flows.login.submit(login.flow.id, body, client), Completed)
