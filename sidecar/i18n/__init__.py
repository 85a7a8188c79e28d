"""Languages: gettext catalogs (Babel ``.po`` files) and the choice of a language per request.

The catalogs live in ``sidecar/i18n/locales/<lang>/LC_MESSAGES/sidecar.po`` (template:
``locales/sidecar.pot``). A language is available when its directory exists: a translator adds
one by copying the template, never by touching code. ``.po`` files are read at start-up (no
compile step, so the package ships exactly what a translator edits). A message without a
translation in the chosen language is shown in English, the source language.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

SOURCE_LANGUAGE = "en"
DOMAIN = "sidecar"


def N_(message: str) -> str:
    """Marks a string for extraction where it is defined; it is translated where it is shown."""
    return message


@dataclass(frozen=True)
class Translator:
    """One language's catalog: ``gettext`` and ``pgettext`` fall back to the English ``msgid``."""

    language: str
    entries: Mapping[tuple[str | None, str], str] = field(default_factory=dict)

    def gettext(self, message: str) -> str:
        return self.entries.get((None, message)) or message

    def pgettext(self, context: str, message: str) -> str:
        return self.entries.get((context, message)) or message

    def has(self, context: str | None, message: str) -> bool:
        return bool(self.entries.get((context, message)))

    def number(self, value: str) -> str:
        """A decimal as this language writes it (``3.50`` → ``3,50`` in German); other text unchanged."""
        try:
            return format_decimal(float(value), format="0.00" if "." in value else "0", locale=self.language)
        except (ValueError, UnknownLocaleError):
            return value


def _read_catalog(path: Path | Any) -> dict[tuple[str | None, str], str]:
    with path.open("rb") as handle:
        catalog = read_po(handle)
    out: dict[tuple[str | None, str], str] = {}
    for message in catalog:
        if not message.id or not isinstance(message.id, str) or not isinstance(message.string, str):
            continue
        if message.string and not message.fuzzy:
            out[(message.context, message.id)] = message.string
    return out


class Catalogs:
    """All languages: the built-in catalogs, each entry overridable from ``extra_dir``
    (``<extra_dir>/<lang>/LC_MESSAGES/sidecar.po``, which may also add a language)."""

    def __init__(self, extra_dir: str | Path | None = None) -> None:
        self._translators: dict[str, Translator] = {}
        builtin = resources.files("sidecar.i18n").joinpath("locales")
        sources: list[Any] = [builtin]
        if extra_dir is not None:
            sources.append(Path(extra_dir))
        merged: dict[str, dict[tuple[str | None, str], str]] = {SOURCE_LANGUAGE: {}}
        for root in sources:
            if not root.is_dir():
                continue
            for child in root.iterdir():
                po = child.joinpath("LC_MESSAGES", f"{DOMAIN}.po")
                if child.is_dir() and po.is_file():
                    merged.setdefault(child.name, {}).update(_read_catalog(po))
        for language, entries in merged.items():
            self._translators[language] = Translator(language, entries)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(sorted(self._translators))

    def translator(self, language: str | None) -> Translator:
        return self._translators.get(language or SOURCE_LANGUAGE) or self._translators[SOURCE_LANGUAGE]

    def match(self, tag: str | None) -> str | None:
        """The available language for a tag (``de-DE`` → ``de``, ``pt-br`` → ``pt_BR``,
        ``pt`` → ``pt_BR`` when only that Portuguese is there), or None."""
        return match_language(tag, self.languages)


def match_language(tag: str | None, available: Iterable[str]) -> str | None:
    if not tag or not isinstance(tag, str) or len(tag) > 35:
        return None
    tag = tag.strip().replace("_", "-")
    if not re.fullmatch(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*", tag):
        return None
    try:
        wanted = Locale.parse(tag, sep="-")
    except (ValueError, UnknownLocaleError):
        return None
    options = list(available)
    if str(wanted) in options:
        return str(wanted)
    same_language = [o for o in options if o.split("_")[0] == wanted.language]
    if not same_language:
        return None
    # ``pt`` prefers a bare ``pt`` catalog, then any regional one.
    return wanted.language if wanted.language in same_language else sorted(same_language)[0]


def accept_language(header: str | None) -> list[str]:
    """The tags of an ``Accept-Language`` header, most wanted first (q=0 dropped)."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate((header or "").split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def identity_language(identity: Mapping[str, Any] | None, field_path: str | None) -> str | None:
    """The value at ``field_path`` (``traits.locale``, ``metadata_public.language``) of an identity."""
    if not identity or not field_path:
        return None
    value: Any = identity
    for key in field_path.split("."):
        value = value.get(key) if isinstance(value, Mapping) else None
    return value if isinstance(value, str) else None


def negotiate(
    catalogs: Catalogs,
    *,
    default: str,
    identity_tag: str | None = None,
    accept: str | None = None,
    chosen: str | None = None,
) -> str:
    """The language of a response: the identity's own field, else ``Accept-Language``, else the
    ``?lang=`` choice (remembered in a cookie), else ``default``."""
    for tag in (identity_tag, *accept_language(accept), chosen):
        language = catalogs.match(tag)
        if language:
            return language
    return default


@cache
def builtin_catalogs() -> Catalogs:
    return Catalogs()
