"""Two-step registration and identifier-first login through ``sidecar serve``, driven with the
official ``ory-kratos-client`` SDK (issue 16, section 2). Kratos v25.4.0 references:
``selfservice/strategy/profile/registration.go`` and ``nodes.go`` (two-step registration),
``selfservice/strategy/idfirst/strategy_login.go`` and ``password/login.go`` (identifier first).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.exceptions import ApiException
from ory_kratos_client.models.update_login_flow_body import UpdateLoginFlowBody
from ory_kratos_client.models.update_login_flow_with_identifier_first_method import (
    UpdateLoginFlowWithIdentifierFirstMethod,
)
from ory_kratos_client.models.update_login_flow_with_password_method import UpdateLoginFlowWithPasswordMethod
from ory_kratos_client.models.update_registration_flow_body import UpdateRegistrationFlowBody
from ory_kratos_client.models.update_registration_flow_with_password_method import (
    UpdateRegistrationFlowWithPasswordMethod,
)
from ory_kratos_client.models.update_registration_flow_with_profile_method import (
    UpdateRegistrationFlowWithProfileMethod,
)

from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

PASSWORD = "a-long-two-step-passphrase"


def style_config(tmp: Path, public_port: int, admin_port: int, *, mitigate: bool) -> dict[str, Any]:
    cfg = base_config(tmp, public_port, admin_port)
    cfg["selfservice"]["flows"] = {
        "registration": {"style": "profile_first"},
        "login": {"style": "identifier_first"},
    }
    cfg["security"] = {"account_enumeration": {"mitigate": mitigate}}
    return cfg


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("styles")
    public_port, admin_port = ports()
    path = write_config(tmp / "cfg.yaml", style_config(tmp, public_port, admin_port, mitigate=False))
    migrate(path, tmp)
    with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


@pytest.fixture
def fe(server: Proc) -> Iterator[FrontendApi]:
    with ApiClient(Configuration(host=f"{server.public_url}/.auth")) as client:
        yield FrontendApi(client)


def _nodes(flow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name (value for submit buttons sharing a name) → node."""
    out = {}
    for n in flow["ui"]["nodes"]:
        a = n["attributes"]
        key = f"{a['name']}={a.get('value')}" if a.get("type") == "submit" else a["name"]
        out[key] = n
    return out


def _shape(flow: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(n["group"], n["attributes"]["name"], n["attributes"]["type"]) for n in flow["ui"]["nodes"]]


def _flow_of(exc: ApiException) -> dict[str, Any]:
    assert exc.status == 400, exc.body
    flow: dict[str, Any] = json.loads(exc.body or "{}")
    return flow


def _email() -> str:
    return f"style-{uuid.uuid4().hex[:8]}@example.test"


# --- two-step registration ---------------------------------------------------------------------


def _profile(
    fe: FrontendApi, flow_id: str, traits: dict[str, Any], screen: str | None = None
) -> dict[str, Any]:
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithProfileMethod(method="profile", traits=traits, screen=screen)
    )
    with pytest.raises(ApiException) as caught:
        fe.update_registration_flow(flow=flow_id, update_registration_flow_body=body)
    return _flow_of(caught.value)


def test_registration_starts_with_the_profile_screen(fe: FrontendApi) -> None:
    flow = fe.create_native_registration_flow().to_dict()
    nodes = _nodes(flow)
    assert flow["state"] == "choose_method"
    assert nodes["traits.email"]["group"] == "default"
    assert nodes["traits.email"]["attributes"]["type"] == "email"
    # profile/nodes.go nodeSubmitProfile: method=profile in the profile group, "Sign up" (1040001)
    assert nodes["method=profile"]["group"] == "profile"
    assert nodes["method=profile"]["meta"]["label"]["id"] == 1040001
    assert "password" not in nodes and "method=password" not in nodes


def test_profile_then_credentials_then_back_then_register(fe: FrontendApi) -> None:
    email = _email()
    flow_id = fe.create_native_registration_flow().id
    chosen = _profile(fe, flow_id, {"email": email})
    nodes = _nodes(chosen)
    # showCredentialsSelection: state choose_method, message 1040009, traits hidden with values
    assert chosen["state"] == "choose_method"
    assert [m["id"] for m in chosen["ui"]["messages"]] == [1040009]
    assert nodes["traits.email"]["attributes"]["type"] == "hidden"
    assert nodes["traits.email"]["attributes"]["value"] == email
    assert nodes["password"]["group"] == "password"
    assert nodes["method=password"]["group"] == "password"
    assert nodes["screen=previous"]["group"] == "profile"
    assert nodes["screen=previous"]["meta"]["label"]["id"] == 1040008
    assert "method=profile" not in nodes
    # The SDK reads the flow as it is now stored.
    assert fe.get_registration_flow(id=flow_id).state == "choose_method"

    back = _profile(fe, flow_id, {"email": email}, screen="previous")
    nodes = _nodes(back)
    assert not back["ui"].get("messages")
    assert nodes["traits.email"]["attributes"]["type"] == "email"
    assert nodes["traits.email"]["attributes"]["value"] == email
    assert "method=profile" in nodes and "password" not in nodes

    _profile(fe, flow_id, {"email": email})
    done = fe.update_registration_flow(
        flow=flow_id,
        update_registration_flow_body=UpdateRegistrationFlowBody(
            UpdateRegistrationFlowWithPasswordMethod(
                method="password", password=PASSWORD, traits={"email": email}
            )
        ),
    )
    assert done.to_dict()["identity"]["traits"]["email"] == email and done.session_token


