"""Languages: gettext catalogs (Babel ``.po`` files) and the choice of a language per request.

The catalogs live in ``sidecar/i18n/locales/<lang>/LC_MESSAGES/sidecar.po`` (template:
``locales/sidecar.pot``). A language is available when its directory exists: a translator adds
one by copying the template, never by touching code. ``.po`` files are read at start-up (no
compile step, so the package ships exactly what a translator edits). A message without a
translation in the chosen language is shown in English, the source language.
"""

from __future__ import annotations

import gettext as _gettext
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton, format_time
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

SOURCE_LANGUAGE = "en"
DOMAIN = "sidecar"


def N_(message: str) -> str:
    """Marks a string for extraction where it is defined; it is translated where it is shown."""
    return message


def _english_plural(n: int) -> int:
    return 0 if n == 1 else 1


@dataclass(frozen=True)
class Translator:
    """One language's catalog: ``gettext``, ``ngettext`` and ``pgettext`` fall back to English."""

    language: str
    entries: Mapping[tuple[str | None, str], str] = field(default_factory=dict)
    plurals: Mapping[tuple[str | None, str], tuple[str, ...]] = field(default_factory=dict)
    """Plural messages by their singular ``msgid``: one text per plural form of the language."""
    plural: Callable[[int], int] = _english_plural
    """Which form a count takes (the catalog's ``Plural-Forms``)."""

    def gettext(self, message: str) -> str:
        return self.entries.get((None, message)) or message

    def pgettext(self, context: str, message: str) -> str:
        return self.entries.get((context, message)) or message

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        forms = self.plurals.get((None, singular))
        if forms:
            index = self.plural(n)
            if 0 <= index < len(forms) and forms[index]:
                return forms[index]
        return singular if n == 1 else plural

    def has(self, context: str | None, message: str) -> bool:
        return bool(self.entries.get((context, message)) or self.plurals.get((context, message)))

    def number(self, value: str) -> str:
        """A decimal as this language writes it (``3.50`` → ``3,50`` in German); other text unchanged."""
        try:
            return format_decimal(float(value), format="0.00" if "." in value else "0", locale=self.language)
        except (ValueError, UnknownLocaleError):
            return value

    def integer(self, value: int) -> str:
        """A count as this language writes it (``12345`` → ``12.345`` in German)."""
        try:
            return format_decimal(value, locale=self.language)
        except (ValueError, UnknownLocaleError):
            return str(value)

    def moment(self, value: datetime) -> str:
        """A point in time, in UTC, as this language writes a date and a time
        (``26 Nov 2026, 11:00 UTC`` → ``26. Nov. 2026, 11:00 UTC``, ``2026年11月26日 11:00 UTC``)."""
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        try:
            locale = Locale.parse(self.language)
            date = format_skeleton("yMMMd", value, tzinfo=UTC, locale=locale)
            time = format_time(value, "short", tzinfo=UTC, locale=locale)
            glue = str(locale.datetime_formats.get("medium", "{1}, {0}"))
            return glue.replace("{1}", date).replace("{0}", time) + " UTC"
        except (ValueError, UnknownLocaleError):
            return value.astimezone(UTC).strftime("%d %b %Y, %H:%M UTC").lstrip("0")


class Phrase:
    """A text to show later in the reader's language: an English ``msgid`` (marked with ``N_``
    where it is written, so it is extracted) and the values of its ``{placeholders}``, filled in
    after translation (word order differs between languages). ``str()`` is the English text, for
    logs and audit lines, which stay English."""

    __slots__ = ("context", "msgid", "params")

    def __init__(self, msgid: str, *, context: str | None = None, **params: object) -> None:
        self.msgid = msgid
        self.context = context
        self.params = params

    def __str__(self) -> str:
        return self._fill(self.msgid)

    def __repr__(self) -> str:
        return f"Phrase({self.msgid!r})"

    def __bool__(self) -> bool:
        return bool(self.msgid)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Phrase):
            return (self.msgid, self.context, self.params) == (other.msgid, other.context, other.params)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.msgid, self.context))

    def translated(self, translator: Translator) -> str:
        if self.context is not None:
            template = translator.pgettext(self.context, self.msgid)
        else:
            template = translator.gettext(self.msgid)
        # A value may be a phrase itself (a status word): it is said in the same language.
        values = {k: v.translated(translator) if isinstance(v, Phrase) else v for k, v in self.params.items()}
        return self._fill(template, values)

    def _fill(self, template: str, values: Mapping[str, object] | None = None) -> str:
        if not self.params:
            return template
        values = self.params if values is None else values
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):  # a broken translation: the English text
            return self.msgid.format(**values)


