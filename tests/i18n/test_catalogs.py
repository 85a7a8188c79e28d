"""The gettext catalogs: complete, in step with the code, and the language negotiation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from sidecar.i18n import (
    Catalogs,
    accept_language,
    builtin_catalogs,
    identity_language,
    match_language,
    negotiate,
)

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "sidecar" / "i18n" / "locales"
LANGUAGES = ("de", "fr", "es", "pt_BR", "ja")
_PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)s")


def _extracted() -> set[tuple[str | None, str]]:
    """What ``pybabel extract -F babel.cfg -k _m:1c,2`` finds in the sources today."""
    method_map = [
        ("sidecar/flows/messages.py", "python"),
        ("sidecar/ui/**.py", "python"),
        ("sidecar/courier/templates/**.txt", "jinja2"),
        ("sidecar/courier/templates/**.html", "jinja2"),
        ("sidecar/ui/templates/**.html", "jinja2"),
    ]
    options = {pattern: {"extensions": "jinja2.ext.i18n"} for pattern, kind in method_map if kind == "jinja2"}
    keywords = {"_": None, "gettext": None, "pgettext": ((1, "c"), 2), "N_": None, "_m": ((1, "c"), 2)}
    found = set()
    for _file, _line, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options, keywords=keywords
    ):
        found.add((context, message if isinstance(message, str) else message[0]))
    return found


def _catalog(path: Path) -> dict[tuple[str | None, str], str]:
    with path.open("rb") as handle:
        return {(m.context, str(m.id)): str(m.string) for m in read_po(handle) if m.id}


def test_the_template_is_what_the_code_says() -> None:
    # A text changed or added in code without ``pybabel extract`` fails here, not in a user's page.
    pot = set(_catalog(LOCALES / "sidecar.pot"))
    assert _extracted() == pot


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_is_translated_with_the_same_placeholders(language: str) -> None:
    pot = _catalog(LOCALES / "sidecar.pot")
    catalog = _catalog(LOCALES / language / "LC_MESSAGES" / "sidecar.po")
    assert set(catalog) == set(pot)
    for (context, english), translated in catalog.items():
        assert translated, (context, english)
        assert sorted(_PLACEHOLDER.findall(translated)) == sorted(_PLACEHOLDER.findall(english)), english


def test_the_shipped_languages() -> None:
    assert builtin_catalogs().languages == ("de", "en", "es", "fr", "ja", "pt_BR")


def test_accept_language_is_read_by_quality_then_order() -> None:
    assert accept_language("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == ["fr-CH", "fr", "en", "de"]
    assert accept_language("de;q=0, ja;q=0.3, es") == ["es", "ja"]
    assert accept_language("en;q=bogus, ja") == ["ja"]
    assert accept_language(None) == []


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("de", "de"),
        ("de-AT", "de"),
        ("pt-BR", "pt_BR"),
        ("pt_br", "pt_BR"),
        ("pt", "pt_BR"),
        ("ja-JP", "ja"),
        ("en-GB", "en"),
        ("it", None),
        ("", None),
        ("../../etc", None),
        ("x" * 200, None),
    ],
)
def test_a_tag_maps_to_an_available_language(tag: str, expected: str | None) -> None:
    assert match_language(tag, builtin_catalogs().languages) == expected


def test_identity_first_then_accept_language_then_the_choice_then_the_default() -> None:
    catalogs = builtin_catalogs()
    assert negotiate(catalogs, default="en", identity_tag="fr", accept="de", chosen="ja") == "fr"
    assert negotiate(catalogs, default="en", identity_tag="xx", accept="de", chosen="ja") == "de"
    assert negotiate(catalogs, default="en", accept="it, nl", chosen="ja") == "ja"
    assert negotiate(catalogs, default="es", accept="it") == "es"


def test_the_identity_field_is_a_path_into_traits_or_metadata() -> None:
    identity = {"traits": {"locale": "fr-FR"}, "metadata_public": {"lang": "ja"}}
    assert identity_language(identity, "traits.locale") == "fr-FR"
    assert identity_language(identity, "metadata_public.lang") == "ja"
    assert identity_language(identity, "traits.missing") is None
    assert identity_language({"traits": {"locale": 3}}, "traits.locale") is None
    assert identity_language(identity, None) is None


def test_an_extra_catalog_replaces_entries_and_adds_languages(tmp_path: Path) -> None:
    (tmp_path / "de" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "de" / "LC_MESSAGES" / "sidecar.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Sign in"\nmsgstr "Einloggen"\n',
        encoding="utf-8",
    )
    (tmp_path / "it" / "LC_MESSAGES").mkdir(parents=True)
    (tmp_path / "it" / "LC_MESSAGES" / "sidecar.po").write_text(
        'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Sign in"\nmsgstr "Accedi"\n',
        encoding="utf-8",
    )
    catalogs = Catalogs(tmp_path)
    assert "it" in catalogs.languages
    assert catalogs.translator("de").gettext("Sign in") == "Einloggen"
    assert catalogs.translator("de").gettext("Sign out") == "Abmelden"  # the rest stays built-in
    assert catalogs.translator("it").gettext("Sign in") == "Accedi"
    assert catalogs.translator("it").gettext("Sign out") == "Sign out"  # no translation: English
    assert catalogs.translator("nope").gettext("Sign in") == "Sign in"
