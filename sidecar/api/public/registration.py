"""``/self-service/registration/*`` (kratos-api.md §1.2)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import NO_STORE, HttpContext, see_other
from sidecar.api.public.flow_routes import flow_routes
from sidecar.api.respond import json_response
from sidecar.flows.model import FlowType
from sidecar.flows.outcome import AlreadySignedIn, Client, Completed, ShowFlow
from sidecar.flows.registration import RegistrationFlows
from sidecar.session.session_json import session_to_json
from sidecar.session.token_exchange import TokenExchanges


def registration_routes(
    ctx: HttpContext,
    flows: RegistrationFlows,
    error_flows: ErrorFlows,
    max_body: int,
    exchanges: TokenExchanges | None = None,
) -> list[Route]:
    async def init(
        flow_type: FlowType, client: Client, request_url: str, query: Mapping[str, str]
    ) -> ShowFlow | AlreadySignedIn:
        return await flows.init(flow_type, client, request_url=request_url, return_to=query.get("return_to"))

    def complete(done: Completed, json_req: bool) -> Response:
        identity = ctx.public_identity(done.identity)
        body: dict[str, Any] = {"identity": identity, "continue_with": list(done.continue_with)}
        if done.session is not None:
            body["session"] = session_to_json(done.session, identity)
        if done.flow.type == "api":
            if done.token is not None:
                body["session_token"] = done.token
                body["continue_with"].append(
                    {"action": "set_ory_session_token", "ory_session_token": done.token}
                )
            return json_response(body, headers=NO_STORE)
        response: Response
        if json_req:
            body["continue_with"].append(
                {"action": "redirect_browser_to", "redirect_browser_to": done.redirect_to}
            )
            response = json_response(body, headers=NO_STORE)
        else:
            response = see_other(done.redirect_to)
        if done.session is not None and done.token is not None:
            ctx.set_session_cookie(response, done.token, done.session)
        return response

    return flow_routes(ctx, flows, init, complete, error_flows, max_body, exchanges)
