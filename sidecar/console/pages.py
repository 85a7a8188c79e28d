"""What every console page shares: the Jinja2 environment, security headers, the sign-in guard,
form reading with the CSRF check, and errors drawn as pages (a 4xx, never a 500).

Handlers are written as ``async def handler(request, signed_in) -> Response``; ``Pages.page`` and
``Pages.action`` wrap them. ``action`` (every POST) checks, in order: a console session, the
browser's own cross-site signals, the form's CSRF token. Only then does the handler run.

Pages are drawn in the language the self-service pages would choose for the same request
(``selfservice.languages``: ``Accept-Language``, else a ``?lang=`` choice remembered in the
``languages.cookie`` cookie, else ``languages.default``); ``ConsoleSession.language`` carries it to
the handlers. Texts written in Python are ``Phrase``s (English msgids marked with ``N_``), translated
when a template prints them; audit lines are written from the English text.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sidecar import __version__, errors
from sidecar.api.body import read_body
from sidecar.config.model import Languages
from sidecar.console.audit import Audit
from sidecar.console.auth import ConsoleAuth, ConsoleSession, same_origin, token_matches
from sidecar.console.wording import said
from sidecar.i18n import N_, Catalogs, Phrase, Translator, builtin_catalogs, negotiate

log = logging.getLogger("sidecar.console")

PREFIX = "/console"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Same-origin only: no console URL leaves the console, and form posts keep their Origin header.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_STATIC = {"console.css": "text/css; charset=utf-8"}
NAV = (
    ("overview", Phrase(N_("Overview")), PREFIX),
    ("identities", Phrase(N_("Identities")), f"{PREFIX}/identities"),
    ("organizations", Phrase(N_("Organizations")), f"{PREFIX}/organizations"),
    ("courier", Phrase(N_("Courier")), f"{PREFIX}/courier"),
    ("webhooks", Phrase(N_("Web hooks")), f"{PREFIX}/webhooks"),
    ("rules", Phrase(N_("Access rules")), f"{PREFIX}/rules"),
)
_TITLES = {
    400: N_("That did not work"),
    404: N_("Not found"),
    409: N_("Conflict"),
    413: N_("Too large"),
    415: N_("Not a form"),
}
REFUSED = N_("Refused")
UNAVAILABLE = N_("Unavailable")

Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]
Form = Mapping[str, str]
FormHandler = Callable[[Request, ConsoleSession, Form], Awaitable[Response]]


class Problem(Exception):
    """A request the console refuses with a page in the reader's language: ``code`` (4xx) and
    what to say. Raised where the text has values in it; a ``SidecarError`` with a fixed English
    message is translated by that message."""

    def __init__(self, code: int, text: Phrase) -> None:
        super().__init__(str(text))
        self.code = code
        self.text = text


class Pages:
    def __init__(
        self,
        auth: ConsoleAuth,
        audit: Audit,
        max_body: int,
        *,
        catalogs: Catalogs | None = None,
        languages: Languages | None = None,
    ) -> None:
        self.auth = auth
        self.audit = audit
        self.max_body = max_body
        self.catalogs = catalogs or builtin_catalogs()
        self.languages = languages or Languages()
        self.envs: dict[str, jinja2.Environment] = {}
        self.static_files: dict[str, tuple[bytes, str]] = {}
        for name, media_type in _STATIC.items():
            body = resources.files("sidecar.console").joinpath("static", name).read_bytes()
            self.static_files[name] = (body, media_type)
        versions = {name: hashlib.sha256(b).hexdigest()[:12] for name, (b, _) in self.static_files.items()}
        self.globals = {
            "prefix": PREFIX,
            "version": __version__,
            "nav": NAV,
            "static_url": lambda name: f"{PREFIX}/static/{name}?v={versions.get(name, '')}",
        }

    # --- language -------------------------------------------------------------------------------

    def language(self, request: Request) -> tuple[str, str | None]:
        """The request's language, as the self-service pages choose it (no identity here: the
        operator is not one), and a ``?lang=`` choice to remember in the cookie (or None)."""
        asked = request.query_params.get("lang")
        chosen = self.catalogs.match(asked) if asked else None
        language = negotiate(
            self.catalogs,
            default=self.languages.default,
            accept=request.headers.get("accept-language"),
            chosen=chosen or request.cookies.get(self.languages.cookie),
        )
        return language, chosen

    def remember(self, response: Response, chosen: str | None) -> Response:
        if chosen:
            response.set_cookie(
                self.languages.cookie,
                chosen,
                max_age=365 * 24 * 3600,
                path=PREFIX,
                samesite="lax",
                httponly=True,
            )
        return response

    def environment(self, language: str) -> jinja2.Environment:
        """One environment per language: ``_()`` in the templates, the ``Phrase``s printed and
        the ``when`` and ``number`` filters all speak it."""
        env = self.envs.get(language)
        if env is None:
            env = _environment(self.catalogs.translator(language))
            env.globals.update(self.globals)
            self.envs[language] = env
        return env

    # --- responses ------------------------------------------------------------------------------

    def render(
        self,
        template: str,
        context: dict[str, Any],
        *,
        signed_in: ConsoleSession | None,
        section: str = "",
        status: int = 200,
        language: str | None = None,
    ) -> Response:
        """``language``: for a page drawn without a console session (else the session's)."""
        language = language or (signed_in.language if signed_in else "") or self.languages.default
        html_lang = language.replace("_", "-")
        html = (
            self.environment(language)
            .get_template(template)
            .render(
                **context,
                signed_in=signed_in,
                csrf=signed_in.csrf if signed_in else "",
                section=section,
                html_lang=html_lang,
            )
        )
        response = HTMLResponse(html, status_code=status, headers=HEADERS)
        response.headers["Content-Language"] = html_lang
        response.headers["Vary"] = "Accept-Language, Cookie"
        return response

    @staticmethod
    def redirect(url: str) -> Response:
        return RedirectResponse(url, status_code=303, headers=HEADERS)

    def problem(
        self,
        signed_in: ConsoleSession | None,
        status: int,
        title: str,
        message: str | Phrase,
        back: str | None = None,
        *,
        language: str | None = None,
    ) -> Response:
        """``title`` and a ``str`` ``message`` are English msgids (translated when drawn)."""
        context = {
            "title": Phrase(title),
            "message": said(message),
            "code": status,
            "back": back,
        }
        return self.render("error.html", context, signed_in=signed_in, status=status, language=language)

    async def static(self, request: Request) -> Response:
        found = self.static_files.get(request.path_params["name"])
        if found is None:
            return Response("not found", status_code=404, media_type="text/plain")
        body, media_type = found
        return Response(
            body,
            media_type=media_type,
            headers={
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )

    # --- guards ---------------------------------------------------------------------------------

    def page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A GET page: signed-out visitors go to the sign-in page and come back afterwards."""

        async def endpoint(request: Request) -> Response:
            language, chosen = self.language(request)
            try:
                signed_in = await self.auth.current(request)
            except errors.SidecarError as exc:
                return self._error(None, exc, language)
            if signed_in is None:
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self.redirect(f"{PREFIX}/login?{urlencode({'next': back})}")
            signed_in = replace(signed_in, language=language)
            try:
                response = await handler(request, signed_in)
            except errors.SidecarError as exc:
                response = self._error(signed_in, exc)
            except Problem as problem:
                response = self._problem(signed_in, problem)
            return self.remember(response, chosen)

        return endpoint

    def action(self, handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
        """A POST: session, then same-origin, then the CSRF token; the handler gets the form."""

        async def endpoint(request: Request) -> Response:
            language, _ = self.language(request)
            signed_in: ConsoleSession | None = None
            try:
                signed_in = await self.auth.current(request)
                if signed_in is None:
                    return self.problem(
                        None,
                        401,
                        N_("Signed out"),
                        N_("Your console session has ended. Sign in again."),
                        f"{PREFIX}/login",
                        language=language,
                    )
                signed_in = replace(signed_in, language=language)
                if not same_origin(request):
                    self.audit.record(signed_in.actor, "csrf.cross_site", result="refused")
                    return self.problem(signed_in, 403, REFUSED, N_("The request came from another site."))
                form = await self.read_form(request)
                if not token_matches(signed_in.csrf, form.get("csrf_token")):
                    self.audit.record(signed_in.actor, "csrf.token", result="refused")
                    return self.problem(
                        signed_in,
                        403,
                        REFUSED,
                        N_("The form was stale or forged (CSRF token). Reload and retry."),
                    )
                return await handler(request, signed_in, form)
            except errors.SidecarError as exc:
                return self._error(signed_in, exc, language)
            except Problem as problem:
                return self._problem(signed_in, problem, language)

        return endpoint

    async def read_form(self, request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", ""):
            raise errors.UnsupportedMediaType(N_("The console accepts form posts only."))
        raw = await read_body(request, self.max_body)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        except UnicodeDecodeError:
            raise errors.BadRequest(N_("The form is not valid UTF-8.")) from None
        except ValueError:
            raise errors.BadRequest(N_("The form has too many fields.")) from None
        form: dict[str, str] = {}
        for key, value in pairs:
            form.setdefault(key, value)
        return form

    def _error(
        self, signed_in: ConsoleSession | None, exc: errors.SidecarError, language: str | None = None
    ) -> Response:
        if exc.code >= 500:
            log.warning("console: %s", exc.message)
        # A specific message beats the class's generic one; Kratos puts the detail in ``reason`` then.
        # The console's own messages are msgids; the core's refusals are found among theirs.
        text = exc.message if exc.message != exc.default_message else (exc.reason or exc.message)
        return self.problem(signed_in, exc.code, _title(exc.code), text, language=language)

    def _problem(
        self, signed_in: ConsoleSession | None, problem: Problem, language: str | None = None
    ) -> Response:
        return self.problem(signed_in, problem.code, _title(problem.code), problem.text, language=language)


def _title(code: int) -> str:
    return _TITLES.get(code, UNAVAILABLE if code >= 500 else REFUSED)


def _environment(translator: Translator) -> jinja2.Environment:
    def finalize(value: Any) -> Any:
        # A ``Phrase`` from Python is translated where it is printed (text, attribute or heading).
        return value.translated(translator) if isinstance(value, Phrase) else value

    def when(value: Any) -> str:
        if value is None or value == "":
            return ""
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return str(value)
        return translator.moment(value) if isinstance(value, datetime) else str(value)

    def number(value: Any) -> str:
        return (
            translator.integer(value)
            if isinstance(value, int) and not isinstance(value, bool)
            else str(value)
        )

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sidecar.console", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        finalize=finalize,
    )
    # newstyle: ``_("... %(name)s", name=value)`` escapes the value, never the translation's markup.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=translator.gettext,
        ngettext=translator.ngettext,
        pgettext=translator.pgettext,
        newstyle=True,
    )
    env.filters["when"] = when
    env.filters["number"] = number
    # A ``Phrase`` handed to ``_()`` as a value: translated first (``%`` would print the English).
    env.filters["tr"] = finalize
    return env
