"""The callables of ``page_routes`` over the Kratos public API itself, like Ory's UIs use it.

Pages read flows exactly as any Kratos UI would: ``GET /self-service/<kind>/flows?id=`` with the
browser's cookies, ``/sessions/whoami``, ``/self-service/logout/browser`` and
``/self-service/errors``. The transport decides where that API lives: the public Starlette app
in-process (``httpx.ASGITransport``, no socket) or any Kratos-compatible server over HTTP.
Error envelopes come back as ``sidecar.errors`` classes so the pages treat both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar import errors
from sidecar.ui.node_view import as_mapping

_BY_STATUS: dict[int, type[errors.SidecarError]] = {
    400: errors.BadRequest,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    410: errors.FlowExpired,
    422: errors.BrowserLocationChangeRequired,
    429: errors.TooManyRequests,
    502: errors.BadGateway,
    503: errors.ServiceUnavailable,
    504: errors.GatewayTimeout,
}
# Only the browser's cookies travel: nothing else from the page request concerns the API.
_FORWARDED = ("cookie", "user-agent", "x-forwarded-for")


def _error_classes() -> dict[str, type[errors.SidecarError]]:
    found: dict[str, type[errors.SidecarError]] = {}
    pending: list[type[errors.SidecarError]] = [errors.SidecarError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.error_id and cls is not errors.ValidationError:
            found[cls.error_id] = cls
    return found


_BY_ID = _error_classes()


def error_from_envelope(status: int, body: Any) -> errors.SidecarError:
    """Kratos' ``{"error": {...}, "use_flow_id": ...}`` → the matching ``SidecarError``."""
    envelope = as_mapping(body)
    err = as_mapping(envelope.get("error"))
    cls = _BY_ID.get(str(err.get("id"))) or _BY_STATUS.get(status) or errors.InternalError
    exc = cls(
        str(err.get("message") or "") or None,
        reason=str(err["reason"]) if err.get("reason") else None,
        details=dict(as_mapping(err.get("details"))) or None,
        extra={k: v for k, v in envelope.items() if k != "error"},
    )
    if cls is errors.InternalError and status != 500:
        exc.code = status  # type: ignore[misc]
    return exc


def in_process(get_app: Callable[[], ASGIApp]) -> httpx.ASGITransport:
    """A transport to an ASGI app that is built after the client.

    The pages live inside the public app they read from, so the app does not exist yet when its
    routes (and this client) are made; ``get_app`` is called per request instead.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await get_app()(scope, receive, send)

    return httpx.ASGITransport(app=app)


class PublicApiClient:
    """``fetch_flow``, ``fetch_error``, ``whoami`` and ``logout_url`` for ``page_routes``.

    ``base_url`` is the public base URL with its prefix (``http://127.0.0.1:4433/.auth``).
    """

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            transport=transport,
            timeout=httpx.Timeout(10.0),
            headers={"Accept": "application/json"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, str], request: Request | None) -> httpx.Response:
        headers = {}
        if request is not None:
            headers = {name: request.headers[name] for name in _FORWARDED if name in request.headers}
        try:
            return await self._http.get(path, params=params, headers=headers)
        except httpx.HTTPError as exc:
            # The API being unreachable is an outage (503), never "signed out" or "not found".
            raise errors.ServiceUnavailable(f"the public API could not be reached: {exc}") from exc

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            raise error_from_envelope(response.status_code, body)
        if not isinstance(body, dict):
            raise errors.BadGateway("the public API answered with something other than a JSON object")
        return body

    async def fetch_flow(self, kind: str, flow_id: str, request: Request) -> dict[str, Any]:
        return self._json(await self._get(f"/self-service/{kind}/flows", {"id": flow_id}, request))

    async def fetch_error(self, error_id: str) -> dict[str, Any]:
        return self._json(await self._get("/self-service/errors", {"id": error_id}, None))

    async def whoami(self, request: Request) -> dict[str, Any] | None:
        response = await self._get("/sessions/whoami", {}, request)
        if response.status_code == 401:
            return None
        return self._json(response)

    async def logout_url(self, request: Request) -> str | None:
        response = await self._get("/self-service/logout/browser", {}, request)
        if response.status_code == 401:
            return None
        url = self._json(response).get("logout_url")
        return url if isinstance(url, str) else None
