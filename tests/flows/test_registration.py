"""sidecar/flows/registration.py without HTTP, for browser and API flows."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sidecar import errors
from sidecar.flows.model import flow_to_json
from sidecar.flows.outcome import AlreadySignedIn, Completed, ShowFlow
from tests.conftest import make_config
from tests.flows.conftest import FLOW_TYPES, PASSWORD, api_client, client_for

URL = "http://127.0.0.1:4433/.auth/self-service/registration/api"


def _email() -> str:
    return f"r-{uuid.uuid4().hex[:8]}@example.test"


def _layout(flow: Any) -> list[tuple[str, str, str, bool, int | None]]:
    return [
        (
            n["attributes"]["name"],
            n["group"],
            n["attributes"]["type"],
            n["attributes"].get("required", False),
            n["meta"].get("label", {}).get("id"),
        )
        for n in flow_to_json(flow)["ui"]["nodes"]
    ]


async def _submit(services: Any, flow_type: str, body: dict[str, Any]) -> Any:
    client = client_for(flow_type)
    flow = (await services.selfservice.registration.init(flow_type, client, request_url=URL)).flow
    return await services.selfservice.registration.submit(flow.id, body, client)


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_init_layout(services: Any, flow_type: str) -> None:
    out = await services.selfservice.registration.init(flow_type, client_for(flow_type), request_url=URL)
    assert isinstance(out, ShowFlow)
    expected: list[tuple[str, str, str, bool, int | None]] = [
        ("traits.email", "password", "email", True, 1070002),
        ("traits.name.first", "password", "text", False, 1070002),
        ("traits.name.last", "password", "text", False, 1070002),
        ("password", "password", "password", True, 1070001),
        ("method", "password", "submit", False, 1040001),
    ]
    if flow_type == "browser":
        expected.insert(0, ("csrf_token", "default", "hidden", True, None))
    assert _layout(out.flow) == expected
    email = flow_to_json(out.flow)["ui"]["nodes"][-5]
    assert email["meta"]["label"] == {
        "id": 1070002,
        "text": "E-Mail",
        "type": "info",
        "context": {"title": "E-Mail"},
    }
    assert email["attributes"]["autocomplete"] == "email"


async def test_traits_in_default_group_without_legacy_one_step(
    services_factory: Any, sqlite_dsn: str
) -> None:
    services = await services_factory(
        make_config(
            dsn=sqlite_dsn, selfservice={"flows": {"registration": {"enable_legacy_one_step": False}}}
        )
    )
    out = await services.selfservice.registration.init("api", api_client(), request_url=URL)
    assert {n[1] for n in _layout(out.flow) if n[0].startswith("traits.")} == {"default"}


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
async def test_success_signs_in(services: Any, flow_type: str) -> None:
    email = _email()
    done = await _submit(
        services, flow_type, {"method": "password", "traits": {"email": email}, "password": PASSWORD}
    )
    assert isinstance(done, Completed)
    assert done.identity.traits == {"email": email}
    assert done.session is not None and done.session.identity_id == done.identity.id
    assert (await services.sessions.resolve(done.token)).id == done.session.id


@pytest.mark.parametrize(
    ("body", "node", "ids"),
    [
        ({"traits": {}, "password": PASSWORD}, "traits.email", [4000002]),
        ({"traits": {"email": "x@example.test"}}, "password", [4000002]),
        ({"traits": {"email": "x@example.test"}, "password": "short"}, "password", [4000032]),
        (
            {"traits": {"email": "jane.doe@example.test"}, "password": "jane.doe@example.test1"},
            "password",
            [4000031],
        ),
        ({"traits": {"email": "x@example.test"}, "password": "password123"}, "password", [4000005]),
    ],
)
async def test_validation_messages(services: Any, body: dict[str, Any], node: str, ids: list[int]) -> None:
    out = await _submit(services, "api", {"method": "password", **body})
    assert isinstance(out, ShowFlow) and out.status == 400
    found = next(n for n in out.flow.ui.nodes if n["attributes"]["name"] == node)
    assert [m["id"] for m in found["messages"]] == ids
    assert await services.identity_store.count() == 0


async def test_values_are_kept_but_never_the_password(services: Any) -> None:
    out = await _submit(
        services,
        "api",
        {
            "method": "password",
            "traits": {"email": "x@example.test", "name": {"first": "Ann"}},
            "password": "short",
        },
    )
    values = {n["attributes"]["name"]: n["attributes"].get("value") for n in out.flow.ui.nodes}
    assert values["traits.email"] == "x@example.test" and values["traits.name.first"] == "Ann"
    assert values["password"] is None


async def test_duplicate(services: Any) -> None:
    email = _email()
    body = {"method": "password", "traits": {"email": email}, "password": PASSWORD}
    assert isinstance(await _submit(services, "api", body), Completed)
    out = await _submit(services, "api", body)
    assert isinstance(out, ShowFlow) and [m["id"] for m in out.flow.ui.messages] == [4000007]


async def test_profile_method_is_not_answered_in_one_step_mode(services: Any) -> None:
    out = await _submit(services, "api", {"method": "profile", "traits": {"email": _email()}})
    assert isinstance(out, ShowFlow) and [m["id"] for m in out.flow.ui.messages] == [4010003]


async def test_without_session_hook(services_factory: Any, sqlite_dsn: str) -> None:
    services = await services_factory(
        make_config(dsn=sqlite_dsn, selfservice={"flows": {"registration": {"after": {"hooks": []}}}})
    )
    done = await _submit(
        services, "api", {"method": "password", "traits": {"email": _email()}, "password": PASSWORD}
    )
    assert isinstance(done, Completed) and done.session is None and done.token is None


async def test_disabled(services_factory: Any, sqlite_dsn: str) -> None:
    services = await services_factory(
        make_config(dsn=sqlite_dsn, selfservice={"flows": {"registration": {"enabled": False}}})
    )
    with pytest.raises(errors.FlowDisabled):
        await services.selfservice.registration.init("api", api_client(), request_url=URL)


async def test_signed_in(services: Any) -> None:
    issued = await services.sessions.issue(uuid.uuid4(), "password")
    out = await services.selfservice.registration.init(
        "api", api_client(session=issued.session), request_url=URL
    )
    assert isinstance(out, AlreadySignedIn)
