"""English left on a translated console page: the console's own msgids (extracted from its code and
templates as ``pybabel extract`` does), and those of the core texts it shows (the identity schema's
violations, the access rules' reasons, the managers' refusals), that a page still shows in English.

A text counts as left over when its translation in the page's language differs from the English
(``Status`` is ``Status`` in German, ``SCIM`` everywhere): either a whole text chunk of the page
equals the msgid (short words: a button "Save"), or a long stretch of a msgid (between its
placeholders and tags) appears in one of them (a sentence around a value).
"""

from __future__ import annotations

import re
from functools import cache
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

from sidecar.i18n import Translator

ROOT = Path(__file__).resolve().parents[2]
_SPLIT = re.compile(r"%\(\w+\)s|\{\w+\}|<[^>]+>")
_LONG = 12
_ATTRIBUTES = ("title", "placeholder", "aria-label")


# Where the texts a console page can show are written (babel.cfg maps each of them).
SOURCES = (
    ("sidecar/console/**.py", "python"),
    ("sidecar/console/templates/**.html", "jinja2"),
    ("sidecar/schema/violations.py", "python"),
    ("sidecar/schema/titles.py", "python"),
    ("sidecar/rules/model.py", "python"),
    ("sidecar/rules/decision.py", "python"),
    ("sidecar/proxy/explain.py", "python"),
    ("sidecar/identity/refusals.py", "python"),
    ("sidecar/organization/refusals.py", "python"),
)

Text = tuple[str | None, tuple[str, ...]]
"""A message's context (a Kratos id, or None) and its English forms (one, or singular and plural)."""


@cache
def console_texts() -> tuple[Text, ...]:
    """Each message a console page can show."""
    options = {"sidecar/console/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    keywords = {**DEFAULT_KEYWORDS, "_m": ((1, "c"), 2)}
    found: dict[tuple[str | None, str], Text] = {}
    for _f, _l, message, _c, context in extract_from_dir(
        str(ROOT), list(SOURCES), options, keywords=keywords
    ):
        forms = (message,) if isinstance(message, str) else tuple(m for m in message if m)
        found[(context, forms[0])] = (context, forms)
    return tuple(found.values())


def _translations(tr: Translator, text: Text) -> list[str]:
    context, forms = text
    if len(forms) == 1:
        return [tr.pgettext(context, forms[0]) if context else tr.gettext(forms[0])]
    return [tr.ngettext(forms[0], forms[1], n) for n in (1, 2, 5, 1_000_000)]


class _Chunks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs:
            if name in _ATTRIBUTES and value:
                self.chunks.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.chunks.append(" ".join(data.split()))


def chunks_of_html(html: str) -> list[str]:
    parser = _Chunks()
    parser.feed(html)
    return parser.chunks


def english_left(chunks: list[str], tr: Translator) -> list[str]:
    """The console msgids still in English among ``chunks``: the page's text nodes and its
    titles, placeholders and labels (a piece between two values never spans two of them)."""
    shown = {" ".join(unescape(c).split()) for c in chunks}
    left = []
    for text in console_texts():
        forms = text[1]
        said = _translations(tr, text)
        translated = " ".join(said)
        for english in forms:
            if english in said:
                continue  # the same word in this language
            if english in shown:
                left.append(english)
                continue
            for piece in _SPLIT.split(english):
                piece = piece.strip(" .,:;()")
                if len(piece) >= _LONG and piece not in translated and any(piece in c for c in shown):
                    left.append(english)
                    break
    return sorted(set(left))
