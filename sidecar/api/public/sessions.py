"""``/sessions/whoami`` and the caller's own sessions (kratos-api.md §1.6)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.pagination import PageTokens, link_header, parse_page_size, parse_uuid
from sidecar.api.public.flow_http import NO_STORE, HttpContext
from sidecar.api.respond import json_response
from sidecar.identity.model import Identity
from sidecar.session.model import Session
from sidecar.session.session_json import session_to_json
from sidecar.session.tokenizer import SessionTokenizer
from sidecar.session.whoami import Whoami

GetIdentity = Callable[[uuid.UUID], Awaitable[Identity]]


def session_routes(
    ctx: HttpContext,
    whoami: Whoami,
    get_identity: GetIdentity,
    tokens: PageTokens,
    tokenizer: SessionTokenizer,
) -> list[Route]:
    """Reads (whoami, the caller's sessions) resolve the caller through the proxy's session cache;
    the calls that revoke sessions read the caller's session from the store. ``GET``/``HEAD``
    whoami is normally answered before this app (``sidecar.proxy.whoami``), the same way."""
    config = ctx.config

    async def require(request: Request) -> tuple[Session, Identity]:
        session, _ = await ctx.current_session(request)
        if session is None:
            raise errors.SessionInactive(headers=NO_STORE)
        try:
            identity = await get_identity(session.identity_id)
        except errors.NotFound:
            raise errors.SessionInactive(headers=NO_STORE) from None
        if identity.state != "active":
            raise errors.SessionInactive(headers=NO_STORE)
        return session, identity

    async def whoami_route(request: Request) -> Response:
        answer = await whoami.answer(ctx.presented_token(request))
        headers = {**NO_STORE, "X-Kratos-Authenticated-Identity-Id": answer.identity_id}
        if request.method == "HEAD":
            return Response(status_code=200, headers=headers)
        template = request.query_params.get("tokenize_as")
        if template:
            # Kratos session/handler.go: the session as a JWT, under "tokenized".
            body = json.loads(answer.body)
            body["tokenized"] = await tokenizer.tokenize(template, body)
            return json_response(body, headers=headers)
        return Response(answer.body, media_type="application/json", headers=headers)

    async def list_mine(request: Request) -> Response:
        caller = await whoami.current(ctx.presented_token(request))
        q = request.query_params
        size = parse_page_size(q.get("page_size") or q.get("per_page"), default=250, maximum=1000)
        after = tokens.open(q["page_token"]) if q.get("page_token") else None
        others = sorted(
            (
                s
                for s in await ctx.sessions.list_for_identity(caller.identity_id, active_only=True)
                if s.id != caller.session_id
            ),
            key=lambda s: s.id.hex,
        )
        if after is not None:
            others = [s for s in others if s.id.hex > after.hex]
        page = others[:size]
        next_token = tokens.seal(page[-1].id) if len(others) > size else None
        headers = {
            **NO_STORE,
            "Link": link_header(f"{config.public_base_url}/sessions", {}, size, next_token),
        }
        return json_response([session_to_json(s, None) for s in page], headers=headers)

    async def revoke_others(request: Request) -> Response:
        session, _ = await require(request)
        count = await ctx.sessions.revoke_others(session.identity_id, except_id=session.id)
        ctx.audit.emit(
            "session.revoked", ctx.origin(request), identity_id=session.identity_id, actor="self", count=count
        )
        return json_response({"count": count}, headers=NO_STORE)

    async def revoke_one(request: Request) -> Response:
        session, _ = await require(request)
        target_id = parse_uuid(request.path_params["id"])
        if target_id == session.id:
            raise errors.BadRequest(
                "You can not revoke the current session using this endpoint, use logout instead.",
                reason="the current session cannot be revoked here",
            )
        target = await ctx.sessions.get(target_id)
        if target is None or target.identity_id != session.identity_id:
            raise errors.NotFound("Unable to locate the resource")
        await ctx.sessions.revoke(target)
        ctx.audit.emit(
            "session.revoked",
            ctx.origin(request),
            identity_id=session.identity_id,
            actor="self",
            session_id=target.id,
            count=1,
        )
        return Response(status_code=204, headers=NO_STORE)

    return [
        Route("/sessions/whoami", whoami_route, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
        Route("/sessions", list_mine, methods=["GET"]),
        Route("/sessions", revoke_others, methods=["DELETE"]),
        Route("/sessions/{id}", revoke_one, methods=["DELETE"]),
    ]
