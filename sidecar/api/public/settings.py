"""``/self-service/settings/*`` (kratos-api.md §1.3).

Like login and registration, but every answer carries the identity (``settingsFlow.identity``)
and the session errors steer plain browsers: no session → 303 to the login page and back,
``session_aal2_required`` / ``session_refresh_required`` → 303 to their ``redirect_browser_to``.
API flows and JSON requests get the Kratos JSON errors instead.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import (
    NO_STORE,
    HttpContext,
    is_json_request,
    read_submission,
    replaced,
    see_other,
)
from sidecar.api.respond import json_response
from sidecar.flows.model import Flow, flow_to_json
from sidecar.flows.outcome import Completed, FlowReplaced, ShowFlow
from sidecar.flows.settings import SettingsFlows
from sidecar.flows.store import parse_flow_id
from sidecar.identity.model import Identity

GetIdentity = Callable[[uuid.UUID], Awaitable[Identity]]


def settings_routes(
    ctx: HttpContext, flows: SettingsFlows, get_identity: GetIdentity, error_flows: ErrorFlows, max_body: int
) -> list[Route]:
    life = flows.life
    login_url = ctx.config.public_base_url + "/self-service/login/browser"

    def as_json(
        flow: Flow, identity: Identity, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        body = {**flow_to_json(flow), "identity": ctx.public_identity(identity)}
        return json_response(body, status, {**NO_STORE, **(headers or {})})

    async def owner(flow: Flow) -> Identity:
        if flow.identity_id is None:  # settings flows are made for an identity, always
            raise errors.InternalError("a settings flow without an identity")
        return await get_identity(flow.identity_id)

    async def browser_error(exc: errors.SidecarError, request: Request, return_to: str) -> Response:
        """A plain browser is sent where it can fix the problem, or to the error page."""
        target = exc.extra.get("redirect_browser_to")
        if isinstance(target, str) and target:
            return see_other(target)
        if isinstance(exc, errors.SessionInactive):
            return see_other(f"{login_url}?{urlencode({'return_to': return_to})}")
        return await error_flows.redirect(exc, request)

    async def init_browser(request: Request) -> Response:
        json_req = is_json_request(request)
        token, is_new = ctx.ensure_csrf(request)
        url = ctx.public_url(request)
        try:
            client = await ctx.client(request, csrf_token=token)
            outcome = await flows.init(
                "browser", client, request_url=url, return_to=request.query_params.get("return_to")
            )
        except errors.SidecarError as exc:
            if json_req:
                raise
            return await browser_error(exc, request, url)
        flow = outcome.flow
        response = as_json(flow, await owner(flow)) if json_req else see_other(life.ui_redirect(flow))
        if is_new:
            ctx.set_csrf_cookie(response, token)
        return response

    async def init_api(request: Request) -> Response:
        client = await ctx.client(request, cookie_session=False)
        outcome = await flows.init("api", client, request_url=ctx.public_url(request))
        return as_json(outcome.flow, await owner(outcome.flow))

    async def fetch(request: Request) -> Response:
        client = await ctx.client(request)
        flow, identity = await flows.fetch(parse_flow_id(request.query_params.get("id")), client)
        return as_json(flow, identity)

    async def submit(request: Request) -> Response:
        json_req = is_json_request(request)
        flow_id = parse_flow_id(request.query_params.get("flow"))
        known = await life.store.get("settings", flow_id) if flow_id else None
        browser = known is not None and known.type == "browser" and not json_req
        body: dict[str, Any] | None = None
        try:
            body = await read_submission(request, max_body)
            submitted = body.get("csrf_token")
            client = await ctx.client(
                request,
                submitted=submitted if isinstance(submitted, str) else None,
                cookie_session=known is None or known.type == "browser",
            )
            outcome = await flows.submit(flow_id, body, client)
            ctx.count_submission("settings", body, outcome, request)
            if isinstance(outcome, FlowReplaced):
                return replaced(outcome, life, json_req)
        except errors.SidecarError as exc:
            ctx.count_submission("settings", body, exc, request)
            if not browser:
                raise
            return await browser_error(exc, request, life.ui_redirect(known) if known else login_url)
        if isinstance(outcome, Completed):
            if browser:
                return see_other(outcome.redirect_to)
            return as_json(outcome.flow, outcome.identity)
        if not isinstance(outcome, ShowFlow):
            raise errors.InternalError(f"unexpected settings outcome: {type(outcome).__name__}")
        if browser:
            return see_other(life.ui_redirect(outcome.flow), outcome.headers)
        return as_json(outcome.flow, await owner(outcome.flow), outcome.status, outcome.headers)

    return [
        Route("/self-service/settings/browser", init_browser, methods=["GET"]),
        Route("/self-service/settings/api", init_api, methods=["GET"]),
        Route("/self-service/settings/flows", fetch, methods=["GET"]),
        Route("/self-service/settings", submit, methods=["GET", "POST"]),
    ]
