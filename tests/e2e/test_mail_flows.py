"""Recovery and verification end to end: the official SDK against a live sidecar whose courier
worker delivers to a real SMTP server (aiosmtpd); codes and links are read from the delivered mail."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.exceptions import ApiException
from ory_kratos_client.models.update_recovery_flow_body import UpdateRecoveryFlowBody
from ory_kratos_client.models.update_recovery_flow_with_code_method import UpdateRecoveryFlowWithCodeMethod
from ory_kratos_client.models.update_registration_flow_body import UpdateRegistrationFlowBody
from ory_kratos_client.models.update_registration_flow_with_password_method import (
    UpdateRegistrationFlowWithPasswordMethod,
)
from ory_kratos_client.models.update_verification_flow_body import UpdateVerificationFlowBody
from ory_kratos_client.models.update_verification_flow_with_code_method import (
    UpdateVerificationFlowWithCodeMethod,
)

from tests.conftest import free_port, make_config
from tests.live import LiveSidecar, live_sidecar
from tests.mail import SmtpServer, code_in, link_in, text_of

PASSWORD = "correct-Horse-battery-staple-42"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def mail_config(dsn: str, smtp: SmtpServer, **selfservice: Any) -> Any:
    flows = {"recovery": {"enabled": True}, "verification": {"enabled": True}, **selfservice.pop("flows", {})}
    return make_config(
        dsn=dsn,
        courier={
            "smtp": {
                "connection_uri": smtp.uri,
                "from_address": "accounts@example.test",
                "from_name": "Accounts",
            },
            "worker_interval": "50ms",
        },
        selfservice={"flows": flows, **selfservice},
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[LiveSidecar]:
    dsn = f"sqlite:///{tmp_path_factory.mktemp('mail')}/sidecar.db"
    with live_sidecar(mail_config(dsn, smtp)) as server:
        yield server


@pytest.fixture
def fe(live: LiveSidecar) -> Iterator[FrontendApi]:
    with ApiClient(Configuration(host=live.public_url)) as client:
        yield FrontendApi(client)


def register(fe: FrontendApi, email: str) -> Any:
    flow = fe.create_native_registration_flow()
    body = UpdateRegistrationFlowBody(
        UpdateRegistrationFlowWithPasswordMethod(
            method="password", password=PASSWORD, traits={"email": email}
        )
    )
    return fe.update_registration_flow(flow=flow.id, update_registration_flow_body=body)


def recovery_body(**values: Any) -> UpdateRecoveryFlowBody:
    return UpdateRecoveryFlowBody(UpdateRecoveryFlowWithCodeMethod(method="code", **values))


def fresh_email() -> str:
    return f"m{uuid.uuid4().hex[:10]}@example.test"


def test_recovery_by_code_with_the_sdk_and_real_mail(fe: FrontendApi, smtp: SmtpServer) -> None:
    email = fresh_email()
    register(fe, email)
    smtp.mailbox.wait_for(email)  # the verification mail sent after registration
    flow = fe.create_native_recovery_flow()
    sent = fe.update_recovery_flow(flow=flow.id, update_recovery_flow_body=recovery_body(email=email))
    assert sent.state == "sent_email" and [m.id for m in sent.ui.messages or []] == [1060003]
    mails = smtp.mailbox.wait_for(email, count=2)
    mail = next(m for m in mails if "Recover" in str(m["Subject"]))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "mail-recovery-code.eml").write_bytes(bytes(mail))
    assert str(mail["From"]) == "Accounts <accounts@example.test>" and str(mail["To"]) == email
    code = code_in(mail)
    done = fe.update_recovery_flow(flow=flow.id, update_recovery_flow_body=recovery_body(code=code))
    assert done.state == "passed_challenge"
    actions: dict[str, Any] = {}
    for item in done.continue_with or []:
        assert item.actual_instance is not None
        actions[item.actual_instance.action] = item.actual_instance
    assert set(actions) == {"set_ory_session_token", "show_settings_ui"}
    token = actions["set_ory_session_token"].ory_session_token
    whoami = fe.to_session(x_session_token=token)
    assert whoami.identity is not None and whoami.identity.traits == {"email": email}
    assert [m.method for m in whoami.authentication_methods or []] == ["code_recovery"]
    with pytest.raises(ApiException) as again:  # the code was single use; the flow is done
        fe.update_recovery_flow(flow=flow.id, update_recovery_flow_body=recovery_body(code=code))
    assert again.value.status == 400 and "4060001" in str(again.value.body)


def test_verification_by_code_with_the_sdk(fe: FrontendApi, smtp: SmtpServer, live: LiveSidecar) -> None:
    email = fresh_email()
    result = register(fe, email)
    items = [c.actual_instance for c in result.continue_with or []]
    verification = next(i for i in items if i.action == "show_verification_ui")
    assert verification.flow.verifiable_address == email
    [mail] = smtp.mailbox.wait_for(email)
    (ARTIFACTS / "mail-verification-code.eml").write_bytes(bytes(mail))
    assert "verification?" in link_in(mail)
    wrong = fe.update_verification_flow(
        flow=verification.flow.id,
        update_verification_flow_body=UpdateVerificationFlowBody(
            UpdateVerificationFlowWithCodeMethod(method="code", code="000000x")
        ),
    )
    assert [m.id for m in wrong.ui.messages or []] == [4070006]
    done = fe.update_verification_flow(
        flow=verification.flow.id,
        update_verification_flow_body=UpdateVerificationFlowBody(
            UpdateVerificationFlowWithCodeMethod(method="code", code=code_in(mail))
        ),
    )
    assert done.state == "passed_challenge" and [m.id for m in done.ui.messages or []] == [1080002]
    identity = httpx.get(f"{live.admin_url}/admin/identities/{result.identity.id}").json()
    assert identity["verifiable_addresses"][0]["verified"] is True
    assert identity["verifiable_addresses"][0]["status"] == "completed"


def test_new_native_verification_flow(fe: FrontendApi, smtp: SmtpServer) -> None:
    email = fresh_email()
    register(fe, email)
    smtp.mailbox.wait_for(email)
    flow = fe.create_native_verification_flow()
    sent = fe.update_verification_flow(
        flow=flow.id,
        update_verification_flow_body=UpdateVerificationFlowBody(
            UpdateVerificationFlowWithCodeMethod(method="code", email=email)
        ),
    )
    assert sent.state == "sent_email"
    mail = smtp.mailbox.wait_for(email, count=2)[-1]
    done = fe.update_verification_flow(
        flow=flow.id,
        update_verification_flow_body=UpdateVerificationFlowBody(
            UpdateVerificationFlowWithCodeMethod(method="code", code=code_in(mail))
        ),
    )
    assert done.state == "passed_challenge"


def test_crlf_in_an_address_never_reaches_smtp(fe: FrontendApi, smtp: SmtpServer) -> None:
    before = len(smtp.mailbox.messages)
    flow = fe.create_native_recovery_flow()
    evil = "victim@example.test\r\nBcc: evil@example.test"
    with pytest.raises(ApiException) as caught:
        fe.update_recovery_flow(flow=flow.id, update_recovery_flow_body=recovery_body(email=evil))
    assert caught.value.status == 400
    time.sleep(0.5)  # more than the worker interval
    with smtp.mailbox.lock:
        after = smtp.mailbox.messages[before:]
        envelopes = list(smtp.mailbox.envelopes)
    assert all("evil" not in str(m["To"]) + str(m.get("Bcc", "")) for m in after)
    assert all("evil@example.test" not in rcpts for _, rcpts in envelopes)


@pytest.mark.parametrize("mitigate", [False, True])
@pytest.mark.parametrize("notify", [False, True])
def test_unknown_addresses(tmp_path: Path, mitigate: bool, notify: bool) -> None:
    smtp = SmtpServer(free_port())
    smtp.start()
    try:
        config = mail_config(
            f"sqlite:///{tmp_path}/sidecar.db",
            smtp,
            flows={"recovery": {"enabled": True, "notify_unknown_recipients": notify}},
        )
        config = config.model_copy(
            update={
                "security": config.security.model_copy(
                    update={
                        "account_enumeration": config.security.account_enumeration.model_copy(
                            update={"mitigate": mitigate}
                        )
                    }
                )
            }
        )
        with live_sidecar(config) as live, ApiClient(Configuration(host=live.public_url)) as client:
            fe = FrontendApi(client)
            known = fresh_email()
            register(fe, known)
            smtp.mailbox.wait_for(known)
            answers = {}
            for email in (known, "ghost@example.test"):
                flow = fe.create_native_recovery_flow()
                sent = fe.update_recovery_flow(
                    flow=flow.id, update_recovery_flow_body=recovery_body(email=email)
                )
                answers[email] = (sent.state, [m.id for m in sent.ui.messages or []])
            assert answers[known] == answers["ghost@example.test"] == ("sent_email", [1060003])
            smtp.mailbox.wait_for(known, count=2)
            if notify:
                [mail] = smtp.mailbox.wait_for("ghost@example.test")
                assert "Account access attempted" in str(mail["Subject"])
                assert not any(ch.isdigit() for ch in text_of(mail).split("\n\n")[-1])
            else:
                time.sleep(0.5)
                assert smtp.mailbox.to("ghost@example.test") == []
    finally:
        smtp.stop()
