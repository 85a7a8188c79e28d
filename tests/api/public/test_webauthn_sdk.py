"""The official SDK (ory-kratos-client 25.4.0) parses every flow carrying WebAuthn, passkey and
code nodes (script nodes, ``onclickTrigger`` / ``onloadTrigger``, ``username webauthn``)."""

from __future__ import annotations

import uuid
from pathlib import Path

from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.models.update_registration_flow_body import UpdateRegistrationFlowBody
from ory_kratos_client.models.update_registration_flow_with_password_method import (
    UpdateRegistrationFlowWithPasswordMethod,
)

from tests.conftest import make_config
from tests.live import live_sidecar


def test_sdk_reads_key_and_code_nodes(tmp_path: Path) -> None:
    config = make_config(
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        selfservice={
            "methods": {
                "webauthn": {"enabled": True},
                "passkey": {"enabled": True},
                "code": {"passwordless_enabled": True, "mfa_enabled": True},
            },
            "flows": {"registration": {"after": {"hooks": [{"hook": "session"}]}}},
        },
    )
    with live_sidecar(config) as server, ApiClient(Configuration(host=server.public_url)) as client:
        fe = FrontendApi(client)
        login = fe.create_native_login_flow()
        nodes = [n.to_dict() for n in login.ui.nodes]
        triggers = {
            n["attributes"]["name"]: n["attributes"].get("onclickTrigger")
            for n in nodes
            if n["type"] == "input"
        }
        assert triggers["passkey_login_trigger"] == "oryPasskeyLogin"
        scripts = [n["attributes"] for n in nodes if n["type"] == "script"]
        assert scripts and scripts[0]["src"].endswith("/.well-known/ory/webauthn.js")

        registration = fe.create_native_registration_flow()
        names = {n.to_dict()["attributes"].get("name") for n in registration.ui.nodes}
        assert {"passkey_create_data", "passkey_register", "passkey_register_trigger"} <= names
        body = UpdateRegistrationFlowBody(
            UpdateRegistrationFlowWithPasswordMethod(
                method="password",
                password="correct-Horse-battery-staple-42",
                traits={"email": f"sdk-{uuid.uuid4().hex[:8]}@example.test"},
            )
        )
        token = fe.update_registration_flow(
            flow=registration.id, update_registration_flow_body=body
        ).session_token

        settings = fe.create_native_settings_flow(x_session_token=token)
        groups = {n.group for n in settings.ui.nodes}
        assert {"webauthn", "passkey"} <= groups
        step_up = fe.create_native_login_flow(aal="aal2", x_session_token=token)
        assert any(n.group == "code" for n in step_up.ui.nodes)
