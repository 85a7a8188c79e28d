"""``web_hook`` before every flow and after settings, recovery and verification (Kratos
``selfservice/hook/web_hook.go``: ``Execute*PreHook``, ``ExecuteSettingsPostPersistHook``,
``ExecutePostRecoveryHook``, ``ExecutePostVerificationHook``), against a real local receiver."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.api.public.conftest import Harness, HarnessFactory, harnesses
from tests.api.public.helpers import api_flow, register_api
from tests.receiver import Receiver, http_receiver

BODY = "function(ctx) { flow_id: ctx.flow.id, flow_type: ctx.flow.type, " + (
    "identity: if std.objectHas(ctx, 'identity') then ctx.identity.traits.email else null }"
)


@pytest.fixture
async def harness_factory(services_factory: Any, sqlite_dsn: str) -> AsyncIterator[HarnessFactory]:
    async with harnesses(services_factory, sqlite_dsn) as factory:
        yield factory


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as found:
        yield found


def hook(receiver: Receiver, path: str) -> dict[str, Any]:
    body = "base64://" + base64.b64encode(BODY.encode()).decode()
    return {"hook": "web_hook", "config": {"url": receiver.url + path, "method": "POST", "body": body}}


def calls(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received if r.path == path]


async def code_from_mail(h: Harness, email: str) -> str:
    [message, *_] = await h.services.database.courier.list(page_size=10, recipient=email)
    found = re.search(r"^(\d{6})$", message.body, re.M)
    assert found, message.body
    return found.group(1)


async def test_before_and_after_hooks_of_every_flow(
    harness_factory: HarnessFactory, receiver: Receiver
) -> None:
    flows: dict[str, Any] = {
        kind: {"before": {"hooks": [hook(receiver, f"/before/{kind}")]}}
        for kind in ("login", "registration", "settings", "recovery", "verification")
    }
    flows["recovery"].update(enabled=True, after={"hooks": [hook(receiver, "/after/recovery")]})
    flows["verification"].update(enabled=True, after={"hooks": [hook(receiver, "/after/verification")]})
    flows["settings"]["after"] = {"password": {"hooks": [hook(receiver, "/after/settings")]}}
    h = await harness_factory(selfservice={"flows": flows})
    email = "every-flow@example.test"

    registered = await register_api(h.client, email)
    assert registered.status_code == 200, registered.text
    token = registered.json()["session_token"]
    [before] = calls(receiver, "/before/registration")
    assert before["flow_type"] == "api" and before["identity"] is None

    login = await api_flow(h.client, "login")
    assert calls(receiver, "/before/login") == [
        {"flow_id": login["id"], "flow_type": "api", "identity": None}
    ]

    # Settings: before on init, after once the new password is saved.
    headers = {"X-Session-Token": token}
    settings = (await h.client.get("/.auth/self-service/settings/api", headers=headers)).json()
    assert calls(receiver, "/before/settings")[0]["flow_id"] == settings["id"]
    changed = await h.client.post(
        f"/.auth/self-service/settings?flow={settings['id']}",
        json={"method": "password", "password": "another-Horse-battery-staple-43"},
        headers=headers,
    )
    assert changed.status_code == 200, changed.text
    assert calls(receiver, "/after/settings") == [
        {"flow_id": settings["id"], "flow_type": "api", "identity": email}
    ]

    # Verification of the registration's address: the after hook sees the identity.
    verification = await api_flow(h.client, "verification")
    assert calls(receiver, "/before/verification")[0]["flow_id"] == verification["id"]
    url = f"/.auth/self-service/verification?flow={verification['id']}"
    await h.client.post(url, json={"method": "code", "email": email})
    code = await code_from_mail(h, email)
    verified = await h.client.post(url, json={"method": "code", "code": code})
    assert verified.status_code == 200, verified.text
    assert calls(receiver, "/after/verification") == [
        {"flow_id": verification["id"], "flow_type": "api", "identity": email}
    ]

    # Recovery: before on init, after when the code is accepted.
    recovery = await api_flow(h.new_client(), "recovery")
    assert calls(receiver, "/before/recovery")[0]["flow_id"] == recovery["id"]
    url = f"/.auth/self-service/recovery?flow={recovery['id']}"
    await h.client.post(url, json={"method": "code", "email": email})
    code = await code_from_mail(h, email)
    recovered = await h.client.post(url, json={"method": "code", "code": code})
    assert recovered.status_code == 200, recovered.text
    assert calls(receiver, "/after/recovery") == [
        {"flow_id": recovery["id"], "flow_type": "api", "identity": email}
    ]
