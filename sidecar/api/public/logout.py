"""``/self-service/logout*`` (kratos-api.md §1.5)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.body import read_json
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import NO_STORE, HttpContext, is_json_request, see_other
from sidecar.api.respond import json_response
from sidecar.flows.logout import LogoutFlows


def logout_routes(
    ctx: HttpContext, flows: LogoutFlows, error_flows: ErrorFlows, max_body: int
) -> list[Route]:
    async def create_browser(request: Request) -> Response:
        session, _ = await ctx.current_session(request)
        made = await flows.create_browser(session, request.query_params.get("return_to"))
        return json_response(
            {"logout_url": made.logout_url, "logout_token": made.logout_token}, headers=NO_STORE
        )

    async def perform_browser(request: Request) -> Response:
        json_req = is_json_request(request)
        q = request.query_params
        try:
            session, _ = await ctx.current_session(request)
            target = await flows.perform_browser(
                q.get("token"), session, q.get("return_to"), ctx.origin(request)
            )
        except errors.SidecarError as exc:
            if json_req:
                raise
            return await error_flows.redirect(exc, request)
        response = Response(status_code=204, headers=NO_STORE) if json_req else see_other(target)
        ctx.clear_session_cookie(response)
        return response

    async def perform_api(request: Request) -> Response:
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            raise errors.BadRequest("the body must be a JSON object with session_token")
        await flows.perform_api(body.get("session_token"), ctx.origin(request))
        return Response(status_code=204, headers=NO_STORE)

    return [
        Route("/self-service/logout/browser", create_browser, methods=["GET"]),
        Route("/self-service/logout", perform_browser, methods=["GET"]),
        Route("/self-service/logout/api", perform_api, methods=["DELETE"]),
    ]
