"""Init / fetch / submit endpoints shared by the login and registration flows (kratos-api.md §1.1-1.2).

Plain browsers get 303s (to the UI, to ``return_to``, or to the error UI); API flows and JSON-req
get JSON. Both GET and POST are registered for submit, as Kratos does.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import (
    NO_STORE,
    HttpContext,
    flow_json,
    is_json_request,
    read_submission,
    replaced,
    see_other,
    show_flow,
)
from sidecar.api.respond import json_response
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.model import Flow, FlowType, flow_to_json
from sidecar.flows.outcome import AlreadySignedIn, Client, Completed, FlowReplaced, Outcome, ShowFlow
from sidecar.flows.store import parse_flow_id
from sidecar.session.token_exchange import FLOW_MARK, TokenExchanges


class FlowManager(Protocol):
    @property
    def life(self) -> FlowLifecycle: ...

    async def fetch(self, flow_id: uuid.UUID | None, client: Client) -> Flow: ...

    async def submit(self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client) -> Outcome: ...


InitFn = Callable[[FlowType, Client, str, Mapping[str, str]], Awaitable[ShowFlow | AlreadySignedIn]]
CompleteFn = Callable[[Completed, bool], Response]


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


def flow_routes(
    ctx: HttpContext,
    flows: FlowManager,
    init: InitFn,
    complete: CompleteFn,
    error_flows: ErrorFlows,
    max_body: int,
    exchanges: TokenExchanges | None = None,
) -> list[Route]:
    """``exchanges``: login and registration, whose API flows may ask for a session-token
    exchange code (native social sign-in)."""
    life = flows.life
    kind = life.kind

    async def as_browser_error(exc: errors.SidecarError, request: Request, json_req: bool) -> Response:
        if json_req:
            raise exc
        target = exc.extra.get("redirect_browser_to")
        if isinstance(exc, errors.BrowserLocationChangeRequired) and isinstance(target, str):
            return see_other(target)  # e.g. social sign-in: off to the provider
        return await error_flows.redirect(exc, request)

    async def init_browser(request: Request) -> Response:
        json_req = is_json_request(request)
        token, is_new = ctx.ensure_csrf(request)
        try:
            client = await ctx.client(request, csrf_token=token)
            outcome = await init("browser", client, ctx.public_url(request), request.query_params)
        except errors.SidecarError as exc:
            return await as_browser_error(exc, request, json_req)
        if isinstance(outcome, AlreadySignedIn):
            if json_req:
                raise errors.SessionAlreadyAvailable()
            return see_other(outcome.redirect_to)
        response = show_flow(outcome, life, json_req)
        if is_new:
            ctx.set_csrf_cookie(response, token)
        return response

    async def init_api(request: Request) -> Response:
        # Kratos reads the parameter in login and registration only; other flows ignore it.
        wants_code = truthy(request.query_params.get("return_session_token_exchange_code"))
        client = await ctx.client(request, cookie_session=False)
        outcome = await init("api", client, ctx.public_url(request), request.query_params)
        if isinstance(outcome, AlreadySignedIn):
            raise errors.SessionAlreadyAvailable()
        if not wants_code or exchanges is None:
            return flow_json(outcome.flow)
        # Kratos (login/handler.go, registration/handler.go): the init code, on creation only.
        flow = outcome.flow
        flow.internal[FLOW_MARK] = True
        await life.store.save(flow)
        body = flow_to_json(flow)
        body["session_token_exchange_code"] = await exchanges.create(flow.id)
        return json_response(body, 200, NO_STORE)

    async def fetch(request: Request) -> Response:
        client = await ctx.client(request)
        flow = await flows.fetch(parse_flow_id(request.query_params.get("id")), client)
        return flow_json(flow)

    async def submit(request: Request) -> Response:
        json_req = is_json_request(request)
        flow_id = parse_flow_id(request.query_params.get("flow"))
        body: dict[str, Any] | None = None
        try:
            body = await read_submission(request, max_body)
            submitted = body.get("csrf_token")
            client = await ctx.client(request, submitted=submitted if isinstance(submitted, str) else None)
            outcome = await flows.submit(flow_id, body, client)
            ctx.count_submission(kind, body, outcome, request)
            if isinstance(outcome, FlowReplaced):
                return replaced(outcome, life, json_req)
        except errors.SidecarError as exc:
            ctx.count_submission(kind, body, exc, request)
            # API flows answer in JSON whatever the client accepts; only browsers go to the error UI.
            known = await life.store.get(kind, flow_id) if flow_id and not json_req else None
            return await as_browser_error(
                exc, request, json_req or (known is not None and known.type == "api")
            )
        if isinstance(outcome, ShowFlow):
            return show_flow(outcome, life, json_req)
        if isinstance(outcome, AlreadySignedIn):
            if json_req or (client.session_token and request.headers.get("x-session-token")):
                raise errors.SessionAlreadyAvailable()
            return see_other(outcome.redirect_to)
        return complete(outcome, json_req)

    return [
        Route(f"/self-service/{kind}/browser", init_browser, methods=["GET"]),
        Route(f"/self-service/{kind}/api", init_api, methods=["GET"]),
        Route(f"/self-service/{kind}/flows", fetch, methods=["GET"]),
        Route(f"/self-service/{kind}", submit, methods=["GET", "POST"]),
    ]
