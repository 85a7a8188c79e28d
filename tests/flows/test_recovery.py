"""The recovery flow without HTTP: code and link, secrets' single use, expiry, limits, enumeration."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from sidecar import errors
from sidecar.flows.model import flow_to_json
from sidecar.flows.outcome import Completed, FlowReplaced, ShowFlow
from tests.flows.challenge_helpers import Kit, make_kit
from tests.flows.conftest import FLOW_TYPES, client_for

CODE_LIFESPAN = timedelta(minutes=10)


@pytest.fixture
async def kit(services_factory: Any, sqlite_dsn: str) -> Kit:
    return await make_kit(
        services_factory,
        sqlite_dsn,
        selfservice={
            "methods": {"code": {"config": {"lifespan": "10m"}}, "link": {"enabled": True}},
            "flows": {"recovery": {"enabled": True, "lifespan": "2h"}},
        },
    )


def ids(flow: Any) -> list[int]:
    return [m["id"] for m in flow.ui.messages] + [m["id"] for n in flow.ui.nodes for m in n["messages"]]


async def start(kit: Kit, flow_type: str, email: str) -> tuple[Any, Any]:
    client = client_for(flow_type)
    shown = await kit.recovery.init(flow_type, client, request_url="http://x/self-service/recovery/api")  # type: ignore[arg-type]
    assert isinstance(shown, ShowFlow)
    sent = await kit.recovery.submit(shown.flow.id, {"method": "code", "email": email}, client)
    assert isinstance(sent, ShowFlow) and sent.status == 200
    return sent.flow, client


async def submit_code(kit: Kit, flow: Any, client: Any, code: str) -> Any:
    return await kit.recovery.submit(flow.id, {"method": "code", "code": code}, client)


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_code_recovers_with_an_aal1_session_and_settings_continuation(kit: Kit, flow_type: str) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    flow, client = await start(kit, flow_type, email)
    assert flow.state == "sent_email" and ids(flow) == [1060003]
    names = [n["attributes"]["name"] for n in flow.ui.nodes]
    assert "code" in names and names[-1] == "email"  # the resend button
    template, data = kit.outbox.last(email)
    assert template == "recovery_code_valid" and len(data["recovery_code"]) == 6
    done = await submit_code(kit, flow, client, data["recovery_code"])
    assert isinstance(done, Completed)
    assert done.identity.id == identity.id and done.session is not None
    assert done.session.aal == "aal1"
    assert [m.method for m in done.session.authentication_methods] == ["code_recovery"]
    assert done.flow.state == "passed_challenge" and ids(done.flow) == [1060001]
    actions = [c["action"] for c in done.continue_with]
    assert ("set_ory_session_token" in actions) == (flow_type == "api")
    assert await kit.services.sessions.resolve(done.token) is not None


async def test_a_code_works_once_even_when_raced(kit: Kit) -> None:
    identity = await kit.identity()
    flow, client = await start(kit, "api", identity.traits["email"])
    code = kit.outbox.last(identity.traits["email"])[1]["recovery_code"]
    results = await asyncio.gather(*(submit_code(kit, flow, client, code) for _ in range(4)))
    assert sum(isinstance(r, Completed) for r in results) == 1
    for r in results:
        if isinstance(r, ShowFlow):
            assert ids(r.flow) in ([4060006], [4060001])
    again = await submit_code(kit, flow, client, code)
    assert isinstance(again, ShowFlow) and ids(again.flow) == [4060001]


async def test_code_expiry_both_edges(kit: Kit) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    flow, client = await start(kit, "api", email)
    code = kit.outbox.last(email)[1]["recovery_code"]
    kit.clock.advance(CODE_LIFESPAN - timedelta(milliseconds=1))
    assert isinstance(await submit_code(kit, flow, client, code), Completed)

    flow, client = await start(kit, "api", email)
    code = kit.outbox.last(email)[1]["recovery_code"]
    kit.clock.advance(CODE_LIFESPAN)
    replaced = await submit_code(kit, flow, client, code)
    assert isinstance(replaced, FlowReplaced)
    assert replaced.flow.id != flow.id and ids(replaced.flow) == [4060005]
    assert replaced.flow.state == "choose_method"


async def test_flow_expiry_replaces_the_flow(kit: Kit) -> None:
    identity = await kit.identity()
    flow, client = await start(kit, "browser", identity.traits["email"])
    kit.clock.advance(timedelta(hours=2))
    replaced = await submit_code(kit, flow, client, "123456")
    assert isinstance(replaced, FlowReplaced) and ids(replaced.flow) == [4060005]
    assert replaced.flow.csrf_token == flow.csrf_token


async def test_flow_a_code_does_not_open_flow_b(kit: Kit) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    _flow_a, _ = await start(kit, "api", email)
    code_a = kit.outbox.last(email)[1]["recovery_code"]
    flow_b, client_b = await start(kit, "api", email)
    shown = await submit_code(kit, flow_b, client_b, code_a)
    assert isinstance(shown, ShowFlow) and shown.status == 200 and ids(shown.flow) == [4060006]


async def test_six_wrong_codes_kill_the_flow(kit: Kit) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    flow, client = await start(kit, "api", email)
    code = kit.outbox.last(email)[1]["recovery_code"]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        shown = await submit_code(kit, flow, client, wrong)
        assert isinstance(shown, ShowFlow) and ids(shown.flow) == [4060006]
    with pytest.raises(errors.BadRequest, match="submitted too often"):
        await submit_code(kit, flow, client, wrong)
    with pytest.raises(errors.BadRequest, match="submitted too often"):
        await submit_code(kit, flow, client, code)  # even the right code, now


async def test_resend_replaces_the_code_but_not_the_count(kit: Kit) -> None:
    identity = await kit.identity()
    email = identity.traits["email"]
    flow, client = await start(kit, "api", email)
    first = kit.outbox.last(email)[1]["recovery_code"]
    for _ in range(3):
        await submit_code(kit, flow, client, "999999" if first != "999999" else "888888")
    resent = await kit.recovery.submit(flow.id, {"method": "code", "email": email}, client)
    assert isinstance(resent, ShowFlow) and ids(resent.flow) == [1060003]
    second = kit.outbox.last(email)[1]["recovery_code"]
    if second != first:
        shown = await submit_code(kit, flow, client, first)  # 4th: the old code is gone
        assert isinstance(shown, ShowFlow) and ids(shown.flow) == [4060006]
    else:
        await submit_code(kit, flow, client, "x")
    await submit_code(kit, flow, client, "x")  # 5th
    with pytest.raises(errors.BadRequest):
        await submit_code(kit, flow, client, second)  # 6th, right code, still refused


def _shape(flow: Any) -> Any:
    body = flow_to_json(flow)
    for key in ("id", "expires_at", "issued_at", "request_url"):
        body.pop(key)
    body["ui"].pop("action")
    return body


@pytest.mark.parametrize("mitigate", [False, True])
@pytest.mark.parametrize("notify", [False, True])
async def test_unknown_addresses_get_the_same_answer(
    services_factory: Any, sqlite_dsn: str, mitigate: bool, notify: bool
) -> None:
    kit = await make_kit(
        services_factory,
        sqlite_dsn,
        selfservice={"flows": {"recovery": {"enabled": True, "notify_unknown_recipients": notify}}},
        security={"account_enumeration": {"mitigate": mitigate}},
    )
    known = (await kit.identity()).traits["email"]
    unknown = f"nobody-{uuid.uuid4().hex[:6]}@example.test"
    flow_known, _ = await start(kit, "api", known)
    flow_unknown, _ = await start(kit, "api", unknown)
    shape_known, shape_unknown = _shape(flow_known), _shape(flow_unknown)
    for node in shape_known["ui"]["nodes"] + shape_unknown["ui"]["nodes"]:
        if node["attributes"]["name"] == "email":
            node["attributes"].pop("value")
    assert shape_known == shape_unknown
    assert kit.outbox.last(known)[0] == "recovery_code_valid"
    to_unknown = [t for t, r, _ in kit.outbox.sent if r == unknown]
    assert to_unknown == (["recovery_code_invalid"] if notify else [])


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("victim@example.test\r\nBcc: evil@example.test", id="crlf"),
        pytest.param("victim@example.test\nBcc: evil@example.test", id="lf"),
        pytest.param("victim@example.test\x85", id="nel"),
        pytest.param("not-an-address", id="no-at"),
        pytest.param("", id="empty"),
    ],
)
async def test_bad_addresses_are_refused_before_anything_is_sent(kit: Kit, address: str) -> None:
    client = client_for("api")
    shown = await kit.recovery.init("api", client, request_url="http://x")
    assert isinstance(shown, ShowFlow)
    out = await kit.recovery.submit(shown.flow.id, {"method": "code", "email": address}, client)
    assert isinstance(out, ShowFlow) and out.status == 400
    assert ids(out.flow)[0] in (4000040, 4000002)
    assert kit.outbox.sent == []


async def test_sends_per_address_are_limited(services_factory: Any, sqlite_dsn: str) -> None:
    kit = await make_kit(services_factory, sqlite_dsn, security={"rate_limit": {"send_per_address": 2}})
    email = (await kit.identity()).traits["email"]
    for _ in range(2):
        await start(kit, "api", email)
    client = client_for("api")
    shown = await kit.recovery.init("api", client, request_url="http://x")
    assert isinstance(shown, ShowFlow)
    out = await kit.recovery.submit(shown.flow.id, {"method": "code", "email": email.upper()}, client)
    assert isinstance(out, ShowFlow) and out.status == 429 and ids(out.flow) == [4000429]
    assert len(kit.outbox.sent) == 2


async def test_recovery_needs_no_session(kit: Kit) -> None:
    identity = await kit.identity()
    issued = await kit.services.sessions.issue(identity.id, "password")
    client = client_for("api", session=issued.session)
    out = await kit.recovery.init("api", client, request_url="http://x")
    assert not isinstance(out, ShowFlow)


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_link_recovers_and_is_single_use(
    services_factory: Any, sqlite_dsn: str, flow_type: str
) -> None:
    kit = await make_kit(
        services_factory,
        sqlite_dsn,
        selfservice={
            "methods": {"link": {"enabled": True}},
            "flows": {"recovery": {"enabled": True, "use": "link"}},
        },
    )
    identity = await kit.identity()
    email = identity.traits["email"]
    client = client_for(flow_type)
    shown = await kit.recovery.init(flow_type, client, request_url="http://x")  # type: ignore[arg-type]
    assert isinstance(shown, ShowFlow)
    assert [n["attributes"]["value"] for n in shown.flow.ui.nodes if n["attributes"]["name"] == "method"] == [
        "link"
    ]
    sent = await kit.recovery.submit(shown.flow.id, {"method": "link", "email": email}, client)
    assert isinstance(sent, ShowFlow) and ids(sent.flow) == [1060002]
    template, data = kit.outbox.last(email)
    assert template == "recovery_valid"
    token = data["recovery_url"].split("token=")[1]
    assert len(token) >= 22  # >= 128 bits of alphanumerics
    wrong = token[:-1] + ("y" if token.endswith("x") else "x")  # one character off, never the token itself
    bad = await kit.recovery.submit(shown.flow.id, {"token": wrong}, client_for(flow_type), landing=True)
    assert isinstance(bad, ShowFlow) and ids(bad.flow) == [4060004]
    other = client_for(flow_type)  # the mail may be opened in another browser
    done = await kit.recovery.submit(shown.flow.id, {"token": token}, other, landing=True)
    assert isinstance(done, Completed) and done.session is not None
    assert done.session.authentication_methods[0].method == "link_recovery"
    again = await kit.recovery.submit(shown.flow.id, {"token": token}, other, landing=True)
    assert isinstance(again, ShowFlow) and ids(again.flow) == [4060001]


async def test_admin_code_flow(kit: Kit) -> None:
    identity = await kit.identity()
    made = await kit.recovery.create_for_admin(
        identity, kind="code", flow_type="api", expires_in=timedelta(minutes=5)
    )
    assert made.flow.state == "sent_email" and kit.outbox.sent == []
    assert made.expires_at == kit.clock.now + timedelta(minutes=5)
    client = client_for("api")
    done = await submit_code(kit, made.flow, client, made.secret)
    assert isinstance(done, Completed) and done.identity.id == identity.id
