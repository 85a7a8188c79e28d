"""The gettext catalogs: complete, in step with the code, and the language negotiation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from sidecar.i18n import (
    Catalogs,
    Phrase,
    Translator,
    accept_language,
    builtin_catalogs,
    identity_language,
    match_language,
    negotiate,
)

ROOT = Path(__file__).resolve().parents[2]
LOCALES = ROOT / "sidecar" / "i18n" / "locales"
LANGUAGES = ("de", "fr", "es", "pt_BR", "ja")
PLURAL_FORMS = {"de": 2, "fr": 3, "es": 3, "pt_BR": 3, "ja": 1}
_PLACEHOLDER = re.compile(r"\{\w+\}|%\(\w+\)s")

Key = tuple[str | None, str]
Texts = tuple[str, ...]
"""A message's texts: one for a plain message, the singular and plural (``msgid``) or each plural
form (``msgstr``) for a counted one."""


def _extracted() -> dict[Key, Texts]:
    """What ``pybabel extract -F babel.cfg -k _m:1c,2`` finds in the sources today."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options = parse_mapping_cfg(cfg)  # type: ignore[no-untyped-call]
    keywords = {**DEFAULT_KEYWORDS, "_m": ((1, "c"), 2)}
    found = {}
    for _file, _line, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options, keywords=keywords
    ):
        texts = (message,) if isinstance(message, str) else tuple(message)
        found[(context, texts[0])] = texts
    return found


def _catalog(path: Path, part: str = "string") -> dict[Key, Texts]:
    """``msgstr``s (or, with ``part="id"``, ``msgid``s) by context and singular ``msgid``."""
    with path.open("rb") as handle:
        out = {}
        for m in read_po(handle):
            if not m.id:
                continue
            ids = (m.id,) if isinstance(m.id, str) else tuple(m.id)
            value = getattr(m, part)
            out[(m.context, ids[0])] = (value,) if isinstance(value, str) else tuple(value)
        return out


def test_the_template_is_what_the_code_says() -> None:
    # A text changed or added in code without ``pybabel extract`` fails here, not in a user's page.
    assert _extracted() == _catalog(LOCALES / "sidecar.pot", "id")


def test_the_console_is_extracted_with_the_pages() -> None:
    # babel.cfg maps the admin console's Python and templates: its words are in every catalog too.
    pot = _catalog(LOCALES / "sidecar.pot", "id")
    for key in (
        (None, "Revoke all sessions"),  # a template
        (None, "Traits saved."),  # Python (N_)
        (None, "That is not the admin API key."),  # a sign-in refusal
        (None, "%(num)s identity"),  # ngettext
    ):
        assert key in pot, key
    assert pot[(None, "%(num)s identity")] == ("%(num)s identity", "%(num)s identities")


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_text_is_translated_with_the_same_placeholders(language: str) -> None:
    pot = _catalog(LOCALES / "sidecar.pot", "id")
    catalog = _catalog(LOCALES / language / "LC_MESSAGES" / "sidecar.po")
    assert set(catalog) == set(pot)
    for key, translated in catalog.items():
        english = pot[key]
        assert all(translated), key
        if len(english) == 1:
            assert sorted(_PLACEHOLDER.findall(translated[0])) == sorted(_PLACEHOLDER.findall(english[0])), (
                key
            )
            continue
        # Counted: one text per plural form of the language; a form may leave out the count
        # (German "eine Identität"), never use a value the code does not give, and the last
        # (the "many" form, Japanese's only one) says everything the English plural says.
        assert len(translated) == PLURAL_FORMS[language], key
        given = set(_PLACEHOLDER.findall(english[0])) | set(_PLACEHOLDER.findall(english[1]))
        for form in translated:
            assert set(_PLACEHOLDER.findall(form)) <= given, (key, form)
        assert set(_PLACEHOLDER.findall(translated[-1])) == set(_PLACEHOLDER.findall(english[1])), key


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


@pytest.mark.parametrize(
    ("language", "counts"),
    [
        ("de", {1: "1 Identität", 2: "2 Identitäten", 0: "0 Identitäten"}),
        ("fr", {0: "0 identité", 1: "1 identité", 2: "2 identités"}),
        ("ja", {1: "1 件のアイデンティティ", 5: "5 件のアイデンティティ"}),
        ("en", {1: "1 identity", 3: "3 identities"}),
    ],
)
def test_a_count_takes_the_plural_form_of_its_language(language: str, counts: dict[int, str]) -> None:
    tr = builtin_catalogs().translator(language)
    for n, expected in counts.items():
        assert tr.ngettext("%(num)s identity", "%(num)s identities", n) % {"num": n} == expected


def test_numbers_and_moments_are_written_as_the_language_writes_them() -> None:
    catalogs = builtin_catalogs()
    moment = datetime(2026, 11, 26, 9, 5, tzinfo=UTC)
    assert catalogs.translator("de").integer(12345) == "12.345"
    assert catalogs.translator("en").integer(12345) == "12,345"
    assert catalogs.translator("de").moment(moment) == "26. Nov. 2026, 09:05 UTC"
    assert catalogs.translator("ja").moment(moment) == "2026年11月26日 9:05 UTC"
    assert catalogs.translator("en").moment(moment) == "Nov 26, 2026, 9:05\u202fAM UTC"
    assert Translator("xx-nope").moment(moment) == "26 Nov 2026, 09:05 UTC"


def test_a_phrase_is_english_until_it_is_shown_and_keeps_its_values() -> None:
    de = builtin_catalogs().translator("de")
    phrase = Phrase("Members of {organization}", organization="Acme")
    assert str(phrase) == "Members of Acme"  # what an audit line or a log says
    assert phrase.translated(de) == "Mitglieder von Acme"
    nested = Phrase("A message that is {status} cannot be retried.", status=Phrase("sent"))
    assert nested.translated(de) == "Eine Nachricht im Status „gesendet“ kann nicht erneut versucht werden."
    assert Phrase("not a message {at} all", at="x").translated(de) == "not a message x all"
    # A translation that names a value the code does not give falls back to English, never a 500.
    broken = Translator("de", {(None, "Hello {name}"): "Hallo {nom}"})
    assert Phrase("Hello {name}", name="Ada").translated(broken) == "Hello Ada"


def test_a_catalog_file_is_parsed_once_per_process_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every build_services reads the catalogs (babel's parse of the shipped five: ~25 ms of CPU per
    start, worker and test's services); a file is parsed again only when its size or mtime changes."""
    from sidecar import i18n

    parsed: list[str] = []
    parse = i18n._parse_catalog

    def counting(path: Path) -> object:
        parsed.append(str(path))
        return parse(path)

    monkeypatch.setattr(i18n, "_parse_catalog", counting)
    po = tmp_path / "de" / "LC_MESSAGES" / "sidecar.po"
    po.parent.mkdir(parents=True)
    header = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
    po.write_text(header + 'msgid "Sign in"\nmsgstr "Einloggen"\n', encoding="utf-8")
    Catalogs(tmp_path)
    assert parsed.count(str(po)) == 1
    first = list(parsed)  # also the built-in five, unless this process has read them already
    assert Catalogs(tmp_path).translator("de").gettext("Sign in") == "Einloggen"
    assert parsed == first  # neither it nor a built-in parsed again

    po.write_text(header + 'msgid "Sign in"\nmsgstr "Anmelden"\n', encoding="utf-8")
    assert Catalogs(tmp_path).translator("de").gettext("Sign in") == "Anmelden"
    assert [p for p in parsed if p == str(po)] == [str(po), str(po)]
