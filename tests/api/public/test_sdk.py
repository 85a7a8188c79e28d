"""API flows end to end with the official ``ory-kratos-client`` against a real uvicorn server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.exceptions import ApiException
from ory_kratos_client.models.perform_native_logout_body import PerformNativeLogoutBody
from ory_kratos_client.models.ui_node_input_attributes import UiNodeInputAttributes
from ory_kratos_client.models.update_login_flow_body import UpdateLoginFlowBody
from ory_kratos_client.models.update_login_flow_with_password_method import UpdateLoginFlowWithPasswordMethod
from ory_kratos_client.models.update_registration_flow_body import UpdateRegistrationFlowBody
from ory_kratos_client.models.update_registration_flow_with_password_method import (
    UpdateRegistrationFlowWithPasswordMethod,
)

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar

PASSWORD = "correct-Horse-battery-staple-42"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSidecar]:
    dsn = f"sqlite:///{tmp_path_factory.mktemp('sdk')}/sidecar.db"
    with live_sidecar(make_config(dsn=dsn)) as server:
        yield server


@pytest.fixture
def frontend(live: LiveSidecar) -> Iterator[FrontendApi]:
    with ApiClient(Configuration(host=live.public_url)) as client:
        yield FrontendApi(client)


def _register(fe: FrontendApi, email: str, password: str = PASSWORD) -> Any:
    flow = fe.create_native_registration_flow()
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithPasswordMethod(
            method="password", password=password, traits={"email": email}
        )
    )
    return fe.update_registration_flow(flow=flow.id, update_registration_flow_body=body)


def _login(fe: FrontendApi, identifier: str, password: str) -> Any:
    flow = fe.create_native_login_flow()
    body = UpdateLoginFlowBody(
        UpdateLoginFlowWithPasswordMethod(method="password", identifier=identifier, password=password)
    )
    return fe.update_login_flow(flow=flow.id, update_login_flow_body=body)


def _email() -> str:
    return f"sdk-{uuid.uuid4().hex[:8]}@example.test"


def _message_ids(body: str | None) -> list[int]:
    flow = json.loads(body or "{}")
    ids = [m["id"] for m in flow["ui"].get("messages", [])]
    return ids + [m["id"] for n in flow["ui"]["nodes"] for m in n["messages"]]


def test_register_login_whoami_logout(frontend: FrontendApi) -> None:
    email = _email()
    registered = _register(frontend, email)
    assert registered.identity.traits["email"] == email
    assert registered.session_token.startswith("ory_st_")
    assert registered.session.identity.id == registered.identity.id

    login = _login(frontend, email, PASSWORD)
    assert login.session_token and login.session_token != registered.session_token
    assert login.session.authentication_methods[0].method == "password"
    assert login.continue_with[0].actual_instance.action == "set_ory_session_token"

    me = frontend.to_session(x_session_token=login.session_token)
    assert me.identity is not None and me.identity.id == registered.identity.id
    assert me.authenticator_assurance_level == "aal1"

    frontend.perform_native_logout(PerformNativeLogoutBody(session_token=login.session_token))
    with pytest.raises(ApiException) as exc:
        frontend.to_session(x_session_token=login.session_token)
    assert exc.value.status == 401
    assert json.loads(exc.value.body or "{}")["error"]["id"] == "session_inactive"
    # The registration session is a different one and still works.
    assert frontend.to_session(x_session_token=registered.session_token).id == registered.session.id


def test_wrong_password_gives_4000006(frontend: FrontendApi) -> None:
    email = _email()
    _register(frontend, email)
    for identifier in (email, _email()):  # existing and unknown identifier: same answer
        with pytest.raises(ApiException) as exc:
            _login(frontend, identifier, "not-the-Password-123")
        assert exc.value.status == 400
        assert _message_ids(exc.value.body) == [4000006]


def test_duplicate_registration_gives_4000007(frontend: FrontendApi) -> None:
    email = _email()
    _register(frontend, email)
    with pytest.raises(ApiException) as exc:
        _register(frontend, email.upper())
    assert exc.value.status == 400
    assert 4000007 in _message_ids(exc.value.body)


def test_flows_parse_with_the_sdk_models(frontend: FrontendApi) -> None:
    login = frontend.create_native_login_flow()
    inputs = [n.attributes.actual_instance for n in login.ui.nodes]
    assert all(isinstance(a, UiNodeInputAttributes) for a in inputs)
    assert [a.name for a in inputs if isinstance(a, UiNodeInputAttributes)] == [
        "identifier",
        "password",
        "method",
    ]
    fetched = frontend.get_login_flow(id=login.id)
    assert fetched.id == login.id and fetched.type == "api"
    registration = frontend.create_native_registration_flow()
    assert frontend.get_registration_flow(id=registration.id).id == registration.id


def test_logout_unknown_token_is_403(frontend: FrontendApi) -> None:
    with pytest.raises(ApiException) as exc:
        frontend.perform_native_logout(PerformNativeLogoutBody(session_token="ory_st_" + "x" * 32))
    assert exc.value.status == 403


def test_login_with_valid_token_is_session_already_available(frontend: FrontendApi) -> None:
    registered = _register(frontend, _email())
    with pytest.raises(ApiException) as exc:
        frontend.create_native_login_flow(x_session_token=registered.session_token)
    assert exc.value.status == 400
    assert json.loads(exc.value.body or "{}")["error"]["id"] == "session_already_available"
    refreshed = frontend.create_native_login_flow(x_session_token=registered.session_token, refresh=True)
    assert refreshed.refresh is True
    assert [m.id for m in refreshed.ui.messages or []] == [1010003]


def test_my_sessions_with_the_sdk(frontend: FrontendApi) -> None:
    email = _email()
    first = _register(frontend, email)
    second = _login(frontend, email, PASSWORD)
    others = frontend.list_my_sessions(x_session_token=second.session_token)
    assert [s.id for s in others] == [first.session.id]
    count = frontend.disable_my_other_sessions(x_session_token=second.session_token)
    assert count.count == 1
    with pytest.raises(ApiException):
        frontend.to_session(x_session_token=first.session_token)


def _cookies(headers: Any) -> str:
    """The ``Cookie`` header a browser would send back, from the SDK response's Set-Cookie headers."""
    raw = headers.getlist("set-cookie") if hasattr(headers, "getlist") else [headers.get("set-cookie")]
    return "; ".join(c.split(";", 1)[0] for c in raw if c)