class Phrases(Phrase):
    """Phrases said one after another (a list of reasons, of requirements), each in the reader's
    language, ``separator`` between them: a msgid too (``", "`` is ``"、"`` in Japanese)."""

    __slots__ = ("parts", "separator")

    def __init__(self, parts: Iterable[str | Phrase], separator: str = ", ") -> None:
        super().__init__("")
        self.parts = tuple(p if isinstance(p, Phrase) else Phrase(p) for p in parts)
        self.separator = separator

    def __str__(self) -> str:
        return self.separator.join(str(p) for p in self.parts)

    def __repr__(self) -> str:
        return f"Phrases({self.parts!r})"

    def __bool__(self) -> bool:
        return any(self.parts)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Phrases):
            return (self.parts, self.separator) == (other.parts, other.separator)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.parts)

    def translated(self, translator: Translator) -> str:
        return translator.gettext(self.separator).join(p.translated(translator) for p in self.parts)


def recognise(text: str, templates: Iterable[str]) -> Phrase | None:
    """The phrase an English ``text`` was made from (``template.format(...)``): the first of
    ``templates`` it fits, its values found again, so a text the core wrote in English can be said
    in another language; None when none fits."""
    for template in templates:
        found = _template_pattern(template).fullmatch(text)
        if found:
            return Phrase(template, **found.groupdict())
    return None


@cache
def _template_pattern(template: str) -> re.Pattern[str]:
    pieces = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.*?)" for i, p in enumerate(pieces)), re.DOTALL
    )


@dataclass
class _Read:
    entries: dict[tuple[str | None, str], str] = field(default_factory=dict)
    plurals: dict[tuple[str | None, str], tuple[str, ...]] = field(default_factory=dict)
    plural_expr: str | None = None


# Parsed catalogs by (path, size, mtime): each ``build_services`` (every start, each worker, each
# test's services) reads the five shipped catalogs, and babel's parse is about 25 ms of CPU. A file
# is parsed once per process, again when it changes. What is stored is never mutated (Catalogs
# merges into new _Read objects).
_parsed: dict[tuple[str, int, int], _Read] = {}


def _read_catalog(path: Path | Any) -> _Read:
    try:
        stat = os.stat(str(path))
    except OSError:  # not a file on disk (a zipped package): parse it every time
        return _parse_catalog(path)
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _parsed:
        _parsed[key] = _parse_catalog(path)
    return _parsed[key]


def _parse_catalog(path: Path | Any) -> _Read:
    with path.open("rb") as handle:
        catalog = read_po(handle)
    out = _Read(plural_expr=catalog.plural_expr if catalog.locale is not None else None)
    for message in catalog:
        if not message.id or message.fuzzy:
            continue
        if isinstance(message.id, str) and isinstance(message.string, str):
            if message.string:
                out.entries[(message.context, message.id)] = message.string
        elif (
            isinstance(message.id, tuple | list)
            and isinstance(message.string, tuple | list)
            and all(message.string)
        ):
            out.plurals[(message.context, str(message.id[0]))] = tuple(str(s) for s in message.string)
    return out


def _plural_rule(expression: str | None) -> Callable[[int], int]:
    """The catalog's ``Plural-Forms`` C expression as a function (the standard library's parser)."""
    if not expression:
        return _english_plural
    try:
        return _gettext.c2py(expression)
    except (ValueError, SyntaxError):
        return _english_plural


class Catalogs:
    """All languages: the built-in catalogs, each entry overridable from ``extra_dir``
    (``<extra_dir>/<lang>/LC_MESSAGES/sidecar.po``, which may also add a language)."""

    def __init__(self, extra_dir: str | Path | None = None) -> None:
        self._translators: dict[str, Translator] = {}
        builtin = resources.files("sidecar.i18n").joinpath("locales")
        sources: list[Any] = [builtin]
        if extra_dir is not None:
            sources.append(Path(extra_dir))
        merged: dict[str, _Read] = {SOURCE_LANGUAGE: _Read()}
        for root in sources:
            if not root.is_dir():
                continue
            for child in root.iterdir():
                po = child.joinpath("LC_MESSAGES", f"{DOMAIN}.po")
                if child.is_dir() and po.is_file():
                    read = _read_catalog(po)
                    into = merged.setdefault(child.name, _Read())
                    into.entries.update(read.entries)
                    into.plurals.update(read.plurals)
                    # The first catalog of a language (the built-in one) says how it counts.
                    into.plural_expr = into.plural_expr or read.plural_expr
        for language, read in merged.items():
            self._translators[language] = Translator(
                language, read.entries, read.plurals, _plural_rule(read.plural_expr)
            )

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
