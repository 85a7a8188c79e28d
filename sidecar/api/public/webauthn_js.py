"""``GET /.well-known/ory/webauthn.js`` (kratos-api.md §1.7): the browser helpers named by
``onclickTrigger`` / ``onloadTrigger``. Served from the public origin, so the pages' CSP
(``script-src 'self'``) allows it; its SHA-512 is the script node's ``integrity``.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.strategies.webauthn_keys import SCRIPT_PATH


def webauthn_js_routes() -> list[Route]:
    body = resources.files("sidecar.ui").joinpath("static", "webauthn.js").read_bytes()
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "public, max-age=300",
        "Cross-Origin-Resource-Policy": "same-origin",
    }

    async def script(request: Request) -> Response:
        return Response(body, media_type="text/javascript", headers=headers)

    return [Route(SCRIPT_PATH, script, methods=["GET", "HEAD"])]
