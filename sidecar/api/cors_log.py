"""``serve.public.cors.debug``: one log line per cross-origin request, as Kratos' CORS debug
logging (rs/cors ``Debug``) prints, so an operator can see why a browser was refused."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("sidecar.cors")


class CorsDebugLog:
    """Raw-ASGI wrapper around the CORS middleware: reads the request's ``Origin`` and the
    answer's ``Access-Control-Allow-Origin`` and logs the decision; requests without an
    ``Origin`` pass untouched."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        preflight = scope["method"] == "OPTIONS" and b"access-control-request-method" in headers

        async def logged(message: Any) -> None:
            if message["type"] == "http.response.start":
                answer = dict(message.get("headers", ()))
                allowed = answer.get(b"access-control-allow-origin")
                log.info(
                    "CORS %s %s from origin %r: %s",
                    "preflight for" if preflight else "request",
                    scope["path"],
                    origin.decode("latin-1"),
                    "allowed" if allowed else f"not allowed (status {message['status']})",
                )
            await send(message)

        await self.app(scope, receive, logged)
