"""``/self-service/methods/oidc/callback/{provider}``: where providers send the browser back.

Always a top-level browser navigation, so every answer is a 303: to the flow's UI (a form to
complete, a linking notice), to ``return_to`` with a session cookie, or to the error page.
A ``form_post`` callback (Apple) is a cross-site POST that carries no ``SameSite=Lax`` cookies;
it is turned into a GET on the same URL first, as Kratos does.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import HttpContext, read_submission, see_other
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.outcome import AlreadySignedIn, Completed, FlowReplaced, ShowFlow
from sidecar.flows.service import ProviderCallbacks

CALLBACK_PATH = "/self-service/methods/oidc/callback/{provider}"
_PARAMS = ("state", "code", "error", "error_description")


def oidc_routes(
    ctx: HttpContext,
    callbacks: ProviderCallbacks,
    lifecycles: Mapping[str, FlowLifecycle],
    error_flows: ErrorFlows,
    max_body: int,
) -> list[Route]:
    base = ctx.config.public_base_url

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
        life = lifecycles[kind]
        if isinstance(outcome, FlowReplaced | ShowFlow):
            return see_other(life.ui_redirect(outcome.flow))
        if isinstance(outcome, AlreadySignedIn):
            return see_other(outcome.redirect_to)
        if not isinstance(outcome, Completed):
            raise errors.InternalError(f"unexpected outcome of a provider callback: {type(outcome).__name__}")
        response = see_other(outcome.redirect_to)
        if outcome.session is not None and outcome.token is not None:
            ctx.set_session_cookie(response, outcome.token, outcome.session)
        return response

    return [Route(CALLBACK_PATH, callback, methods=["GET", "POST"])]
