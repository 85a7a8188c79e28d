"""``GET``/``HEAD /sessions/whoami`` on the raw-ASGI path, ahead of the Starlette app (issue 21).

The answer is ``sidecar.session.whoami.Whoami``'s, shared with the Starlette route, which still
serves what this leaves to it: other methods, ``tokenize_as``, and cross-origin calls when CORS is
on (the CORS middleware wraps the Starlette app, not this). Everything else about the request is
read straight from the ASGI scope: no ``Request`` object, no middleware (STYLE §4). ``answer_cached``
gives the same answer without I/O when the session is in the resolver's cache, for the HTTP
protocol's synchronous answers (``sidecar.http_protocol``).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl

from starlette.types import Scope, Send

from sidecar import errors, waiting
from sidecar.proxy.headers import parse_cookie
from sidecar.proxy.responses import JSON, NO_STORE, Answer, error_response, response, send_answer
from sidecar.session.whoami import Whoami, WhoamiAnswer

PATH = b"/sessions/whoami"
_IDENTITY_HEADER = b"x-kratos-authenticated-identity-id"


def presented_token(headers: list[tuple[bytes, bytes]], cookie_name: bytes) -> tuple[str | None, bool]:
    """(the token, whether an ``Origin`` header came along), in Kratos' order: ``X-Session-Token``,
    then the session cookie, then ``Authorization: Bearer`` (as ``HttpContext.presented_token``)."""
    session_token = cookie = bearer = None
    origin = False
    for name, value in headers:
        n = name.lower()
        if n == b"x-session-token":
            if session_token is None:
                session_token = value
        elif n == b"cookie":
            if cookie is None:
                cookie = parse_cookie(value, cookie_name)
        elif n == b"authorization":
            if bearer is None:
                scheme, _, rest = value.partition(b" ")
                bearer = rest.strip() if scheme.lower() == b"bearer" else b""
        elif n == b"origin":
            origin = True
    raw = session_token or cookie or bearer
    return (raw.decode("latin-1") if raw else None), origin


def _wants_tokenized(query: bytes) -> bool:
    return b"tokenize_as" in query and any(
        k == "tokenize_as" and v for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    )


class WhoamiEndpoint:
    def __init__(self, whoami: Whoami, cookie_name: str, *, cors: bool) -> None:
        """``cors``: ``serve.public.cors.enabled``; then a request with ``Origin`` is the Starlette app's."""
        self.whoami = whoami
        self.cookie_name = cookie_name.encode()
        self.cors = cors

    async def handle(self, sub: bytes, scope: Scope, send: Send) -> bool:
        """Answer ``scope`` when it is a whoami this endpoint serves; False to pass it on."""
        token = self._asked(sub, scope)
        if token is False:
            return False
        try:
            answer: WhoamiAnswer | errors.SidecarError = await self.whoami.answer(token)
        except errors.SidecarError as exc:
            answer = exc
        await send_answer(send, self._render(answer, scope))
        return True

    def answer_cached(
        self, sub: bytes, scope: Scope, later: bool = False
    ) -> Answer | waiting.Later[Answer] | None:
        """``handle``'s answer when it needs no I/O (the session cached, or no token); None for a
        request ``handle`` would pass on or one that needs the session store. With ``later``, one
        that needs the session store is a ``Later`` instead (``sidecar.waiting``): made once the
        session's load has settled, ``handle``'s answer, for the HTTP protocol to write without
        ASGI (``sidecar.http_protocol``)."""
        token = self._asked(sub, scope)
        if token is False:
            return None
        try:
            answer = self.whoami.answer_cached(token, later)
        except errors.SidecarError as exc:
            return self._render(exc, scope)
        if answer is None:
            return None
        if isinstance(answer, WhoamiAnswer):
            return self._render(answer, scope)
        made = answer.make

        def make() -> Answer:
            try:
                found: WhoamiAnswer | errors.SidecarError = made()
            except errors.SidecarError as exc:
                found = exc
            return self._render(found, scope)

        return waiting.wrapped(answer, make)

    def _asked(self, sub: bytes, scope: Scope) -> str | Literal[False] | None:
        """The presented token (None: none) when this endpoint serves the request, else False."""
        if sub != PATH:
            return False
        method = scope["method"]
        if method != "GET" and method != "HEAD":
            return False
        query: bytes = scope.get("query_string", b"")
        if query and _wants_tokenized(query):
            return False
        token, origin = presented_token(scope["headers"], self.cookie_name)
        if origin and self.cors:
            return False
        return token

    @staticmethod
    def _render(answer: WhoamiAnswer | errors.SidecarError, scope: Scope) -> Answer:
        """The answer's bytes; records the identity for the access log."""
        head = scope["method"] == "HEAD"
        if isinstance(answer, errors.SidecarError):
            extra = [
                (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in answer.headers.items()
                if k.lower() != "cache-control"
            ]
            return error_response(answer, request_id=scope.get("sidecar.request_id"), extra=extra, head=head)
        scope["sidecar.identity_id"] = answer.identity_id
        headers = [JSON, NO_STORE, (_IDENTITY_HEADER, answer.identity_id.encode())]
        return response(200, headers, answer.body, head=head)
