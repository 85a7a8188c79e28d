"""``/self-service/login/*`` (kratos-api.md §1.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import NO_STORE, HttpContext, see_other
from sidecar.api.public.flow_routes import flow_routes, truthy
from sidecar.api.respond import json_response
from sidecar.flows.login import LoginFlows
from sidecar.flows.model import FlowType
from sidecar.flows.outcome import AlreadySignedIn, Client, Completed, ShowFlow
from sidecar.session.session_json import session_to_json
from sidecar.session.token_exchange import TokenExchanges


def login_routes(
    ctx: HttpContext,
    flows: LoginFlows,
    error_flows: ErrorFlows,
    max_body: int,
    exchanges: TokenExchanges | None = None,
) -> list[Route]:
    async def init(
        flow_type: FlowType, client: Client, request_url: str, query: Mapping[str, str]
    ) -> ShowFlow | AlreadySignedIn:
        return await flows.init(
            flow_type,
            client,
            request_url=request_url,
            return_to=query.get("return_to"),
            refresh=truthy(query.get("refresh")),
            aal=query.get("aal") or None,
            organization=query.get("organization") or None,
        )

    def complete(done: Completed, json_req: bool) -> Response:
        if done.session is None or done.token is None:
            raise errors.InternalError("the login completed without a session")
        session = session_to_json(done.session, ctx.public_identity(done.identity))
        if done.flow.type == "api":
            body: dict[str, Any] = {
                "session": session,
                "session_token": done.token,
                "continue_with": [
                    {"action": "set_ory_session_token", "ory_session_token": done.token},
                    *done.continue_with,
                ],
            }
            return json_response(body, headers=NO_STORE)
        response: Response
        if json_req:
            redirect = {"action": "redirect_browser_to", "redirect_browser_to": done.redirect_to}
            response = json_response(
                {"session": session, "continue_with": [*done.continue_with, redirect]}, headers=NO_STORE
            )
        else:
            response = see_other(done.redirect_to)
        ctx.set_session_cookie(response, done.token, done.session)
        return response

    return flow_routes(ctx, flows, init, complete, error_flows, max_body, exchanges)