def test_invalid_traits_stay_on_the_profile_screen(fe: FrontendApi) -> None:
    flow_id = fe.create_native_registration_flow().id
    shown = _profile(fe, flow_id, {"email": "not-an-address"})
    nodes = _nodes(shown)
    assert nodes["traits.email"]["messages"], shown
    assert nodes["traits.email"]["attributes"]["value"] == "not-an-address"
    assert "method=profile" in nodes and "password" not in nodes


def test_one_post_still_registers(fe: FrontendApi) -> None:
    """Kratos' password strategy registers traits + password in one submission in either style."""
    email = _email()
    flow_id = fe.create_native_registration_flow().id
    done = fe.update_registration_flow(
        flow=flow_id,
        update_registration_flow_body=UpdateRegistrationFlowBody(
            UpdateRegistrationFlowWithPasswordMethod(
                method="password", password=PASSWORD, traits={"email": email}
            )
        ),
    )
    assert done.to_dict()["identity"]["traits"]["email"] == email


# --- identifier-first login --------------------------------------------------------------------


def _register(fe: FrontendApi, email: str) -> None:
    flow_id = fe.create_native_registration_flow().id
    fe.update_registration_flow(
        flow=flow_id,
        update_registration_flow_body=UpdateRegistrationFlowBody(
            UpdateRegistrationFlowWithPasswordMethod(
                method="password", password=PASSWORD, traits={"email": email}
            )
        ),
    )


def _identify(fe: FrontendApi, flow_id: str, identifier: str) -> dict[str, Any]:
    body = UpdateLoginFlowBody(
        UpdateLoginFlowWithIdentifierFirstMethod(method="identifier_first", identifier=identifier)
    )
    with pytest.raises(ApiException) as caught:
        fe.update_login_flow(flow=flow_id, update_login_flow_body=body)
    return _flow_of(caught.value)


def test_login_starts_with_the_identifier(fe: FrontendApi) -> None:
    flow = fe.create_native_login_flow().to_dict()
    nodes = _nodes(flow)
    # idfirst PopulateLoginMethodIdentifierFirstIdentification
    assert nodes["identifier"]["group"] == "identifier_first"
    assert nodes["identifier"]["attributes"]["autocomplete"] == "username webauthn"
    assert nodes["identifier"]["attributes"]["required"] is True
    assert nodes["method=identifier_first"]["meta"]["label"]["id"] == 1070009
    assert "password" not in nodes


def test_identifier_then_password(fe: FrontendApi) -> None:
    email = _email()
    _register(fe, email)
    flow_id = fe.create_native_login_flow().id
    second = _identify(fe, flow_id, email.upper())
    nodes = _nodes(second)
    assert second["state"] == "choose_method" and not second["ui"].get("messages")
    assert nodes["identifier"]["attributes"]["type"] == "hidden"
    assert nodes["identifier"]["attributes"]["value"] == email.upper()
    assert nodes["password"]["group"] == "password"
    assert nodes["method=password"]["meta"]["label"]["id"] == 1010022
    assert "method=identifier_first" not in nodes
    assert fe.get_login_flow(id=flow_id).state == "choose_method"  # the SDK parses the stored flow
    done = fe.update_login_flow(
        flow=flow_id,
        update_login_flow_body=UpdateLoginFlowBody(
            UpdateLoginFlowWithPasswordMethod(method="password", identifier=email, password=PASSWORD)
        ),
    )
    assert done.to_dict()["session"]["identity"]["traits"]["email"] == email


def test_an_unknown_identifier_looks_like_a_known_one(fe: FrontendApi) -> None:
    known = _email()
    _register(fe, known)
    seen = []
    for identifier in (known, _email()):
        flow = _identify(fe, fe.create_native_login_flow().id, identifier)
        seen.append((_shape(flow), flow["ui"].get("messages"), flow["state"]))
    assert seen[0] == seen[1]
    unknown_flow = fe.create_native_login_flow().id
    _identify(fe, unknown_flow, "nobody@example.test")
    with pytest.raises(ApiException) as caught:
        fe.update_login_flow(
            flow=unknown_flow,
            update_login_flow_body=UpdateLoginFlowBody(
                UpdateLoginFlowWithPasswordMethod(
                    method="password", identifier="nobody@example.test", password=PASSWORD
                )
            ),
        )
    assert [m["id"] for m in _flow_of(caught.value)["ui"]["messages"]] == [4000006]


def test_an_empty_identifier_is_required(fe: FrontendApi) -> None:
    flow = _identify(fe, fe.create_native_login_flow().id, " ")
    nodes = _nodes(flow)
    assert [m["id"] for m in nodes["identifier"]["messages"]] == [4000002]
    assert "method=identifier_first" in nodes
