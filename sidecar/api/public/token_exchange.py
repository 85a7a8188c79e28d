"""``GET /sessions/token-exchange`` (Kratos ``session/handler.go`` ``exchangeCode``): a native app
trades the ``init_code`` of its API flow and the ``return_to_code`` its browser came back with for
the session and its token, once (``sidecar.session.token_exchange``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.flow_http import NO_STORE, HttpContext
from sidecar.api.respond import json_response
from sidecar.identity.model import Identity, utcnow
from sidecar.session.session_json import session_to_json
from sidecar.session.token_exchange import TokenExchanges

GetIdentity = Callable[[uuid.UUID], Awaitable[Identity]]
NO_SESSION = 'no session yet for this "code"'


def token_exchange_routes(
    ctx: HttpContext, exchanges: TokenExchanges, get_identity: GetIdentity
) -> list[Route]:
    async def exchange(request: Request) -> Response:
        init_code = request.query_params.get("init_code") or ""
        return_to_code = request.query_params.get("return_to_code") or ""
        if not init_code or not return_to_code:
            raise errors.BadRequest(reason='"init_code" and "return_to_code" query params must be set')
        found = await exchanges.exchange(init_code, return_to_code)
        session = await ctx.sessions.get(found.session_id) if found is not None else None
        if found is None or session is None or not session.is_valid(utcnow()):
            raise errors.NotFound(reason=NO_SESSION, headers=NO_STORE)
        try:
            identity = await get_identity(session.identity_id)
        except errors.NotFound:
            raise errors.NotFound(reason=NO_SESSION, headers=NO_STORE) from None
        body = {
            "session": session_to_json(session, ctx.public_identity(identity)),
            "session_token": found.token,
        }
        return json_response(body, headers=NO_STORE)

    return [Route("/sessions/token-exchange", exchange, methods=["GET"])]
