"""Bundled and overridden courier templates (``sidecar/courier/templates.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.courier.model import TEMPLATE_TYPES, TemplateType
from sidecar.courier.templates import Templates, render

DATA: dict[str, Any] = {
    "to": "ann@example.test",
    "recovery_url": "https://example.test/recover?token=abc&flow=1",
    "recovery_code": "482913",
    "verification_url": "https://example.test/verify?token=abc&flow=1",
    "verification_code": "731904",
    "login_code": "220466",
    "registration_code": "990137",
    "subject": "stub subject",
    "body": "stub body",
}
SECRET = {
    "recovery_valid": "recovery_url",
    "recovery_code_valid": "recovery_code",
    "verification_valid": "verification_url",
    "verification_code_valid": "verification_code",
    "login_code_valid": "login_code",
    "registration_code_valid": "registration_code",
}


@pytest.mark.parametrize("template_type", TEMPLATE_TYPES)
def test_every_template_type_renders(template_type: TemplateType) -> None:
    subject, text, html = Templates().render(template_type, DATA)
    assert subject and "\n" not in subject
    assert text.strip() and html.strip()
    if template_type in SECRET:
        value = DATA[SECRET[template_type]]
        assert value in text
        assert value.replace("&", "&amp;") in html


def test_html_is_escaped_and_text_is_not() -> None:
    _, text, html = Templates().render("login_code_valid", {**DATA, "login_code": "<b>1&2</b>"})
    assert "<b>1&2</b>" in text
    assert "&lt;b&gt;1&amp;2&lt;/b&gt;" in html and "<b>1&2</b>" not in html


def test_rendered_subject_is_one_line() -> None:
    subject, _, _ = Templates().render("stub", {**DATA, "subject": "Hi\r\nBcc: eve@evil.test\u2028x"})
    assert subject == "Hi Bcc: eve@evil.test x"


def test_override_directory_replaces_single_files(tmp_path: Path) -> None:
    folder = tmp_path / "login_code_valid"
    folder.mkdir()
    (folder / "email.subject.txt").write_text("Your code: {{ login_code }}\n")
    subject, text, _ = Templates(tmp_path).render("login_code_valid", DATA)
    assert subject == "Your code: 220466"
    assert "please enter the following code" in text  # body still the bundled one
    assert render("login_code_valid", DATA, str(tmp_path))[0] == subject


def test_missing_data_and_unknown_types_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="login_code"):
        Templates().render("login_code_valid", {"to": "ann@example.test"})
    with pytest.raises(ValueError, match="unknown"):
        Templates().render("password_changed", DATA)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a directory"):
        Templates(tmp_path / "missing")


def test_the_language_comes_from_the_configured_identity_field(tmp_path: Path) -> None:
    templates = Templates(identity_field="metadata_public.language", default_language="es")
    fr = {**DATA, "identity": {"traits": {"locale": "de"}, "metadata_public": {"language": "fr-BE"}}}
    assert templates.language_of(fr) == "fr"
    assert templates.language_of(DATA) == "es"  # no identity: the default
    subject, text, _ = templates.render("login_code_valid", fr)
    assert subject == "Connexion à votre compte" and text.startswith("Bonjour,")
    # An explicit language wins; English is the untranslated source.
    assert templates.render("login_code_valid", fr, language="en")[0] == "Login to your account"


def test_a_per_language_override_replaces_only_that_language(tmp_path: Path) -> None:
    (tmp_path / "login_code_valid" / "ja").mkdir(parents=True)
    (tmp_path / "login_code_valid" / "ja" / "email.subject.txt").write_text(
        "サインインコード {{ login_code }}"
    )
    (tmp_path / "login_code_valid" / "email.body.txt").write_text("Code: {{ login_code }}\n")
    templates = Templates(tmp_path)
    assert (
        templates.render("login_code_valid", DATA, language="ja")[0]
        == f"サインインコード {DATA['login_code']}"
    )
    assert templates.render("login_code_valid", DATA, language="de")[0] == "Bei Ihrem Konto anmelden"
    # The language-neutral override beats the bundled (translated) template in every language.
    assert templates.render("login_code_valid", DATA, language="de")[1] == f"Code: {DATA['login_code']}\n"
