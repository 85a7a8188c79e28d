"""What every console page shares: the Jinja2 environment, security headers, the sign-in guard,
form reading with the CSRF check, and errors drawn as pages (a 4xx, never a 500).

Handlers are written as ``async def handler(request, signed_in) -> Response``; ``Pages.page`` and
``Pages.action`` wrap them. ``action`` (every POST) checks, in order: a console session, the
browser's own cross-site signals, the form's CSRF token. Only then does the handler run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from sidecar import __version__, errors
from sidecar.api.body import read_body
from sidecar.console.audit import Audit
from sidecar.console.auth import ConsoleAuth, ConsoleSession, same_origin, token_matches
from sidecar.ui.wording import readable_time

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
    ("overview", "Overview", PREFIX),
    ("identities", "Identities", f"{PREFIX}/identities"),
    ("organizations", "Organizations", f"{PREFIX}/organizations"),
    ("courier", "Courier", f"{PREFIX}/courier"),
    ("webhooks", "Web hooks", f"{PREFIX}/webhooks"),
    ("rules", "Access rules", f"{PREFIX}/rules"),
)

Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]
Form = Mapping[str, str]
FormHandler = Callable[[Request, ConsoleSession, Form], Awaitable[Response]]


class Pages:
    def __init__(self, auth: ConsoleAuth, audit: Audit, max_body: int) -> None:
        self.auth = auth
        self.audit = audit
        self.max_body = max_body
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("sidecar.console", "templates"),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
        )
        self.static_files: dict[str, tuple[bytes, str]] = {}
        for name, media_type in _STATIC.items():
            body = resources.files("sidecar.console").joinpath("static", name).read_bytes()
            self.static_files[name] = (body, media_type)
        versions = {name: hashlib.sha256(b).hexdigest()[:12] for name, (b, _) in self.static_files.items()}
        self.env.globals.update(
            prefix=PREFIX,
            version=__version__,
            nav=NAV,
            static_url=lambda name: f"{PREFIX}/static/{name}?v={versions.get(name, '')}",
        )
        self.env.filters["when"] = _when

    # --- responses ------------------------------------------------------------------------------

    def render(
        self,
        template: str,
        context: dict[str, Any],
        *,
        signed_in: ConsoleSession | None,
        section: str = "",
        status: int = 200,
    ) -> Response:
        html = self.env.get_template(template).render(
            **context,
            signed_in=signed_in,
            csrf=signed_in.csrf if signed_in else "",
            section=section,
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    @staticmethod
    def redirect(url: str) -> Response:
        return RedirectResponse(url, status_code=303, headers=HEADERS)

    def problem(
        self, signed_in: ConsoleSession | None, status: int, title: str, message: str, back: str | None = None
    ) -> Response:
        context = {"title": title, "message": message, "code": status, "back": back}
        return self.render("error.html", context, signed_in=signed_in, status=status)

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
            try:
                signed_in = await self.auth.current(request)
            except errors.SidecarError as exc:
                return self._error(None, exc)
            if signed_in is None:
                back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return self.redirect(f"{PREFIX}/login?{urlencode({'next': back})}")
            try:
                return await handler(request, signed_in)
            except errors.SidecarError as exc:
                return self._error(signed_in, exc)

        return endpoint

    def action(self, handler: FormHandler) -> Callable[[Request], Awaitable[Response]]:
        """A POST: session, then same-origin, then the CSRF token; the handler gets the form."""

        async def endpoint(request: Request) -> Response:
            signed_in: ConsoleSession | None = None
            try:
                signed_in = await self.auth.current(request)
                if signed_in is None:
                    return self.problem(
                        None,
                        401,
                        "Signed out",
                        "Your console session has ended. Sign in again.",
                        f"{PREFIX}/login",
                    )
                if not same_origin(request):
                    self.audit.record(signed_in.actor, "csrf.cross_site", result="refused")
                    return self.problem(signed_in, 403, "Refused", "The request came from another site.")
                form = await self.read_form(request)
                if not token_matches(signed_in.csrf, form.get("csrf_token")):
                    self.audit.record(signed_in.actor, "csrf.token", result="refused")
                    return self.problem(
                        signed_in,
                        403,
                        "Refused",
                        "The form was stale or forged (CSRF token). Reload and retry.",
                    )
                return await handler(request, signed_in, form)
            except errors.SidecarError as exc:
                return self._error(signed_in, exc)

        return endpoint

    async def read_form(self, request: Request) -> dict[str, str]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", ""):
            raise errors.UnsupportedMediaType("the console accepts form posts only")
        raw = await read_body(request, self.max_body)
        try:
            pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
        except UnicodeDecodeError:
            raise errors.BadRequest("the form is not valid UTF-8") from None
        except ValueError:
            raise errors.BadRequest("the form has too many fields") from None
        form: dict[str, str] = {}
        for key, value in pairs:
            form.setdefault(key, value)
        return form

    def _error(self, signed_in: ConsoleSession | None, exc: errors.SidecarError) -> Response:
        if exc.code >= 500:
            log.warning("console: %s", exc.message)
        title = {
            400: "That did not work",
            404: "Not found",
            409: "Conflict",
            413: "Too large",
            415: "Not a form",
        }.get(exc.code, "Unavailable" if exc.code >= 500 else "Refused")
        # A specific message beats the class's generic one; Kratos puts the detail in ``reason`` then.
        text = exc.message if exc.message != exc.default_message else (exc.reason or exc.message)
        return self.problem(signed_in, exc.code, title, text)


def _when(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        value = value.isoformat().replace("+00:00", "Z")
    return readable_time(value)
