"""Settings and second factors with the official ``ory-kratos-client`` against a real uvicorn server."""

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
from ory_kratos_client.models.update_login_flow_body import UpdateLoginFlowBody
from ory_kratos_client.models.update_login_flow_with_lookup_secret_method import (
    UpdateLoginFlowWithLookupSecretMethod,
)
from ory_kratos_client.models.update_login_flow_with_password_method import UpdateLoginFlowWithPasswordMethod
from ory_kratos_client.models.update_login_flow_with_totp_method import UpdateLoginFlowWithTotpMethod
from ory_kratos_client.models.update_registration_flow_body import UpdateRegistrationFlowBody
from ory_kratos_client.models.update_registration_flow_with_password_method import (
    UpdateRegistrationFlowWithPasswordMethod,
)
from ory_kratos_client.models.update_settings_flow_body import UpdateSettingsFlowBody
from ory_kratos_client.models.update_settings_flow_with_lookup_method import (
    UpdateSettingsFlowWithLookupMethod,
)
from ory_kratos_client.models.update_settings_flow_with_password_method import (
    UpdateSettingsFlowWithPasswordMethod,
)
from ory_kratos_client.models.update_settings_flow_with_profile_method import (
    UpdateSettingsFlowWithProfileMethod,
)
from ory_kratos_client.models.update_settings_flow_with_totp_method import UpdateSettingsFlowWithTotpMethod

from tests.api.public.mfa import fresh_step, mfa_selfservice, oathtool
from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar

PASSWORD = "correct-Horse-battery-staple-42"
NEW_PASSWORD = "another-Long-secret-phrase-77"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSidecar]:
    dsn = f"sqlite:///{tmp_path_factory.mktemp('sdk-settings')}/sidecar.db"
    selfservice = mfa_selfservice(
        settings={"after": {"password": {"hooks": [{"hook": "revoke_active_sessions"}]}}}
    )
    with live_sidecar(make_config(dsn=dsn, selfservice=selfservice)) as server:
        yield server


@pytest.fixture
def fe(live: LiveSidecar) -> Iterator[FrontendApi]:
    with ApiClient(Configuration(host=live.public_url)) as client:
        yield FrontendApi(client)


def _register(fe: FrontendApi) -> tuple[str, str]:
    email = f"sdk-set-{uuid.uuid4().hex[:8]}@example.test"
    flow = fe.create_native_registration_flow()
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithPasswordMethod(
            method="password", password=PASSWORD, traits={"email": email}
        )
    )
    done = fe.update_registration_flow(flow=flow.id, update_registration_flow_body=body)
    assert done.session_token is not None
    return email, done.session_token


def _login(fe: FrontendApi, email: str, password: str = PASSWORD) -> str:
    flow = fe.create_native_login_flow()
    body = UpdateLoginFlowBody(
        UpdateLoginFlowWithPasswordMethod(method="password", identifier=email, password=password)
    )
    token = fe.update_login_flow(flow=flow.id, update_login_flow_body=body).session_token
    assert token is not None
    return token


def _settings(fe: FrontendApi, token: str, method: Any) -> Any:
    flow = fe.create_native_settings_flow(x_session_token=token)
    return fe.update_settings_flow(
        flow=flow.id, update_settings_flow_body=UpdateSettingsFlowBody(method), x_session_token=token
    )


def _node(flow: Any, name: str) -> Any:
    for n in flow.ui.nodes:
        attrs = n.attributes.actual_instance
        if getattr(attrs, "name", None) == name or getattr(attrs, "id", None) == name:
            return attrs
    raise KeyError(name)


