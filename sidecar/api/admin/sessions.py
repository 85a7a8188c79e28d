"""Admin session endpoints (kratos-api.md §2): list, get, disable, extend, per identity.

Routes are given without ``/admin``; ``sidecar.api.admin.routes`` mounts them with and without it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.origin import RequestAudit
from sidecar.api.pagination import PageTokens, link_header, parse_page_size, parse_uuid
from sidecar.api.respond import json_response
from sidecar.identity.model import Identity
from sidecar.session.manager import SessionManager
from sidecar.session.model import Session
from sidecar.session.session_json import session_to_json

FindIdentity = Callable[[uuid.UUID], Awaitable[Identity | None]]
IdentityJson = Callable[[Identity], dict[str, Any]]
NO_STORE = {"Cache-Control": "private, no-cache, no-store, must-revalidate"}


def _active(raw: str | None) -> bool | None:
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise errors.BadRequest(f"active must be true or false, got {raw[:16]!r}")


def admin_session_routes(
    sessions: SessionManager,
    find_identity: FindIdentity,
    identity_json: IdentityJson,
    tokens: PageTokens,
    base: str,
    audit: RequestAudit,
    faster_extend: bool = False,
) -> list[Route]:
    """``identity_json``: the admin view of an identity; ``base``: the admin base URL (Link header);
    ``faster_extend``: Kratos' ``feature_flags.faster_session_extend`` (extend answers 204, no body)."""

    async def render(session: Session, expand: list[str]) -> dict[str, Any]:
        identity = None
        if "identity" in expand:
            found = await find_identity(session.identity_id)
            if found is not None:
                identity = identity_json(found)
        return session_to_json(session, identity, include_devices="devices" in expand)

    async def list_all(request: Request) -> Response:
        q = request.query_params
        size = parse_page_size(q.get("page_size"), default=250, maximum=1000)
        after = tokens.open(q["page_token"]) if q.get("page_token") else None
        active = _active(q.get("active"))
        found = await sessions.list_all(page_size=size + 1, after=after, active=active)
        page = found[:size]
        next_token = tokens.seal(page[-1].id) if len(found) > size else None
        params = {"active": q["active"]} if q.get("active") else {}
        expand = q.getlist("expand")
        body = [await render(s, expand) for s in page]
        headers = {**NO_STORE, "Link": link_header(f"{base}/admin/sessions", params, size, next_token)}
        return json_response(body, headers=headers)

    async def load(request: Request) -> Session:
        session = await sessions.get(parse_uuid(request.path_params["id"]))
        if session is None:
            raise errors.NotFound("Unable to locate the resource")
        return session

    async def get_one(request: Request) -> Response:
        session = await load(request)
        return json_response(await render(session, request.query_params.getlist("expand")), headers=NO_STORE)

    async def disable(request: Request) -> Response:
        session = await load(request)
        await sessions.revoke(session)
        audit.emit(
            "session.revoked",
            request,
            identity_id=session.identity_id,
            actor="admin_api",
            session_id=session.id,
            count=1,
        )
        return Response(status_code=204)

    async def extend(request: Request) -> Response:
        session = await sessions.extend(parse_uuid(request.path_params["id"]))
        if session is None:
            raise errors.NotFound("Unable to locate the resource")
        if faster_extend:
            return Response(status_code=204)
        return json_response(await render(session, ["identity", "devices"]), headers=NO_STORE)

    async def identity_id(request: Request) -> uuid.UUID:
        value = parse_uuid(request.path_params["id"])
        if await find_identity(value) is None:
            raise errors.NotFound("Unable to locate the resource")
        return value

    async def list_for_identity(request: Request) -> Response:
        owner = await identity_id(request)
        q = request.query_params
        active = _active(q.get("active"))
        size = parse_page_size(q.get("page_size"), default=250, maximum=1000)
        found = sorted(await sessions.list_for_identity(owner), key=lambda s: s.id.hex)
        if active is not None:
            found = [s for s in found if s.active == active]
        if q.get("page_token"):
            after = tokens.open(q["page_token"])
            found = [s for s in found if s.id.hex > after.hex]
        page = found[:size]
        next_token = tokens.seal(page[-1].id) if len(found) > size else None
        expand = q.getlist("expand") or ["identity"]
        body = [await render(s, expand) for s in page]
        path = f"{base}/admin/identities/{owner}/sessions"
        return json_response(body, headers={**NO_STORE, "Link": link_header(path, {}, size, next_token)})

    async def delete_for_identity(request: Request) -> Response:
        owner = await identity_id(request)
        await sessions.delete_for_identity(owner)
        audit.emit("session.revoked", request, identity_id=owner, actor="admin_api")
        return Response(status_code=204)

    return [
        Route("/sessions", list_all, methods=["GET"]),
        Route("/sessions/{id}", get_one, methods=["GET"]),
        Route("/sessions/{id}", disable, methods=["DELETE"]),
        Route("/sessions/{id}/extend", extend, methods=["PATCH"]),
        Route("/identities/{id}/sessions", list_for_identity, methods=["GET"]),
        Route("/identities/{id}/sessions", delete_for_identity, methods=["DELETE"]),
    ]
