"""Logging: JSON lines in production, readable text in ``--dev``; the per-request access log."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from sidecar.config.model import LogConfig

if TYPE_CHECKING:
    from sidecar.metrics import Metrics

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
_STANDARD = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Structured fields passed with ``extra=`` become top-level keys.
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(config: LogConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS[config.level])
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --- access log ---------------------------------------------------------------------------------
#
# Scope keys the handlers fill in for the access log (all optional; plain ``str`` values):
#   scope["sidecar.request_id"]   set here before the app runs; reuse it, never make another one
#   scope["sidecar.path"]         the normalised path the rules matched (else scope["path"] is logged)
#   scope["sidecar.route_class"]  proxy | decision | api | page | health | admin | metrics
#   scope["sidecar.rule"]         id of the access rule that matched
#   scope["sidecar.decision"]     allow | redirect | unauthorized | forbidden | step_up | unavailable
#   scope["sidecar.identity_id"]  the signed-in identity's id
# Never put tokens, cookies, passwords, codes or query strings there: they are written verbatim.

REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID_OK = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")


def new_request_id() -> str:
    return uuid.uuid4().hex


class AccessLog:
    """Raw-ASGI wrapper: one log line and one ``Metrics.request`` per HTTP/WebSocket request.

    The request id is the client's ``X-Request-ID`` when the peer is a trusted proxy (and the
    value is short and plain), else a new one. It is put into the request headers the app sees
    (so the proxy forwards it upstream), into ``scope["sidecar.request_id"]`` and onto the
    response. The line is written after the response has been sent, so it costs the client
    nothing: one dict and one ``json.dumps`` (or one f-string in text mode).
    """

    def __init__(
        self,
        app: Any,
        *,
        listener: str,
        trusted: Callable[[str | None], bool],
        metrics: Metrics | None = None,
        text: bool = False,
        stream: TextIO | None = None,
        enabled: bool = True,
        classify: Callable[[str], str] | None = None,
    ) -> None:
        self.app = app
        self.listener = listener
        self.trusted = trusted
        self.metrics = metrics
        self.text = text
        self.stream = stream
        self.enabled = enabled
        self.classify = classify or (lambda path: listener)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or "sidecar.request_id" in scope:
            # Lifespan, or already wrapped (a second wrapper must not log the request twice).
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self._request_id(scope)
        rid = request_id.encode()
        scope["sidecar.request_id"] = request_id
        state = [0, 0]  # status, body bytes

        async def send_wrapper(message: Any) -> None:
            mtype = message["type"]
            if mtype == "http.response.body":
                state[1] += len(message.get("body", b""))
            elif mtype in ("http.response.start", "websocket.http.response.start"):
                state[0] = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k.lower() == REQUEST_ID_HEADER for k, _ in headers):
                    headers.append((REQUEST_ID_HEADER, rid))
                message = {**message, "headers": headers}
            elif mtype == "websocket.accept":
                state[0] = 101
            elif mtype == "websocket.close" and not state[0]:
                state[0] = 403  # closed before the handshake completed: uvicorn answers 403
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            state[0] = state[0] or 500
            raise
        finally:
            self._finish(scope, state[0], state[1], time.perf_counter() - started, request_id)

    def _request_id(self, scope: Any) -> str:
        headers = scope["headers"]
        incoming = None
        for name, value in headers:
            if name == REQUEST_ID_HEADER:  # ASGI servers give lower-case names
                incoming = value
                break
        client = scope.get("client")
        if incoming is not None:
            if _REQUEST_ID_OK.fullmatch(incoming) and self.trusted(client[0] if client else None):
                return str(incoming.decode("ascii"))
            # An untrusted client's id must not reach the upstream or our logs as if it were ours.
            headers = [(k, v) for k, v in headers if k != REQUEST_ID_HEADER]
        request_id = new_request_id()
        scope["headers"] = [*headers, (REQUEST_ID_HEADER, request_id.encode())]
        return request_id

    def _finish(self, scope: Any, status: int, size: int, seconds: float, request_id: str) -> None:
        path = scope.get("sidecar.path") or scope["path"]
        route_class = scope.get("sidecar.route_class") or self.classify(path)
        if self.metrics is not None:
            self.metrics.request(route_class, status)
        if not self.enabled:
            return
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        ms = round(seconds * 1000, 3)
        rule = scope.get("sidecar.rule")
        decision = scope.get("sidecar.decision")
        identity = scope.get("sidecar.identity_id")
        if self.text:
            extra = "".join(
                f" {k}={v}" for k, v in (("rule", rule), ("decision", decision), ("identity", identity)) if v
            )
            line = f"{method} {path} {status} {ms}ms {size}B rid={request_id}{extra}\n"
        else:
            client = scope.get("client")
            entry = {
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "level": "info",
                "logger": "sidecar.access",
                "msg": "request",
                "listener": self.listener,
                "request_id": request_id,
                "method": method,
                "path": path,
                "route_class": route_class,
                "status": status,
                "latency_ms": ms,
                "bytes": size,
                "client": client[0] if client else None,
                "rule": rule,
                "decision": decision,
                "identity_id": identity,
            }
            line = json.dumps(entry, default=str, separators=(",", ":")) + "\n"
        stream = self.stream or sys.stderr
        # A closed or broken log pipe must not fail requests.
        with contextlib.suppress(OSError, ValueError):
            stream.write(line)


def public_route_classifier(prefix: str) -> Callable[[str], str]:
    """Route class from the path alone, for requests whose handler did not name one."""
    api = prefix + "/" if prefix else None
    authz = (prefix + "/authz/", prefix + "/decisions/")
    health = (prefix + "/health/",)

    def classify(path: str) -> str:
        if path.startswith(authz):
            return "decision"
        if path.startswith(health):
            return "health"
        if api is None or path.startswith(api) or path == prefix:
            return "api"
        return "proxy"

    return classify


def admin_route_classifier(path: str) -> str:
    if path == "/metrics":
        return "metrics"
    if path.startswith(("/health/", "/admin/health/")):
        return "health"
    return "admin"
