"""Admin recovery: ``POST /admin/recovery/link`` (200) and ``POST /admin/recovery/code`` (201)
(kratos-api.md §2, §11.7).

Nothing is mailed: the admin gets the link (and code) to hand over. ``expires_in`` (Go duration,
e.g. ``1h``) defaults to the method's ``lifespan``. The link opens the submit URL with a GET, which
binds the flow to the browser that opens it first (see ``sidecar.flows.challenge_flow``); for a code
flow it then shows the code form.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.body import read_json
from sidecar.api.respond import json_response
from sidecar.config.durations import parse_duration
from sidecar.flows.model import FlowType
from sidecar.flows.recovery import AdminRecovery
from sidecar.identity.model import Identity


class AdminRecoveryFlows(Protocol):
    """The part of ``sidecar.flows.recovery.RecoveryFlows`` the admin API uses."""

    async def create_for_admin(
        self, identity: Identity, *, kind: str, flow_type: FlowType, expires_in: timedelta | None
    ) -> AdminRecovery: ...


NO_STORE = {"Cache-Control": "private, no-cache, no-store, must-revalidate"}
MAX_EXPIRES_IN = timedelta(days=365)
"""Beyond this a link is no one-time secret any more (and past a few thousand years, no date)."""


def _time(value: Any) -> str:
    return str(value.isoformat().replace("+00:00", "Z"))


def admin_recovery_routes(
    recovery: AdminRecoveryFlows | None,
    find_identity: Callable[[uuid.UUID], Awaitable[Identity | None]],
    public_base_url: str,
    max_body: int,
) -> list[Route]:

    async def parse(request: Request) -> tuple[uuid.UUID, Any]:
        body = await read_json(request, max_body)
        if not isinstance(body, dict):
            raise errors.BadRequest("the request body must be a JSON object")
        raw_id = body.get("identity_id")
        try:
            identity_id = uuid.UUID(raw_id) if isinstance(raw_id, str) else None
        except ValueError:
            identity_id = None
        if identity_id is None:
            raise errors.BadRequest("identity_id must be the UUID of an identity")
        expires_in = None
        raw = body.get("expires_in")
        if raw not in (None, ""):
            try:
                expires_in = parse_duration(raw) if isinstance(raw, str) else None
            except ValueError:
                expires_in = None
            if expires_in is None or not timedelta(0) < expires_in <= MAX_EXPIRES_IN:
                raise errors.BadRequest(
                    "expires_in must be a positive duration of at most 365 days, such as 15m or 1h"
                )
        return identity_id, (expires_in, body)

    async def create(request: Request, kind: str) -> tuple[Any, FlowType]:
        if recovery is None:
            raise errors.BadRequest("Recovery is not available.")
        identity_id, (expires_in, body) = await parse(request)
        raw_type = body.get("flow_type") or "browser"
        if raw_type not in ("browser", "api"):
            raise errors.BadRequest("flow_type must be browser or api")
        flow_type: FlowType = "api" if raw_type == "api" else "browser"
        identity = await find_identity(identity_id)
        if identity is None:
            raise errors.NotFound("Unable to locate the resource")
        made = await recovery.create_for_admin(
            identity, kind=kind, flow_type=flow_type, expires_in=expires_in
        )
        return made, flow_type

    async def link(request: Request) -> Response:
        made, _ = await create(request, "link")
        query = urlencode({"flow": str(made.flow.id), "token": made.secret})
        body = {
            "recovery_link": f"{public_base_url}/self-service/recovery?{query}",
            "expires_at": _time(made.expires_at),
        }
        return json_response(body, 200, NO_STORE)

    async def code(request: Request) -> Response:
        made, _ = await create(request, "code")
        body = {
            "recovery_link": f"{public_base_url}/self-service/recovery?flow={made.flow.id}",
            "recovery_code": made.secret,
            "expires_at": _time(made.expires_at),
        }
        return json_response(body, 201, NO_STORE)

    async def link_endpoint(request: Request) -> Response:
        return await link(request)

    async def code_endpoint(request: Request) -> Response:
        return await code(request)

    return [
        Route("/recovery/link", link_endpoint, methods=["POST"]),
        Route("/recovery/code", code_endpoint, methods=["POST"]),
    ]
