"""Message templates: subject, plain-text and HTML body per Kratos template type.

Layout (bundled under ``sidecar/courier/templates/``, and the same inside
``courier.template_override_path``, where any single file replaces the bundled one)::

    <template_type>/email.subject.txt
    <template_type>/email.body.txt
    <template_type>/email.body.html

Templates are Jinja2 with the snake_case equivalents of Kratos' template data: ``to``,
``identity``, ``recovery_url``, ``recovery_code``, ``verification_url``, ``verification_code``,
``login_code``, ``registration_code``, ``traits``. A variable a template uses but the caller did not
pass is an error (``StrictUndefined``) rather than a silently empty code in someone's inbox.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from sidecar.courier.model import TEMPLATE_TYPES, TemplateType

BUNDLED = Path(__file__).with_name("templates")


def _one_line(subject: str) -> str:
    # A subject is a header: collapse every line break or control character a template (or a
    # trait interpolated into it) produced, so rendering never yields a header-injecting subject.
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in subject)
    return " ".join(cleaned.split())


class Templates:
    """Renders courier messages from the override directory first, then the bundled defaults."""

    def __init__(self, override_path: str | Path | None = None) -> None:
        searchpath = [str(override_path)] if override_path else []
        if override_path and not Path(override_path).is_dir():
            raise ValueError(f"courier.template_override_path: {override_path} is not a directory")
        searchpath.append(str(BUNDLED))
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(searchpath),
            # Only the HTML body is escaped: escaped plain text would show "&amp;" to the reader.
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
        )

    def render(self, template_type: TemplateType, data: Mapping[str, Any]) -> tuple[str, str, str]:
        """Return ``(subject, text, html)``; raises ``ValueError`` for an unknown type or missing data."""
        if template_type not in TEMPLATE_TYPES:
            raise ValueError(f"unknown courier template type {template_type!r}")
        try:
            subject = self._env.get_template(f"{template_type}/email.subject.txt").render(data)
            text = self._env.get_template(f"{template_type}/email.body.txt").render(data)
            html = self._env.get_template(f"{template_type}/email.body.html").render(data)
        except jinja2.UndefinedError as exc:
            raise ValueError(f"courier template {template_type}: {exc.message}") from exc
        return _one_line(subject), text, html


def render(
    template_type: TemplateType, data: Mapping[str, Any], override_path: str | None = None
) -> tuple[str, str, str]:
    """One-off rendering; long-lived callers keep a ``Templates`` so Jinja caches compiled templates."""
    return Templates(override_path).render(template_type, data)
