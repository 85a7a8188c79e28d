"""``/self-service/recovery/*`` (kratos-api.md §1.4, §11.15).

On success the browser gets the new session cookie and a 303 to the settings UI. An SPA (JSON
request) gets 422 ``browser_location_change_required`` pointing there, still with the cookie,
unless the feature flag ``use_continue_with_transitions`` is on: then 200 + the flow with
``continue_with``. API flows get 200 + the flow with ``continue_with`` (the session token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.challenge_routes import challenge_routes
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import NO_STORE, HttpContext, see_other
from sidecar.api.respond import json_response
from sidecar.flows.model import FlowType, flow_to_json
from sidecar.flows.outcome import AlreadySignedIn, Client, Completed, ShowFlow
from sidecar.flows.recovery import RecoveryFlows


def recovery_routes(
    ctx: HttpContext, flows: RecoveryFlows, error_flows: ErrorFlows, max_body: int
) -> list[Route]:
    transitions = ctx.config.feature_flags.use_continue_with_transitions

    async def init(
        flow_type: FlowType, client: Client, request_url: str, query: Mapping[str, str]
    ) -> ShowFlow | AlreadySignedIn:
        return await flows.init(flow_type, client, request_url=request_url, return_to=query.get("return_to"))

    def complete(done: Completed, json_req: bool) -> Response:
        body: dict[str, Any] = {**flow_to_json(done.flow), "continue_with": list(done.continue_with)}
        if done.flow.type == "api":
            return json_response(body, headers=NO_STORE)
        response: Response
        if json_req and transitions:
            response = json_response(body, headers=NO_STORE)
        elif json_req:
            exc = errors.BrowserLocationChangeRequired(extra={"redirect_browser_to": done.redirect_to})
            response = json_response(exc.to_dict(), exc.code, NO_STORE)
        else:
            response = see_other(done.redirect_to)
        if done.session is not None and done.token is not None:
            ctx.set_session_cookie(response, done.token, done.session)
        return response

    return challenge_routes(ctx, flows, init, complete, error_flows, max_body)
