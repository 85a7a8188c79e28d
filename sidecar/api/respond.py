"""The one boundary where errors become HTTP: Kratos JSON envelopes, pages, or redirects."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sidecar import errors

log = logging.getLogger("sidecar.api")

_HTTP_STATUS_ERRORS: dict[int, type[errors.SidecarError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def request_id(request: Request) -> str:
    rid = request.scope.get("sidecar.request_id")
    if not rid:
        rid = request.headers.get("x-request-id") or str(uuid.uuid4())
        request.scope["sidecar.request_id"] = rid
    return str(rid)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":"), default=str),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error_response(exc: errors.SidecarError, request: Request | None = None) -> Response:
    rid = request_id(request) if request is not None else None
    headers = {"Cache-Control": "private, no-cache, no-store, must-revalidate", **exc.headers}
    return JSONResponse(exc.to_dict(rid), status_code=exc.code, headers=headers)


async def handle_sidecar_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, errors.SidecarError):  # registered for SidecarError only
        return await handle_unexpected(request, exc)
    if exc.code >= 500:
        # A store outage is logged once by the store monitor; one warning per request would bury it.
        level = logging.DEBUG if isinstance(exc, errors.ServiceUnavailable) else logging.WARNING
        log.log(
            level, "request failed: %s %s -> %s %s", request.method, request.url.path, exc.code, exc.message
        )
    return error_response(exc, request)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        return await handle_unexpected(request, exc)
    cls = _HTTP_STATUS_ERRORS.get(exc.status_code, errors.SidecarError)
    err = cls(exc.detail if isinstance(exc.detail, str) and exc.detail else None)
    if cls is errors.SidecarError:
        err.code = exc.status_code  # type: ignore[misc]
    return error_response(err, request)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(errors.InternalError(), request)


EXCEPTION_HANDLERS: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
    errors.SidecarError: handle_sidecar_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
