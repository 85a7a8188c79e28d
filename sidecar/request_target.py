"""The request-target rules both HTTP servers enforce before any app sees a request.

``sidecar.http_protocol`` applies them inside uvicorn's parser; ``RequestTargetGuard`` applies
them as the outermost ASGI layer for servers whose parser we do not own (granian). Refused:

- a request line longer than ``serve.<listener>.max_request_line_size``: 414;
- a path that is not UTF-8 after one percent-decode (``%C0%AF``, ``%FF``): 400. Lenient decoders
  downstream turn such bytes into ``/`` or U+FFFD, so two readers would disagree on the path;
- (uvicorn only) a raw ``#`` in the target: 400. granian's parser (hyper, the ``http`` crate)
  drops a fragment before the app runs, leaving no trace of it in the scope: see docs/CONFIG.md
  at ``serve.public.server``.

Answers carry ``connection: close``: the server closes the connection after them, so a request
pipelined behind a refused one is never read.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote_to_bytes

log = logging.getLogger("sidecar.http")

REASONS = {400: b"Bad Request", 414: b"URI Too Long"}


def target_problem(target: bytes) -> str | None:
    """Why a complete request target (path and query) is refused, or None."""
    if target.find(b"#") != -1:  # not ``in`` (sidecar.proxy.paths.normalise_path)
        return "a '#' in the request target"
    path = target.split(b"?", 1)[0]
    if path.find(b"%") != -1:
        try:
            unquote_to_bytes(path).decode("utf-8")
        except UnicodeDecodeError:
            return "the path is not UTF-8 after percent-decoding"
    return None


def log_refusal(status: int, reason: str) -> None:
    # The reason only: the target itself is attacker-chosen and stays out of the log.
    log.warning("request refused before routing: %d %s", status, reason)


class RequestTargetGuard:
    """ASGI: refuse over-long and non-UTF-8 targets with 414 / 400 before ``app`` runs.

    The request line is rebuilt from the scope as ``METHOD SP target SP HTTP/1.1 CRLF``, the
    same count ``sidecar.http_protocol`` makes from the bytes it parsed.
    """

    def __init__(self, app: Any, max_request_line: int) -> None:
        self.app = app
        self.max_request_line = max_request_line

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raw: bytes = scope.get("raw_path") or b""
        query: bytes = scope.get("query_string") or b""
        length = len(scope.get("method", "GET")) + len(raw) + (len(query) + 1 if query else 0) + 12
        if length > self.max_request_line:
            await self._refuse(scope, send, 414, f"request line longer than {self.max_request_line} bytes")
            return
        if b"%" in raw:
            problem = target_problem(raw)
            if problem is not None:
                await self._refuse(scope, send, 400, problem)
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(scope: Any, send: Any, status: int, reason: str) -> None:
        log_refusal(status, reason)
        body = reason.encode("ascii")
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close", "code": 1008})
