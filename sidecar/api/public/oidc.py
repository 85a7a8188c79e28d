"""``/self-service/methods/oidc/callback/{provider}``: where providers send the browser back.

Always a top-level browser navigation, so every answer is a 303: to the flow's UI (a form to
complete, a linking notice), to ``return_to`` with a session cookie, or to the error page.
A ``form_post`` callback (Apple) is a cross-site POST that carries no ``SameSite=Lax`` cookies;
it is turned into a GET on the same URL first, as Kratos does.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode, urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.federated import came_back
from sidecar.api.public.flow_http import HttpContext, read_submission, see_other
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.outcome import Completed, FlowReplaced, Outcome, ShowFlow
from sidecar.flows.service import ProviderCallbacks
from sidecar.session.token_exchange import TokenExchanges

CALLBACK_PATH = "/self-service/methods/oidc/callback/{provider}"
_PARAMS = ("state", "code", "error", "error_description")


def oidc_routes(
    ctx: HttpContext,
    callbacks: ProviderCallbacks,
    lifecycles: Mapping[str, FlowLifecycle],
    error_flows: ErrorFlows,
    max_body: int,
    exchanges: TokenExchanges | None = None,
) -> list[Route]:
    base = ctx.config.public_base_url
    default_return = ctx.config.selfservice.default_browser_return_url or f"{base}/ui/welcome"

    async def to_app(outcome: Outcome) -> Response:
        """An API flow's browser leg (native social sign-in) ends at the app's ``return_to``:
        with ``?code=<return_to_code>`` when signed in (Kratos ``MaybeRedirectAPICodeFlow``),
        without when the flow needs the app again (Kratos ``login/error.go``: the flow's
        ``return_to``). No cookie: the app exchanges the codes for the session token."""
        flow = outcome.flow if isinstance(outcome, ShowFlow | FlowReplaced | Completed) else None
        target = (flow.return_to if flow is not None else None) or default_return
        if isinstance(outcome, Completed) and outcome.session is not None and outcome.token is not None:
            code = (
                await exchanges.attach(outcome.flow.id, outcome.session.id, outcome.token)
                if exchanges is not None
                else None
            )
            if code is None:
                # The exchange ran out with the flow: back to the app, which finds nothing to
                # exchange and starts again (never a 500 for a slow sign-in).
                return see_other(target)
            parts = urlsplit(target)
            query = "&".join(q for q in (parts.query, urlencode({"code": code})) if q)
            target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
        return see_other(target)

    async def callback(request: Request) -> Response:
        provider = request.path_params["provider"]
        if request.method == "POST":
            try:
                body = await read_submission(request, max_body)
            except errors.SidecarError as exc:
                return await error_flows.redirect(exc, request)
            query = urlencode({k: v for k, v in body.items() if k in _PARAMS and isinstance(v, str)})
            return see_other(f"{base}{CALLBACK_PATH.format(provider=provider)}?{query}")
        params = {k: v for k, v in request.query_params.items() if k in _PARAMS}
        try:
            client = await ctx.client(request)
            kind, outcome = await callbacks.handle(provider, params, client)
        except errors.SidecarError as exc:
            target = exc.extra.get("redirect_browser_to")
            if isinstance(target, str) and target:  # e.g. settings: sign in again first
                return see_other(target)
            return await error_flows.redirect(exc, request)
        if isinstance(outcome, FlowReplaced | ShowFlow | Completed) and outcome.flow.type == "api":
            return await to_app(outcome)
        return came_back(ctx, lifecycles, kind, outcome)

    return [Route(CALLBACK_PATH, callback, methods=["GET", "POST"])]
