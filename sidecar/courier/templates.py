"""Message templates: subject, plain-text and HTML body per Kratos template type.

Layout (bundled under ``sidecar/courier/templates/``, and the same inside
``courier.template_override_path``, where any single file replaces the bundled one)::

    <template_type>/email.subject.txt
    <template_type>/email.body.txt
    <template_type>/email.body.html
    <template_type>/sms.body.txt            (text messages: the code templates)

Languages: the bundled templates put their sentences through ``_()``, the gettext catalogs of
``sidecar.i18n``. An override may be per language, ``<template_type>/<lang>/email.body.txt``
(``recovery_code_valid/fr/``), which wins over a language-neutral override, which wins over the
bundled template. The language is the recipient identity's ``selfservice.languages.identity_field``
(e.g. ``traits.locale``) when the message has an identity and that names a language with a catalog,
else ``selfservice.languages.default``.

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
from sidecar.i18n import SOURCE_LANGUAGE, Catalogs, builtin_catalogs, identity_language

BUNDLED = Path(__file__).with_name("templates")


def _one_line(subject: str) -> str:
    # A subject is a header: collapse every line break or control character a template (or a
    # trait interpolated into it) produced, so rendering never yields a header-injecting subject.
    cleaned = "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in subject)
    return " ".join(cleaned.split())


class Templates:
    """Renders courier messages from the override directory first, then the bundled defaults."""

    def __init__(
        self,
        override_path: str | Path | None = None,
        *,
        catalogs: Catalogs | None = None,
        default_language: str = SOURCE_LANGUAGE,
        identity_field: str | None = "traits.locale",
    ) -> None:
        self._searchpath = [str(override_path)] if override_path else []
        if override_path and not Path(override_path).is_dir():
            raise ValueError(f"courier.template_override_path: {override_path} is not a directory")
        self._searchpath.append(str(BUNDLED))
        self._catalogs = catalogs or builtin_catalogs()
        self._default = default_language
        self._identity_field = identity_field
        self._envs: dict[str, jinja2.Environment] = {}

    def _environment(self, language: str) -> jinja2.Environment:
        env = self._envs.get(language)
        if env is None:
            translator = self._catalogs.translator(language)
            env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(self._searchpath),
                # Only the HTML body is escaped: escaped plain text would show "&amp;" to the reader.
                autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
                undefined=jinja2.StrictUndefined,
                keep_trailing_newline=True,
                extensions=["jinja2.ext.i18n"],
            )
            env.install_gettext_callables(  # type: ignore[attr-defined]
                gettext=translator.gettext,
                ngettext=translator.ngettext,  # the catalog's plural forms
                newstyle=True,
            )
            self._envs[language] = env
        return env

    def language_of(self, data: Mapping[str, Any]) -> str:
        """The recipient's language: the identity's field when it names a catalog, else the default."""
        identity = data.get("identity")
        tag = identity_language(identity if isinstance(identity, Mapping) else None, self._identity_field)
        return self._catalogs.match(tag) or self._default

    def render(
        self, template_type: TemplateType, data: Mapping[str, Any], language: str | None = None
    ) -> tuple[str, str, str]:
        """Return ``(subject, text, html)`` in ``language`` (default: ``language_of(data)``); raises
        ``ValueError`` for an unknown type or missing data."""
        if template_type not in TEMPLATE_TYPES:
            raise ValueError(f"unknown courier template type {template_type!r}")
        language = language or self.language_of(data)
        env = self._environment(language)

        def one(name: str) -> str:
            # The language's own override first, then the shared one (bundled: translated by gettext).
            return env.select_template(
                [f"{template_type}/{language}/{name}", f"{template_type}/{name}"]
            ).render(data)

        try:
            subject, text, html = one("email.subject.txt"), one("email.body.txt"), one("email.body.html")
        except jinja2.UndefinedError as exc:
            raise ValueError(f"courier template {template_type}: {exc.message}") from exc
        return _one_line(subject), text, html

    def render_sms(self, template_type: TemplateType, data: Mapping[str, Any]) -> str:
        """The text message for ``template_type`` (``<template_type>/sms.body.txt``, overridable
        like the email files); ``ValueError`` when there is none (Kratos has text messages for the
        valid verification, recovery, login and registration codes only)."""
        if template_type not in TEMPLATE_TYPES:
            raise ValueError(f"unknown courier template type {template_type!r}")
        language = self.language_of(data)
        env = self._environment(language)
        try:
            template = env.select_template(
                [f"{template_type}/{language}/sms.body.txt", f"{template_type}/sms.body.txt"]
            )
        except jinja2.TemplateNotFound:
            raise ValueError(f"courier template {template_type} has no text message (sms.body.txt)") from None
        try:
            return template.render(data).strip()
        except jinja2.UndefinedError as exc:
            raise ValueError(f"courier template {template_type}: {exc.message}") from exc


def render(
    template_type: TemplateType, data: Mapping[str, Any], override_path: str | None = None
) -> tuple[str, str, str]:
    """One-off rendering; long-lived callers keep a ``Templates`` so Jinja caches compiled templates."""
    return Templates(override_path).render(template_type, data)