def test_browser_flows_with_the_sdk(frontend: FrontendApi) -> None:
    """A server-side app forwarding cookies, as Ory's docs describe (SPA-style JSON answers)."""
    email = _email()
    created = frontend.create_browser_registration_flow_with_http_info()
    csrf_cookie = _cookies(created.headers)
    flow = created.data
    csrf_node = next(
        a
        for n in flow.ui.nodes
        if isinstance(a := n.attributes.actual_instance, UiNodeInputAttributes)
        if a.name == "csrf_token"
    )
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithPasswordMethod(
            method="password", password=PASSWORD, traits={"email": email}, csrf_token=str(csrf_node.value)
        )
    )
    done = frontend.update_registration_flow_with_http_info(
        flow=flow.id, update_registration_flow_body=body, cookie=csrf_cookie
    )
    assert done.data.session_token is None and done.data.session is not None
    session_cookie = _cookies(done.headers)
    assert session_cookie.startswith("ory_kratos_session=ory_st_")

    me = frontend.to_session(cookie=session_cookie)
    assert me.identity is not None and me.identity.traits == {"email": email}
    logout = frontend.create_browser_logout_flow(cookie=session_cookie)
    assert logout.logout_token.startswith("ory_lo_")
    frontend.update_logout_flow(token=logout.logout_token, cookie=session_cookie)
    with pytest.raises(ApiException) as exc:
        frontend.to_session(cookie=session_cookie)
    assert exc.value.status == 401


def test_browser_submit_without_csrf_is_403_with_the_sdk(frontend: FrontendApi) -> None:
    created = frontend.create_browser_login_flow_with_http_info()
    body = UpdateLoginFlowBody(
        UpdateLoginFlowWithPasswordMethod(method="password", identifier="a@example.test", password=PASSWORD)
    )
    with pytest.raises(ApiException) as exc:
        frontend.update_login_flow(
            flow=created.data.id, update_login_flow_body=body, cookie=_cookies(created.headers)
        )
    assert exc.value.status == 403
    assert json.loads(exc.value.body or "{}")["error"]["id"] == "security_csrf_violation"
