"""How a denied request is answered, for the gateway and every decision dialect (DESIGN §5.4).

API clients get Kratos JSON (401 ``session_inactive`` with ``WWW-Authenticate``, 403
``session_aal2_required`` carrying where a browser would step up, 403, 503); browser navigations
get a redirect to the login page with ``return_to`` (302 for GET/HEAD, 303 otherwise; 303 for a
step-up) or the 403 page. A dialect whose proxy cannot pass a redirect on (nginx turns a 3xx from
``auth_request`` into a 500) answers 401 with the login URL in ``Location`` instead.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.types import Send

from sidecar import errors
from sidecar.proxy.responses import (
    FORBIDDEN_PAGE,
    HTML,
    NO_STORE,
    WWW_AUTHENTICATE,
    Answer,
    error_response,
    new_request_id,
    response,
    send_answer,
)
from sidecar.rules.decision import Verdict


class Denials:
    def __init__(self, public_base_url: str) -> None:
        self.login_url = public_base_url + "/self-service/login/browser"

    def login_location(self, return_to: str, *, aal2: bool = False) -> str:
        query = "aal=aal2&" if aal2 else ""
        return f"{self.login_url}?{query}return_to={quote(return_to, safe='')}"

    async def send(
        self,
        send: Send,
        verdict: Verdict,
        *,
        api: bool,
        method: str,
        return_to: str,
        redirects: bool = True,
        head: bool = False,
    ) -> None:
        await send_answer(
            send,
            self.render(verdict, api=api, method=method, return_to=return_to, redirects=redirects, head=head),
        )

    def render(
        self,
        verdict: Verdict,
        *,
        api: bool,
        method: str,
        return_to: str,
        redirects: bool = True,
        head: bool = False,
    ) -> Answer:
        """The answer to a ``verdict`` other than ALLOW. ``api``: a JSON client (never redirected);
        ``redirects``: False for a proxy that needs 401 + ``Location`` instead of a 3xx."""
        if verdict is Verdict.UNAVAILABLE:
            return error_response(errors.ServiceUnavailable(), request_id=new_request_id(), head=head)
        if verdict is Verdict.LOGIN:
            if api:
                return error_response(errors.SessionInactive(), extra=[WWW_AUTHENTICATE], head=head)
            location = self.login_location(return_to).encode()
            if redirects:
                status = 302 if method in ("GET", "HEAD") else 303
                return response(status, [(b"location", location), NO_STORE])
            extra = [WWW_AUTHENTICATE, (b"location", location)]
            return error_response(errors.SessionInactive(), extra=extra, head=head)
        if verdict is Verdict.STEP_UP:
            step_up = self.login_location(return_to, aal2=True)
            if api:
                # Kratos' session_aal2_required carries where a browser would step up.
                return error_response(errors.AAL2Required(extra={"redirect_browser_to": step_up}), head=head)
            if redirects:
                return response(303, [(b"location", step_up.encode()), NO_STORE])
            extra = [(b"location", step_up.encode())]
            return error_response(errors.SessionInactive(), extra=extra, head=head)
        if api:
            return error_response(errors.Forbidden(), head=head)
        return response(403, [HTML, NO_STORE], FORBIDDEN_PAGE, head=head)
