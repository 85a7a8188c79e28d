"""Social sign-in with the official ``ory-kratos-client`` 25.4.0 against a real uvicorn server:
flows with oidc nodes parse, a native app signs in with an ID token, an SPA gets the 422."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.exceptions import ApiException
from ory_kratos_client.models.ui_node_input_attributes import UiNodeInputAttributes
from ory_kratos_client.models.update_login_flow_body import UpdateLoginFlowBody
from ory_kratos_client.models.update_login_flow_with_oidc_method import UpdateLoginFlowWithOidcMethod

from tests.api.public.oidc_fake import FakeProvider, fake_provider
from tests.api.public.test_oidc import b64, provider
from tests.conftest import make_config
from tests.live import live_sidecar


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with fake_provider() as provider_:
        yield provider_


@pytest.fixture
def frontend(fake: FakeProvider, tmp_path: Path) -> Iterator[FrontendApi]:
    mapper = "local c = std.extVar('claims'); {identity: {traits: {email: c.email}}}"
    oidc = {"enabled": True, "config": {"providers": [provider(fake, "fake", mapper_url=b64(mapper))]}}
    config = make_config(dsn=f"sqlite:///{tmp_path}/sidecar.db", selfservice={"methods": {"oidc": oidc}})
    with live_sidecar(config) as server, ApiClient(Configuration(host=server.public_url)) as client:
        yield FrontendApi(client)


def test_native_app_signs_in_with_an_id_token(frontend: FrontendApi, fake: FakeProvider) -> None:
    flow = frontend.create_native_login_flow()
    oidc = [n for n in flow.ui.nodes if n.group == "oidc"]
    attrs = oidc[0].attributes.actual_instance
    assert isinstance(attrs, UiNodeInputAttributes) and attrs.name == "provider" and attrs.value == "fake"
    assert oidc[0].meta.label is not None and oidc[0].meta.label.id == 1010002

    token = fake.id_token({"sub": "sdk-user", "nonce": "sdk-nonce", "email": "sdk@example.com"})
    body = UpdateLoginFlowBody(
        UpdateLoginFlowWithOidcMethod(
            method="oidc", provider="fake", id_token=token, id_token_nonce="sdk-nonce"
        )
    )
    done = frontend.update_login_flow(flow=flow.id, update_login_flow_body=body)
    identity, methods = done.session.identity, done.session.authentication_methods
    assert done.session_token and identity is not None and methods is not None
    assert identity.traits == {"email": "sdk@example.com"} and methods[0].method == "oidc"
    me = frontend.to_session(x_session_token=done.session_token)
    assert me.identity is not None and me.identity.id == identity.id


def test_spa_browser_flow_gets_422_with_the_provider_url(frontend: FrontendApi, fake: FakeProvider) -> None:
    created = frontend.create_browser_login_flow_with_http_info()
    flow = created.data
    cookie = (created.headers or {})["set-cookie"].split(";")[0]
    csrf = next(
        n.attributes.actual_instance.value
        for n in flow.ui.nodes
        if isinstance(n.attributes.actual_instance, UiNodeInputAttributes)
        and n.attributes.actual_instance.name == "csrf_token"
    )
    body = UpdateLoginFlowBody(UpdateLoginFlowWithOidcMethod(method="oidc", provider="fake", csrf_token=csrf))
    with pytest.raises(ApiException) as caught:
        frontend.update_login_flow(flow=flow.id, update_login_flow_body=body, cookie=cookie)
    assert caught.value.status == 422
    payload = json.loads(caught.value.body or "{}")
    assert payload["error"]["id"] == "browser_location_change_required"
    assert payload["redirect_browser_to"].startswith(f"{fake.base}/auth?")
