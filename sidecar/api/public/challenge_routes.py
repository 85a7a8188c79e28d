"""Routes shared by ``/self-service/recovery/*`` and ``/self-service/verification/*``.

Init and fetch are the common flow routes. Submit differs: a GET on the submit URL is how mail
links land (``?flow=&token=`` or ``?flow=&code=``) and how an admin recovery link is opened, so it
makes sure the browser has a CSRF cookie (the flow is bound to it) and never asks for a CSRF token.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import (
    HttpContext,
    is_json_request,
    read_submission,
    replaced,
    see_other,
    show_flow,
)
from sidecar.api.public.flow_routes import CompleteFn, InitFn, flow_routes
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.model import Flow
from sidecar.flows.outcome import AlreadySignedIn, Client, FlowReplaced, Outcome, ShowFlow
from sidecar.flows.store import parse_flow_id


class ChallengeManager(Protocol):
    @property
    def life(self) -> FlowLifecycle: ...

    async def fetch(self, flow_id: uuid.UUID | None, client: Client) -> Flow: ...

    async def submit(
        self, flow_id: uuid.UUID | None, body: Mapping[str, Any], client: Client, *, landing: bool = False
    ) -> Outcome: ...


def challenge_routes(
    ctx: HttpContext,
    flows: ChallengeManager,
    init: InitFn,
    complete: CompleteFn,
    error_flows: ErrorFlows,
    max_body: int,
) -> list[Route]:
    life = flows.life
    kind = life.kind
    submit_path = f"/self-service/{kind}"

    async def submit(request: Request) -> Response:
        json_req = is_json_request(request)
        flow_id = parse_flow_id(request.query_params.get("flow"))
        landing = request.method == "GET"
        token, is_new = ctx.ensure_csrf(request) if landing else (None, False)
        body: dict[str, Any] | None = None
        try:
            body = await read_submission(request, max_body)
            submitted = body.get("csrf_token")
            client = await ctx.client(
                request, csrf_token=token, submitted=submitted if isinstance(submitted, str) else None
            )
            outcome = await flows.submit(flow_id, body, client, landing=landing)
            ctx.count_submission(kind, body, outcome, request)
            if isinstance(outcome, FlowReplaced):
                response = replaced(outcome, life, json_req)
            elif isinstance(outcome, ShowFlow) and landing and not json_req:
                # A mail link opened in a browser shows the page, even for a flow an app started.
                response = see_other(life.ui_redirect(outcome.flow))
            elif isinstance(outcome, ShowFlow):
                response = show_flow(outcome, life, json_req)
            elif isinstance(outcome, AlreadySignedIn):
                if json_req:
                    raise errors.SessionAlreadyAvailable()
                response = see_other(outcome.redirect_to)
            else:
                response = complete(outcome, json_req)
        except errors.SidecarError as exc:
            ctx.count_submission(kind, body, exc, request)
            # API flows answer in JSON whatever the client accepts; only browsers go to the error UI.
            known = await life.store.get(kind, flow_id) if flow_id and not json_req else None
            if json_req or (known is not None and known.type == "api"):
                raise
            response = await error_flows.redirect(exc, request)
        if is_new and token is not None:
            ctx.set_csrf_cookie(response, token)
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    routes = [
        r for r in flow_routes(ctx, flows, init, complete, error_flows, max_body) if r.path != submit_path
    ]
    return [*routes, Route(submit_path, submit, methods=["GET", "POST"])]
