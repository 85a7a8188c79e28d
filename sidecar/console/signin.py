"""``/console/login`` and ``/console/logout``: the console session's start and end."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.console.auth import (
    LOGIN_CSRF_COOKIE,
    ConsoleAuth,
    ConsoleSession,
    SignInRefused,
    client_ip,
    same_origin,
    token_matches,
)
from sidecar.console.pages import PREFIX, Form, Pages
from sidecar.i18n import N_, Phrase


def _next(raw: str | None) -> str:
    """Only a console path may be the place to go back to (no open redirect)."""
    if raw and raw.startswith(f"{PREFIX}/") and not raw.startswith("//") and "\\" not in raw:
        return raw
    return PREFIX


class SignIn:
    def __init__(self, pages: Pages, auth: ConsoleAuth) -> None:
        self.pages = pages
        self.auth = auth

    def _form(
        self, request: Request, *, message: str = "", status: int = 200, next_url: str | None = None
    ) -> Response:
        token, fresh = self.auth.login_csrf(request)
        language, chosen = self.pages.language(request)
        context = {
            "title": Phrase(N_("Sign in to the console")),
            "needs_key": self.auth.needs_key,
            "allowed": self.auth.may_try(request),
            # The console's refusals are msgids; a store's error is shown in English as it is.
            "message": Phrase(message),
            "login_csrf": token,
            "next": _next(next_url or request.query_params.get("next")),
        }
        response = self.pages.render("login.html", context, signed_in=None, status=status, language=language)
        if fresh:
            self.auth.set_login_csrf(request, response, token)
        return self.pages.remember(response, chosen)

    async def show(self, request: Request) -> Response:
        try:
            signed_in = await self.auth.current(request)
        except errors.SidecarError as exc:  # the key-value store is down: say so, never a 500
            return self._form(request, message=exc.message, status=exc.code)
        if signed_in is not None:
            return self.pages.redirect(_next(request.query_params.get("next")))
        return self._form(request)

    async def submit(self, request: Request) -> Response:
        try:
            form = await self.pages.read_form(request)
        except errors.SidecarError as exc:
            return self._form(request, message=exc.message, status=exc.code)
        audit = self.pages.audit
        if not same_origin(request) or not token_matches(
            request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf_token")
        ):
            audit.record(
                None, "console.sign_in", result="refused", detail="csrf", client_ip=client_ip(request)
            )
            return self._form(
                request,
                message=N_("The sign-in form was stale; please try again."),
                status=403,
                next_url=form.get("next"),
            )
        try:
            token, session = await self.auth.sign_in(request, form.get("api_key", ""), form.get("name", ""))
        except errors.SidecarError as exc:
            audit.record(
                None, "console.sign_in", result="failed", detail=exc.message, client_ip=client_ip(request)
            )
            return self._form(request, message=exc.message, status=exc.code, next_url=form.get("next"))
        except SignInRefused as exc:
            audit.record(
                None, "console.sign_in", result="refused", detail=str(exc), client_ip=client_ip(request)
            )
            return self._form(request, message=str(exc), status=exc.status, next_url=form.get("next"))
        audit.record(session.actor, "console.sign_in")
        response = self.pages.redirect(_next(form.get("next")))
        self.auth.set_cookie(request, response, token)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path=f"{PREFIX}")
        return response

    async def sign_out(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        await self.auth.sign_out(request)
        self.pages.audit.record(signed_in.actor, "console.sign_out")
        response = self.pages.redirect(f"{PREFIX}/login")
        self.auth.clear_cookie(request, response)
        return response
