"""Passwordless sign-up and sign-in by emailed one-time code, end to end: the official SDK against a
live sidecar whose courier delivers to a real SMTP server (aiosmtpd); codes are read from the mail.

As Kratos, "code sent" answers JSON clients with the flow and 400 (the SDK raises
``BadRequestException`` whose body is the flow in state ``sent_email``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from ory_kratos_client.api.courier_api import CourierApi
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api.identity_api import IdentityApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.exceptions import ApiException
from ory_kratos_client.models.update_login_flow_body import UpdateLoginFlowBody
from ory_kratos_client.models.update_login_flow_with_code_method import UpdateLoginFlowWithCodeMethod
from ory_kratos_client.models.update_registration_flow_body import UpdateRegistrationFlowBody
from ory_kratos_client.models.update_registration_flow_with_code_method import (
    UpdateRegistrationFlowWithCodeMethod,
)
from ory_kratos_client.models.update_registration_flow_with_password_method import (
    UpdateRegistrationFlowWithPasswordMethod,
)

from tests.conftest import free_port, make_config
from tests.live import LiveSidecar, live_sidecar
from tests.mail import SmtpServer, code_in
from tests.schemas import person_schema

pytestmark = pytest.mark.e2e


def code_config(dsn: str, smtp: SmtpServer, *, mitigate: bool, lifespan: str = "1h") -> Any:
    return make_config(
        dsn=dsn,
        courier={
            "smtp": {"connection_uri": smtp.uri, "from_address": "accounts@example.test"},
            "worker_interval": "50ms",
        },
        security={"account_enumeration": {"mitigate": mitigate}},
        selfservice={
            "methods": {
                "password": {"enabled": False},
                "code": {
                    "passwordless_enabled": True,
                    "config": {"lifespan": lifespan, "max_submissions": 5},
                },
            },
            "flows": {"registration": {"after": {"code": {"hooks": [{"hook": "session"}]}}}},
        },
    )


@pytest.fixture(scope="module", params=[False, True], ids=["mitigate-off", "mitigate-on"])
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer
) -> Iterator[LiveSidecar]:
    dsn = f"sqlite:///{tmp_path_factory.mktemp('code')}/sidecar.db"
    with live_sidecar(code_config(dsn, smtp, mitigate=request.param)) as server:
        server.mitigate = request.param  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def fe(live: LiveSidecar) -> Iterator[FrontendApi]:
    with ApiClient(Configuration(host=live.public_url)) as client:
        yield FrontendApi(client)


def fresh_email() -> str:
    return f"c{uuid.uuid4().hex[:10]}@example.test"


def settled_mail(admin_url: str, smtp: SmtpServer, recipient: str, timeout: float = 15) -> int:
    """How many mails ``recipient`` got, counted once the courier has nothing left for them (no
    message queued or being sent), polled with a deadline. A flow queues its mail before it answers,
    so after the answer this count is final: no sleep, and no later mail can be missed."""
    deadline = time.monotonic() + timeout
    with ApiClient(Configuration(host=admin_url)) as client:
        courier = CourierApi(client)
        while True:
            pending = [
                m
                for m in courier.list_courier_messages(recipient=recipient)
                if m.status.value in ("queued", "processing")
            ]
            if not pending:
                return len(smtp.mailbox.to(recipient))
            assert time.monotonic() < deadline, f"{len(pending)} mail(s) to {recipient} still pending"
            time.sleep(0.05)


def _flow_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "{}")
    return body


def _ids(flow: dict[str, Any]) -> list[int]:
    return [m["id"] for m in flow["ui"].get("messages", [])] + [
        m["id"] for n in flow["ui"]["nodes"] for m in n["messages"]
    ]


def _login(fe: FrontendApi, flow_id: str, session_token: str | None = None, **values: Any) -> Any:
    """A code submission to the native login flow; with ``session_token``, its aal2 step-up."""
    body = UpdateLoginFlowBody(UpdateLoginFlowWithCodeMethod(method="code", csrf_token="", **values))
    return fe.update_login_flow(flow=flow_id, update_login_flow_body=body, x_session_token=session_token)


def _register(fe: FrontendApi, flow_id: str, email: str, **values: Any) -> Any:
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithCodeMethod(method="code", traits={"email": email}, **values)
    )
    return fe.update_registration_flow(flow=flow_id, update_registration_flow_body=body)


def _register_by_password(fe: FrontendApi, email: str) -> Any:
    """A native registration with a password (the code method then works as a second factor)."""
    flow = fe.create_native_registration_flow()
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithPasswordMethod(
            method="password", password="correct-Horse-battery-staple-42", traits={"email": email}
        )
    )
    return fe.update_registration_flow(flow=flow.id, update_registration_flow_body=body)


def _expect_400(call: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 400, caught.value.body
    return _flow_of(caught.value)


def sign_up(fe: FrontendApi, smtp: SmtpServer, email: str) -> Any:
    flow = fe.create_native_registration_flow()
    sent = _expect_400(lambda: _register(fe, flow.id, email))
    assert sent["state"] == "sent_email" and 1040005 in _ids(sent)
    code = code_in(smtp.mailbox.wait_for(email)[-1])
    return _register(fe, flow.id, email, code=code)


def test_sign_up_then_sign_in_by_code(fe: FrontendApi, live: LiveSidecar, smtp: SmtpServer) -> None:
    email = fresh_email()
    done = sign_up(fe, smtp, email)
    assert done.session_token and done.identity.traits["email"] == email
    # The code proved the address: it is verified.
    assert done.identity.verifiable_addresses[0].verified is True
    with ApiClient(Configuration(host=live.admin_url)) as admin_client:
        identity = IdentityApi(admin_client).get_identity(done.identity.id, include_credential=["code"])
    assert identity.credentials is not None
    assert identity.credentials["code"].identifiers == [email]

    flow = fe.create_native_login_flow()
    sent = _expect_400(lambda: _login(fe, flow.id, identifier=email.upper()))
    assert sent["state"] == "sent_email" and 1010014 in _ids(sent)
    mail = smtp.mailbox.wait_for(email, count=2)[-1]
    assert "login" in str(mail["Subject"]).lower() or "code" in str(mail["Subject"]).lower()
    session = _login(fe, flow.id, code=code_in(mail), identifier=email)
    assert session.session.identity.id == done.identity.id
    assert session.session.authentication_methods[0].method == "code"
    assert session.session.authenticator_assurance_level == "aal1"


def test_code_is_single_use_and_bound_to_its_flow(fe: FrontendApi, smtp: SmtpServer) -> None:
    email = fresh_email()
    sign_up(fe, smtp, email)
    first = fe.create_native_login_flow()
    _expect_400(lambda: _login(fe, first.id, identifier=email))
    code = code_in(smtp.mailbox.wait_for(email, count=2)[-1])
    other = fe.create_native_login_flow()
    _expect_400(lambda: _login(fe, other.id, identifier=email))
    smtp.mailbox.wait_for(email, count=3)
    # A code is good for the flow it was sent for only.
    refused = _expect_400(lambda: _login(fe, other.id, code=code))
    assert 4010008 in _ids(refused)
    assert _login(fe, first.id, code=code).session_token
    # Used once, it is gone (and the flow is done).
    _expect_400(lambda: _login(fe, first.id, code=code))


def test_resend_replaces_the_code(fe: FrontendApi, smtp: SmtpServer) -> None:
    email = fresh_email()
    sign_up(fe, smtp, email)
    flow = fe.create_native_login_flow()
    _expect_400(lambda: _login(fe, flow.id, identifier=email))
    old = code_in(smtp.mailbox.wait_for(email, count=2)[-1])
    resent = _expect_400(lambda: _login(fe, flow.id, resend="code"))
    assert resent["state"] == "sent_email"
    new = code_in(smtp.mailbox.wait_for(email, count=3)[-1])
    if old != new:
        assert 4010008 in _ids(_expect_400(lambda: _login(fe, flow.id, code=old)))
    assert _login(fe, flow.id, code=new).session_token


def test_wrong_codes_are_capped_per_flow(fe: FrontendApi, smtp: SmtpServer) -> None:
    email = fresh_email()
    sign_up(fe, smtp, email)
    flow = fe.create_native_login_flow()
    _expect_400(lambda: _login(fe, flow.id, identifier=email))
    code = code_in(smtp.mailbox.wait_for(email, count=2)[-1])
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        assert 4010008 in _ids(_expect_400(lambda: _login(fe, flow.id, code=wrong)))
    # Past max_submissions even the right code is refused.
    capped = _expect_400(lambda: _login(fe, flow.id, code=code))
    assert 4000001 in _ids(capped)


def test_registration_code_requires_the_same_traits(fe: FrontendApi, smtp: SmtpServer) -> None:
    email = fresh_email()
    flow = fe.create_native_registration_flow()
    _expect_400(lambda: _register(fe, flow.id, email))
    code = code_in(smtp.mailbox.wait_for(email)[-1])
    changed = _expect_400(lambda: _register(fe, flow.id, fresh_email(), code=code))
    assert 4000036 in _ids(changed)


def test_unknown_and_taken_addresses(fe: FrontendApi, live: LiveSidecar, smtp: SmtpServer) -> None:
    mitigate = live.mitigate  # type: ignore[attr-defined]
    stranger = fresh_email()
    flow = fe.create_native_login_flow()
    answer = _expect_400(lambda: _login(fe, flow.id, identifier=stranger))
    if mitigate:
        # The same answer as for a known address; no mail; every code fails.
        assert answer["state"] == "sent_email" and 1010014 in _ids(answer)
        assert 4010008 in _ids(_expect_400(lambda: _login(fe, flow.id, code="000000")))
    else:
        assert answer["state"] == "choose_method" and 4000035 in _ids(answer)
    assert settled_mail(live.admin_url, smtp, stranger) == 0

    taken = fresh_email()
    sign_up(fe, smtp, taken)
    signup = fe.create_native_registration_flow()
    answer = _expect_400(lambda: _register(fe, signup.id, taken))
    if mitigate:
        assert answer["state"] == "sent_email"
        assert 4040003 in _ids(_expect_400(lambda: _register(fe, signup.id, taken, code="000000")))
    else:
        assert 4000007 in _ids(answer)
    assert settled_mail(live.admin_url, smtp, taken) == 1  # only the sign-up code


def test_expired_code_is_refused(tmp_path: Any, smtp: SmtpServer) -> None:
    dsn = f"sqlite:///{tmp_path}/sidecar.db"
    with (
        live_sidecar(code_config(dsn, smtp, mitigate=False, lifespan="1s")) as server,
        ApiClient(Configuration(host=server.public_url)) as client,
    ):
        fe = FrontendApi(client)
        email = fresh_email()
        flow = fe.create_native_registration_flow()
        _expect_400(lambda: _register(fe, flow.id, email))
        code = code_in(smtp.mailbox.wait_for(email)[-1])
        time.sleep(1.5)
        assert 4040003 in _ids(_expect_400(lambda: _register(fe, flow.id, email, code=code)))


def test_code_sign_in_on_the_built_in_pages_without_javascript(tmp_path: Any, smtp: SmtpServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.conftest import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

    port = free_port()
    base = f"http://127.0.0.1:{port}/.auth"
    config = make_config(
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        dev=True,
        courier={"smtp": {"connection_uri": smtp.uri}, "worker_interval": "50ms"},
        selfservice={
            "default_browser_return_url": f"{base}/ui/welcome",
            "methods": {"password": {"enabled": False}, "code": {"passwordless_enabled": True}},
            "flows": {"registration": {"after": {"code": {"hooks": [{"hook": "session"}]}}}},
        },
    )
    email = fresh_email()
    with live_sidecar(config, public_port=port), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(java_script_enabled=False)
        page.goto(f"{base}/ui/registration")
        page.locator("input[name='traits.email']").fill(email)
        page.get_by_role("button", name="Send sign up code").click()
        expect(page.locator("[data-message-id='1040005']")).to_be_visible()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "code-registration-sent.png"), full_page=True)
        page.locator("input[name=code]").fill(code_in(smtp.mailbox.wait_for(email)[-1]))
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{base}/ui/welcome")
        page.get_by_role("link", name="Sign out").click()
        page.wait_for_url(lambda url: "/ui/login?flow=" in url)
        page.locator("input[name=identifier]").fill(email)
        page.get_by_role("button", name="Send sign in code").click()
        expect(page.locator("[data-message-id='1010014']")).to_be_visible()
        page.get_by_role("button", name="Resend code").click()
        expect(page.locator("[data-message-id='1010014']")).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "code-login-sent.png"), full_page=True)
        page.locator("input[name=code]").fill(code_in(smtp.mailbox.wait_for(email, count=3)[-1]))
        page.get_by_role("button", name="Continue").click()
        page.wait_for_url(f"{base}/ui/welcome")
        expect(page.locator("#identifier")).to_have_text(email)
        page.screenshot(path=str(ARTIFACTS / "code-login-welcome.png"), full_page=True)
        browser.close()


def test_code_as_second_factor_but_not_after_a_code(tmp_path: Any, smtp: SmtpServer) -> None:
    config = make_config(
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        courier={"smtp": {"connection_uri": smtp.uri}, "worker_interval": "50ms"},
        selfservice={
            "methods": {"code": {"passwordless_enabled": True, "mfa_enabled": True}},
            "flows": {"registration": {"after": {"hooks": [{"hook": "session"}]}}},
        },
    )
    email = fresh_email()
    with live_sidecar(config) as server, ApiClient(Configuration(host=server.public_url)) as client:
        fe = FrontendApi(client)
        token = _register_by_password(fe, email).session_token
        assert token

        # Password first, then a mailed code: aal2.
        step_up = fe.create_native_login_flow(aal="aal2", x_session_token=token)
        buttons = [n.to_dict()["attributes"] for n in step_up.ui.nodes if n.group == "code"]
        assert {"name": "address", "value": email}.items() <= buttons[0].items()
        sent = _expect_400(lambda: _login(fe, step_up.id, token, address=email))
        assert sent["state"] == "sent_email"
        done = _login(fe, step_up.id, token, code=code_in(smtp.mailbox.wait_for(email)[-1]))
        assert done.session.authenticator_assurance_level == "aal2"
        assert [m.method for m in done.session.authentication_methods or []] == ["password", "code"]

        # A code first: a second code over the same channel is refused.
        login = fe.create_native_login_flow()
        _expect_400(lambda: _login(fe, login.id, identifier=email))
        code_token = _login(
            fe, login.id, code=code_in(smtp.mailbox.wait_for(email, count=2)[-1])
        ).session_token
        step_up = fe.create_native_login_flow(aal="aal2", x_session_token=code_token)
        refused = _expect_400(lambda: _login(fe, step_up.id, code_token, address=email))
        assert 4000001 in _ids(refused)
        assert settled_mail(server.admin_url, smtp, email) == 2


# An email that signs in by password and is verifiable, but is no code identifier.
NO_CODE_SCHEMA = person_schema(email_for=("verification",))


@pytest.mark.parametrize("fallback", [True, False], ids=["fallback", "no-fallback"])
def test_missing_credential_fallback(tmp_path: Any, smtp: SmtpServer, fallback: bool) -> None:
    """Kratos ``selfservice/strategy/code/strategy_login.go`` and ``strategy_mfa.go``: an identity
    without a code credential gets codes only with ``missing_credential_fallback_enabled``."""
    schema = tmp_path / "no-code.schema.json"
    schema.write_text(json.dumps(NO_CODE_SCHEMA))
    config = make_config(
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        identity={"default_schema_id": "nocode", "schemas": [{"id": "nocode", "url": f"file://{schema}"}]},
        courier={"smtp": {"connection_uri": smtp.uri}, "worker_interval": "50ms"},
        selfservice={
            "methods": {
                "code": {
                    "passwordless_enabled": True,
                    "mfa_enabled": True,
                    "config": {"missing_credential_fallback_enabled": fallback},
                }
            },
        },
    )
    email = fresh_email()
    with live_sidecar(config) as server, ApiClient(Configuration(host=server.public_url)) as client:
        fe = FrontendApi(client)
        done = _register_by_password(fe, email)
        assert done.identity.credentials is None or "code" not in (done.identity.credentials or {})

        # Second factor: the verifiable address is offered only with the fallback.
        step_up = fe.create_native_login_flow(aal="aal2", x_session_token=done.session_token)
        buttons = [n.to_dict()["attributes"] for n in step_up.ui.nodes if n.group == "code"]
        assert [b.get("value") for b in buttons if b.get("name") == "address"] == (
            [email] if fallback else []
        )

        # First factor: a code to the identity's own email, or Kratos' 4000035 without the fallback.
        login = fe.create_native_login_flow()
        sent = _expect_400(lambda: _login(fe, login.id, identifier=email))
        if not fallback:
            assert 4000035 in _ids(sent)
            return
        assert sent["state"] == "sent_email"
        signed_in = _login(fe, login.id, code=code_in(smtp.mailbox.wait_for(email)[-1]), identifier=email)
        assert signed_in.session.identity.id == done.identity.id
