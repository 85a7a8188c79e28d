"""English left on a translated console page: the console's own msgids (extracted from its code and
templates as ``pybabel extract`` does) that a page still shows in English.

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


@cache
def console_texts() -> tuple[tuple[str, ...], ...]:
    """Each console message as its English forms (one, or singular and plural)."""
    method_map = [
        ("sidecar/console/**.py", "python"),
        ("sidecar/console/templates/**.html", "jinja2"),
    ]
    options = {"sidecar/console/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found: dict[str, tuple[str, ...]] = {}
    for _f, _l, message, _c, _ctx in extract_from_dir(
        str(ROOT), method_map, options, keywords=DEFAULT_KEYWORDS
    ):
        forms = (message,) if isinstance(message, str) else tuple(m for m in message if m)
        found[forms[0]] = forms
    return tuple(found.values())


def _translations(tr: Translator, forms: tuple[str, ...]) -> list[str]:
    if len(forms) == 1:
        return [tr.gettext(forms[0])]
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
    for forms in console_texts():
        said = _translations(tr, forms)
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
