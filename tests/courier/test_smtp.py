"""SMTP delivery against a real aiosmtpd server (``sidecar/courier/smtp.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from sidecar.config.model import Courier as CourierConfig
from sidecar.config.model import Smtp
from sidecar.courier.model import Message
from sidecar.courier.sender import PermanentDeliveryError
from sidecar.courier.smtp import SmtpSender, SmtpTarget, parse_connection_uri
from tests.courier.conftest import SmtpServer, server_tls_context

MakeConfig = Callable[..., CourierConfig]


def message(**kw: Any) -> Message:
    fields: dict[str, Any] = {
        "recipient": "ann@example.test",
        "subject": "Your code: 482913",
        "body": "Hi,\n\nyour code is 482913\n",
        "html_body": "<p>Hi,</p><p>your code is <b>482913</b></p>",
        "template_type": "login_code_valid",
    }
    return Message(**{**fields, **kw})


def parts(mail: EmailMessage) -> tuple[str, str]:
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        pytest.param(
            "smtp://mail.test/", SmtpTarget("mail.test", 25, False, None, True, None, None), id="smtp-default"
        ),
        pytest.param(
            "smtp://u%40x:p%2Fw@mail.test:587/?skip_ssl_verify=true",
            SmtpTarget("mail.test", 587, False, None, False, "u@x", "p/w"),
            id="auth-skip-verify",
        ),
        pytest.param(
            "smtp://mail.test:2525/?disable_starttls=true",
            SmtpTarget("mail.test", 2525, False, False, True, None, None),
            id="no-starttls",
        ),
        pytest.param(
            "smtps://mail.test/",
            SmtpTarget("mail.test", 465, True, False, True, None, None),
            id="implicit-tls",
        ),
    ],
)
def test_parse_connection_uri(uri: str, expected: SmtpTarget) -> None:
    assert parse_connection_uri(uri) == expected


@pytest.mark.parametrize("uri", ["http://mail.test/", "smtp:///nohost", "mail.test:25"])
def test_bad_connection_uri(uri: str) -> None:
    with pytest.raises(ValueError, match="connection_uri"):
        parse_connection_uri(uri)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nBcc: eve@evil.test"},
        {"X-Evil\n": "a"},
        {"Subject": "other"},
        {"bcc": "eve@evil.test"},
    ],
)
def test_unsafe_configured_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"courier\.smtp\.headers"):
        SmtpSender(Smtp(connection_uri="smtp://mail.test/", headers=headers))


@pytest.mark.parametrize(
    "bad",
    [
        {"recipient": "ann@example.test\r\nBcc: eve@evil.test"},
        {"subject": "Hi\nBcc: eve@evil.test"},
        {"subject": "Hi\rthere"},
    ],
)
async def test_header_injection_is_refused_at_send(smtp_server: SmtpServer, bad: dict[str, Any]) -> None:
    # Messages bypassing the store's validation (e.g. rows written by an older version) still never
    # reach SMTP: build() re-validates, and the failure is permanent (no retries).
    sender = SmtpSender(Smtp(connection_uri=smtp_server.uri))
    unsafe = dataclasses.replace(message(), **bad)
    with pytest.raises(ValueError):
        sender.build(unsafe)
    with pytest.raises(PermanentDeliveryError):
        await sender.send(unsafe)
    assert smtp_server.mailbox.messages == []


async def test_delivers_multipart_mail_with_headers(
    smtp_server: SmtpServer, make_courier_config: MakeConfig
) -> None:
    config = make_courier_config(
        smtp_server.uri, smtp={"headers": {"X-Tenant": "acme", "Reply-To": "help@example.test"}}
    )
    msg = message()
    await SmtpSender(config.smtp).send(msg)
    [mail] = smtp_server.mailbox.messages
    assert mail["From"] == "Example Accounts <no-reply@example.test>"
    assert mail["To"] == "ann@example.test"
    assert mail["Subject"] == "Your code: 482913"
    assert mail["Message-ID"] == f"<{msg.id}@example.test>"
    assert (mail["X-Tenant"], mail["Reply-To"]) == ("acme", "help@example.test")
    assert mail.get_content_type() == "multipart/alternative"
    text, html = parts(mail)
    assert "your code is 482913" in text
    assert "<b>482913</b>" in html
    assert smtp_server.mailbox.envelopes == [("no-reply@example.test", ["ann@example.test"])]


async def test_refused_recipient_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.mailbox.refuse.add("gone@example.test")
    with pytest.raises(PermanentDeliveryError):
        await SmtpSender(Smtp(connection_uri=smtp_server.uri)).send(message(recipient="gone@example.test"))


async def test_server_down_is_a_transient_error(smtp_down: SmtpServer) -> None:
    with pytest.raises(Exception) as caught:
        await SmtpSender(Smtp(connection_uri=smtp_down.uri), timeout=2).send(message())
    assert not isinstance(caught.value, PermanentDeliveryError)


def _authenticator(seen: list[str]) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        seen.append(f"{data.login.decode()}:{data.password.decode()}")
        return AuthResult(success=data.password == b"s3cret")

    return authenticate


async def test_starttls_when_offered_with_auth(smtp_down: SmtpServer, tmp_path: Path) -> None:
    seen: list[str] = []
    smtp_down.start(
        tls_context=server_tls_context(tmp_path), require_starttls=True, authenticator=_authenticator(seen)
    )
    uri = f"smtp://mailer:s3cret@127.0.0.1:{smtp_down.port}/?skip_ssl_verify=true"
    await SmtpSender(Smtp(connection_uri=uri)).send(message())
    assert seen == ["mailer:s3cret"]
    assert len(smtp_down.mailbox.messages) == 1


async def test_starttls_verifies_certificates_by_default(smtp_down: SmtpServer, tmp_path: Path) -> None:
    smtp_down.start(tls_context=server_tls_context(tmp_path), require_starttls=True)
    with pytest.raises(Exception, match=r"(?i)certificate"):
        await SmtpSender(Smtp(connection_uri=f"smtp://127.0.0.1:{smtp_down.port}/"), timeout=5).send(
            message()
        )
    assert smtp_down.mailbox.messages == []


async def test_implicit_tls(smtp_down: SmtpServer, tmp_path: Path) -> None:
    smtp_down.start(ssl_context=server_tls_context(tmp_path))
    uri = f"smtps://127.0.0.1:{smtp_down.port}/?skip_ssl_verify=true"
    await SmtpSender(Smtp(connection_uri=uri)).send(message())
    assert len(smtp_down.mailbox.messages) == 1
