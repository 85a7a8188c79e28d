"""WebSockets through the proxy: judged at the upgrade, closed when the session ends.

The upgrade runs the same rules and session check as any GET. ``Origin`` must be the request's
own origin, ``serve.public.base_url``'s, or one of ``proxy.allowed_ws_origins`` (cross-site
WebSocket hijacking rides on the victim's cookie). After the upgrade, every session revocation
makes the connection re-check its session; a revoked or expired session closes it (1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

from starlette.types import Receive, Scope, Send

from sidecar import errors
from sidecar.proxy.access import Access, RequestFacts
from sidecar.proxy.forward import ForwardContext, rewrite_request_headers
from sidecar.proxy.identity_headers import IdentityHeaders
from sidecar.proxy.paths import BadPath
from sidecar.proxy.prefix import OwnPaths
from sidecar.proxy.upstream import UpstreamError, UpstreamSocket, WebSocketConnector
from sidecar.rules.model import normalise_host
from sidecar.security.trusted_proxies import TrustedProxies
from sidecar.session.resolver import SessionResolver

log = logging.getLogger("sidecar.proxy")

POLICY_VIOLATION = 1008
_WS_SKIP = {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}


def origin_allowed(
    origin: bytes | None, host: bytes, scheme: str, base_origin: str, allowed: list[str]
) -> bool:
    if origin is None:
        return True  # not a browser: nothing to hijack
    o = origin.decode("latin-1").rstrip("/").lower()
    own = f"{'https' if scheme in ('wss', 'https') else 'http'}://{host.decode('latin-1')}".lower()
    return o in (own, base_origin.lower()) or o in (a.rstrip("/").lower() for a in allowed)


async def _reject(send: Send, scope: Scope, status: int) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
    else:
        await send({"type": "websocket.close", "code": POLICY_VIOLATION})


class WebSocketProxy:
    def __init__(
        self,
        *,
        enabled: bool,
        paths: OwnPaths,
        access: Access,
        resolver: SessionResolver,
        identity: IdentityHeaders,
        trusted: TrustedProxies,
        connector: WebSocketConnector,
        upstream_base: str | None,
        base_origin: str,
        allowed_origins: list[str],
    ) -> None:
        self._enabled = enabled
        self._paths = paths
        self._access = access
        self._resolver = resolver
        self._identity = identity
        self._trusted = trusted
        self._connector = connector
        self._upstream_base = upstream_base
        self._base_origin = base_origin
        self._allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if not self._enabled:
            await _reject(send, scope, 404)
            return
        try:
            path = self._paths.normalise(raw)
        except BadPath:
            await _reject(send, scope, 400)
            return
        host = origin = None
        for name, value in headers:
            if name == b"host":
                host = value
            elif name == b"origin":
                origin = value
        host = host or b""
        if not origin_allowed(
            origin, host, scope.get("scheme", "ws"), self._base_origin, self._allowed_origins
        ):
            await _reject(send, scope, 403)
            return
        facts = RequestFacts.read(headers, self._access.cookie_name)
        outcome = await self._access.check("GET", normalise_host(host.decode("latin-1")), path, facts)
        if not outcome.allowed:
            status = {"login": 401, "unavailable": 503}.get(outcome.verdict.value, 403)
            await _reject(send, scope, status)
            return
        rule = outcome.rule
        base = (rule.upstream if rule else None) or self._upstream_base
        if base is None:
            await _reject(send, scope, 404)
            return
        peer = scope["client"][0] if scope.get("client") else ""
        strip, _ = self._identity.names()
        ctx = ForwardContext(
            peer,
            "https" if scope.get("scheme") == "wss" else "http",
            self._trusted.trusts(peer),
            strip,
            self._access.cookie_name,
            outcome.session is not None and facts.token_from_bearer,
        )
        forwarded = [
            (n, v)
            for n, v in rewrite_request_headers(headers, ctx, self._identity.render(outcome))
            if n.lower() not in _WS_SKIP
        ]
        query = scope.get("query_string", b"")
        url = "ws" + base[4:] + path + ("?" + query.decode("latin-1") if query else "")
        try:
            upstream = await self._connector.connect(url, forwarded, scope.get("subprotocols", ()))
        except UpstreamError as exc:
            log.warning("upstream websocket failed: %s: %s", url, exc)
            await _reject(send, scope, 502)
            return
        await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
        expires = outcome.session.expires_at if outcome.session else None
        await self._pump(upstream, facts.token, expires, receive, send)

    async def close(self) -> None:
        await self._connector.close()

    async def _pump(
        self,
        upstream: UpstreamSocket,
        token: str | None,
        expires: datetime | None,
        receive: Receive,
        send: Send,
    ) -> None:
        revoked = asyncio.Event()
        changed = asyncio.Event()
        resolver = self._resolver

        async def client_to_upstream() -> None:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await upstream.send_bytes(message["bytes"])
                elif message.get("text") is not None:
                    await upstream.send_text(message["text"])

        async def upstream_to_client() -> None:
            while True:
                data = await upstream.receive()
                if data is None:
                    return
                if isinstance(data, str):
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": data})

        async def session_watch() -> None:
            if token is None:
                await asyncio.Event().wait()  # anonymous on a public/optional route: nothing to revoke
                return
            while True:
                timeout = None
                if expires is not None:
                    timeout = max(0.0, (expires - datetime.now(UTC)).total_seconds())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout)
                changed.clear()
                try:
                    current = await resolver.resolve(token)
                except errors.ServiceUnavailable:
                    continue  # an outage is not a logout; the next revocation re-checks
                if current is None:
                    revoked.set()
                    return

        listener = changed.set
        resolver.add_listener(listener)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.ensure_future(client_to_upstream()),
            asyncio.ensure_future(upstream_to_client()),
            asyncio.ensure_future(session_watch()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            resolver.remove_listener(listener)
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            code = POLICY_VIOLATION if revoked.is_set() else (upstream.close_code or 1000)
            await upstream.close()
            with contextlib.suppress(Exception):
                await send({"type": "websocket.close", "code": code})
