"""``PublicApiClient``: the page callables over the public API, errors mapped back to classes."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from sidecar import errors
from sidecar.ui.api_client import PublicApiClient, error_from_envelope
from tests.ui import fakes


def browser_request(cookie: str = "csrf_token_x=abc; ory_kratos_session=tok") -> Request:
    headers = [(b"cookie", cookie.encode()), (b"user-agent", b"test"), (b"authorization", b"Bearer leak")]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


def envelope(error_id: str, code: int) -> dict[str, Any]:
    return {"error": {"id": error_id, "code": code, "message": "expired"}}


def client_for(handler: Any) -> PublicApiClient:
    return PublicApiClient("http://127.0.0.1:4433/.auth", transport=httpx.MockTransport(handler))


async def test_fetch_flow_forwards_only_the_browser_cookies() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=fakes.login_flow("f1"))

    client = client_for(handler)
    flow = await client.fetch_flow("login", "f1", browser_request())
    assert flow["id"] == "f1"
    sent = seen[0]
    assert str(sent.url) == "http://127.0.0.1:4433/.auth/self-service/login/flows?id=f1"
    assert sent.headers["cookie"] == "csrf_token_x=abc; ory_kratos_session=tok"
    assert sent.headers["accept"] == "application/json"
    assert "authorization" not in sent.headers
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (404, {"error": {"code": 404, "message": "not found"}}, errors.NotFound),
        (
            403,
            {"error": {"id": "security_csrf_violation", "code": 403, "message": "csrf"}},
            errors.CSRFViolation,
        ),
        (401, {"error": {"id": "session_inactive", "code": 401, "message": "x"}}, errors.SessionInactive),
        (
            410,
            {"error": {"id": "self_service_flow_expired", "code": 410, "message": "x"}},
            errors.FlowExpired,
        ),
        (503, {"errors": {"database": "down"}}, errors.ServiceUnavailable),
        (500, "not json", errors.InternalError),
    ],
    ids=["404", "csrf", "inactive", "expired", "503", "500-text"],
)
async def test_error_envelopes_become_error_classes(
    status: int, body: Any, cls: type[errors.SidecarError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        content = json.dumps(body) if not isinstance(body, str) else body
        return httpx.Response(status, content=content)

    client = client_for(handler)
    with pytest.raises(cls):
        await client.fetch_flow("login", "f1", browser_request())


def test_envelope_siblings_land_in_extra() -> None:
    exc = error_from_envelope(
        410,
        {
            "error": {
                "id": "self_service_flow_expired",
                "code": 410,
                "message": "expired",
                "reason": "retry",
            },
            "use_flow_id": "new",
        },
    )
    assert isinstance(exc, errors.FlowExpired)
    assert exc.extra == {"use_flow_id": "new"}
    assert exc.reason == "retry"
    assert exc.message == "expired"


async def test_whoami_and_logout_url_signed_out_are_none() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"id": "session_inactive", "code": 401, "message": "x"}})

    client = client_for(handler)
    assert await client.whoami(browser_request()) is None
    assert await client.logout_url(browser_request()) is None


async def test_whoami_and_logout_url_signed_in() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/sessions/whoami"):
            return httpx.Response(200, json=fakes.session())
        return httpx.Response(200, json={"logout_url": fakes.LOGOUT_URL, "logout_token": "ory_lo_x"})

    client = client_for(handler)
    session = await client.whoami(browser_request())
    assert session is not None and session["identity"]["traits"]["email"] == "ada@example.com"
    assert await client.logout_url(browser_request()) == fakes.LOGOUT_URL


async def test_unreachable_api_is_an_outage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    client = client_for(handler)
    with pytest.raises(errors.ServiceUnavailable):
        await client.whoami(browser_request())
    with pytest.raises(errors.ServiceUnavailable):
        await client.fetch_error("e1")
