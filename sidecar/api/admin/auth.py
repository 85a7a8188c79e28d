"""Optional bearer-key protection of the admin listener (``serve.admin.api_key``).

Network isolation (127.0.0.1, a NetworkPolicy) stays the first line; the key is a second one for
deployments where the admin port is reachable from more than the operator. Health endpoints stay
open so probes need no secret.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar import errors

_OPEN_PREFIXES = ("/health/", "/admin/health/")


class AdminKey:
    def __init__(self, app: ASGIApp, key: str, *, own_sign_in: str | None = None) -> None:
        """``own_sign_in``: a path prefix (the console's) that checks the key itself, at its sign-in
        form, and then by its own session cookie; a browser cannot send a bearer header."""
        self.app = app
        self.own_sign_in = own_sign_in
        self.expected = b"bearer " + key.encode()
        body = errors.Unauthorized("a valid admin API key is required").to_dict()
        self.denied = json.dumps(body, separators=(",", ":")).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(_OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        own = self.own_sign_in
        if own is not None and (path == own or path.startswith(own + "/")):
            await self.app(scope, receive, send)
            return
        presented = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                presented = value
                break
        # Scheme case-insensitive, key compared in constant time.
        candidate = presented[:7].lower() + presented[7:]
        if hmac.compare_digest(candidate, self.expected):
            await self.app(scope, receive, send)
            return
        headers = [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b'Bearer realm="sidecar-admin"'),
            (b"content-length", str(len(self.denied)).encode()),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": self.denied})