def test_profile_and_password(fe: FrontendApi) -> None:
    email, token = _register(fe)
    other = _login(fe, email)
    flow = fe.create_native_settings_flow(x_session_token=token)
    assert flow.state == "show_form" and flow.identity.traits == {"email": email}
    assert _node(flow, "totp_qr").src.startswith("data:image/png;base64,")
    fetched = fe.get_settings_flow(id=flow.id, x_session_token=token)
    assert fetched.id == flow.id

    done = _settings(
        fe,
        token,
        UpdateSettingsFlowWithProfileMethod(
            method="profile", traits={"email": email, "name": {"first": "Ada", "last": "Lovelace"}}
        ),
    )
    assert done.state == "success"
    assert done.ui.messages[0].id == 1050001
    me: Any = fe.to_session(x_session_token=token).identity
    assert me.traits["name"]["first"] == "Ada"

    with pytest.raises(ApiException) as bad:
        _settings(fe, token, UpdateSettingsFlowWithPasswordMethod(method="password", password="short"))
    assert bad.value.status == 400
    assert json.loads(bad.value.body or "{}")["state"] == "show_form"

    done = _settings(
        fe, token, UpdateSettingsFlowWithPasswordMethod(method="password", password=NEW_PASSWORD)
    )
    assert done.state == "success"
    with pytest.raises(ApiException) as gone:
        fe.to_session(x_session_token=other)
    assert gone.value.status == 401
    assert _login(fe, email, NEW_PASSWORD).startswith("ory_st_")


def test_totp_and_backup_codes(fe: FrontendApi) -> None:
    email, token = _register(fe)
    flow = fe.create_native_settings_flow(x_session_token=token)
    secret = _node(flow, "totp_secret_key").text.context["secret"]
    now = fresh_step()
    with pytest.raises(ApiException) as wrong:
        fe.update_settings_flow(
            flow=flow.id,
            update_settings_flow_body=UpdateSettingsFlowBody(
                UpdateSettingsFlowWithTotpMethod(method="totp", totp_code="000000")
            ),
            x_session_token=token,
        )
    assert wrong.value.status == 400
    done = fe.update_settings_flow(
        flow=flow.id,
        update_settings_flow_body=UpdateSettingsFlowBody(
            UpdateSettingsFlowWithTotpMethod(method="totp", totp_code=oathtool(secret, now))
        ),
        x_session_token=token,
    )
    assert done.state == "success"
    assert fe.to_session(x_session_token=token).authenticator_assurance_level == "aal2"

    flow = fe.create_native_settings_flow(x_session_token=token)
    shown = fe.update_settings_flow(
        flow=flow.id,
        update_settings_flow_body=UpdateSettingsFlowBody(
            UpdateSettingsFlowWithLookupMethod(method="lookup_secret", lookup_secret_regenerate=True)
        ),
        x_session_token=token,
    )
    codes = [s["context"]["secret"] for s in _node(shown, "lookup_secret_codes").text.context["secrets"]]
    assert len(codes) == 12
    confirmed = fe.update_settings_flow(
        flow=flow.id,
        update_settings_flow_body=UpdateSettingsFlowBody(
            UpdateSettingsFlowWithLookupMethod(method="lookup_secret", lookup_secret_confirm=True)
        ),
        x_session_token=token,
    )
    assert confirmed.state == "success"

    aal1 = _login(fe, email)
    with pytest.raises(ApiException) as step_up:
        fe.to_session(x_session_token=aal1)
    assert step_up.value.status == 403
    assert json.loads(step_up.value.body or "{}")["error"]["id"] == "session_aal2_required"
    login = fe.create_native_login_flow(aal="aal2", x_session_token=aal1)
    now = fresh_step()
    done_login = fe.update_login_flow(
        flow=login.id,
        update_login_flow_body=UpdateLoginFlowBody(
            UpdateLoginFlowWithTotpMethod(method="totp", totp_code=oathtool(secret, now + 30))
        ),
        x_session_token=aal1,
    )
    assert done_login.session.authenticator_assurance_level == "aal2"
    assert fe.to_session(x_session_token=aal1).authenticator_assurance_level == "aal2"

    aal1 = _login(fe, email)
    login = fe.create_native_login_flow(aal="aal2", x_session_token=aal1)
    done_login = fe.update_login_flow(
        flow=login.id,
        update_login_flow_body=UpdateLoginFlowBody(
            UpdateLoginFlowWithLookupSecretMethod(method="lookup_secret", lookup_secret=codes[0])
        ),
        x_session_token=aal1,
    )
    methods = done_login.session.authentication_methods or []
    assert [m.method for m in methods] == ["password", "lookup_secret"]
