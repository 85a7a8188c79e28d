"""Raw-ASGI answers for the hot path: Kratos JSON errors, the 403 page, redirects.

``sidecar.api.respond`` renders errors for the Starlette apps; this is its byte-level twin for
the proxy and decision endpoints, which have no ``Request`` object (STYLE §4). Both use
``SidecarError.to_dict`` so the JSON is the same.
"""

from __future__ import annotations

import json
import uuid

from starlette.types import Send

from sidecar import errors

NO_STORE = (b"cache-control", b"private, no-cache, no-store, must-revalidate")
JSON = (b"content-type", b"application/json")
HTML = (b"content-type", b"text/html; charset=utf-8")
WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="sidecar"')

FORBIDDEN_PAGE = (
    b"<!doctype html><html><head><meta charset=utf-8><title>Access denied</title></head>"
    b"<body><h1>Access denied</h1><p>You are signed in, but this page is not available to your account."
    b"</p></body></html>"
)


def new_request_id() -> str:
    """For an error answer that has none yet: made only on failure, it costs on the hot path."""
    return uuid.uuid4().hex


def error_body(exc: errors.SidecarError, request_id: str | None = None) -> bytes:
    return json.dumps(exc.to_dict(request_id), separators=(",", ":")).encode()


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
"""(status, headers, body) as the ASGI messages carry them: ``content-length`` included, and for
``head`` the body already empty. The one shape both the ASGI path (``send_answer``) and the HTTP
protocol's synchronous answers (``sidecar.http_protocol``) write."""


def response(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"", *, head: bool = False
) -> Answer:
    return status, [*headers, (b"content-length", str(len(body)).encode())], b"" if head else body


def error_response(
    exc: errors.SidecarError,
    *,
    request_id: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> Answer:
    headers = [JSON, NO_STORE, *(extra or [])]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    if request_id:
        headers.append((b"x-request-id", request_id.encode()))
    return response(exc.code, headers, error_body(exc, request_id), head=head)


async def send_answer(send: Send, answer: Answer) -> None:
    status, headers, body = answer
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_response(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"", *, head: bool = False
) -> None:
    await send_answer(send, response(status, headers, body, head=head))


async def send_error(
    send: Send,
    exc: errors.SidecarError,
    *,
    request_id: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
    head: bool = False,
) -> None:
    await send_answer(send, error_response(exc, request_id=request_id, extra=extra, head=head))
