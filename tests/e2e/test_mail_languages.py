"""The courier's emails in the recipient's language, through ``sidecar serve`` with real SMTP (aiosmtpd).

The language is the identity's ``traits.locale`` (``selfservice.languages.identity_field``); a
per-language file under ``courier.template_override_path`` replaces that language's template only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from tests.mail import SmtpServer, code_in, text_of
from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config
from tests.schemas import person_schema

pytestmark = pytest.mark.e2e

PASSWORD = "a-long-courier-language-passphrase"
SCHEMA = person_schema(closed=True, locale={"type": "string"})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("mail-languages")
    (tmp / "person.schema.json").write_text(json.dumps(SCHEMA))
    # The operator's French subject for recovery codes; every other file stays bundled.
    override = tmp / "templates" / "recovery_code_valid" / "fr"
    override.mkdir(parents=True)
    (override / "email.subject.txt").write_text("Votre code de récupération : {{ recovery_code }}\n")
    public_port, admin_port = ports()
    cfg = base_config(
        tmp,
        public_port,
        admin_port,
        identity={
            "default_schema_id": "person",
            "schemas": [{"id": "person", "url": f"file://{tmp}/person.schema.json"}],
        },
        courier={
            "smtp": {"connection_uri": smtp.uri, "from_address": "accounts@example.test"},
            "worker_interval": "50ms",
            "template_override_path": str(tmp / "templates"),
        },
    )
    cfg["selfservice"]["flows"] = {
        "recovery": {"enabled": True, "use": "code"},
        "verification": {"enabled": True, "use": "code"},
    }
    path = write_config(tmp / "cfg.yaml", cfg)
    migrate(path, tmp)
    with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


def _register(proc: Proc, traits: dict[str, Any]) -> None:
    with httpx.Client(base_url=proc.public_url, timeout=15) as c:
        flow = c.get("/.auth/self-service/registration/api").json()
        r = c.post(flow["ui"]["action"], json={"method": "password", "password": PASSWORD, "traits": traits})
        assert r.status_code == 200, r.text


def _recover(proc: Proc, email: str) -> None:
    with httpx.Client(base_url=proc.public_url, timeout=15) as c:
        flow = c.get("/.auth/self-service/recovery/api").json()
        r = c.post(flow["ui"]["action"], json={"method": "code", "email": email})
        assert r.status_code == 200, r.text
        # The API's texts stay Kratos' English whatever the identity's language.
        assert r.json()["ui"]["messages"][0]["text"].startswith("An email containing a recovery code")


def _mail(smtp: SmtpServer, email: str, count: int) -> EmailMessage:
    return smtp.mailbox.wait_for(email, count=count)[-1]


def _text(mail: EmailMessage) -> str:
    return text_of(mail).replace("\r\n", "\n")  # SMTP line ends


def _html(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def _fresh() -> str:
    return f"l{uuid.uuid4().hex[:10]}@example.test"


def test_verification_and_recovery_mail_in_french_for_a_french_identity(
    server: Proc, smtp: SmtpServer
) -> None:
    email = _fresh()
    _register(server, {"email": email, "locale": "fr"})
    verification = _mail(smtp, email, 1)
    assert str(verification["Subject"]) == "Veuillez vérifier votre adresse e-mail"
    body = _text(verification)
    assert body.startswith("Bonjour,\n\nsaisissez le code suivant pour vérifier votre compte :")
    assert "ou cliquez sur le lien suivant :" in body
    assert "<p>Bonjour,</p>" in _html(verification)

    _recover(server, email)
    recovery = _mail(smtp, email, 2)
    code = code_in(recovery)
    # The per-language override replaced the French subject; the body is the bundled French one.
    assert str(recovery["Subject"]) == f"Votre code de récupération : {code}"
    assert _text(recovery) == (
        f"Bonjour,\n\nsaisissez le code suivant pour récupérer l'accès à votre compte :\n\n{code}\n"
    )


def test_another_language_is_not_touched_by_the_french_override(server: Proc, smtp: SmtpServer) -> None:
    email = _fresh()
    _register(server, {"email": email, "locale": "de-CH"})
    assert str(_mail(smtp, email, 1)["Subject"]) == "Bitte bestätigen Sie Ihre E-Mail-Adresse"
    _recover(server, email)
    recovery = _mail(smtp, email, 2)
    assert str(recovery["Subject"]) == "Zugriff auf Ihr Konto wiederherstellen"
    assert _text(recovery).startswith("Hallo,\n\nbitte geben Sie den folgenden Code ein")


def test_no_locale_or_an_unknown_one_is_english(server: Proc, smtp: SmtpServer) -> None:
    for traits in ({}, {"locale": "tlh"}):
        email = _fresh()
        _register(server, {"email": email, **traits})
        assert str(_mail(smtp, email, 1)["Subject"]) == "Please verify your email address"
        _recover(server, email)
        recovery = _mail(smtp, email, 2)
        assert str(recovery["Subject"]) == "Recover access to your account"
        assert _text(recovery).startswith("Hi,\n\nplease recover access to your account")
