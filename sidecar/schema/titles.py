"""The built-in identity schema's trait titles (``default.json``) as messages. A page shows a title
as Kratos' label 1070002, translated where a catalog has it (``msgctxt "1070002"``, the title as
``msgid``): listed here so ``pybabel extract`` puts them in the catalogs; tests/schema checks the
list is the schema's."""

from __future__ import annotations


def _m(message_id: str, title: str) -> str:
    return title


TITLES = (
    _m("1070002", "E-Mail"),
    _m("1070002", "First name"),
    _m("1070002", "Last name"),
)
