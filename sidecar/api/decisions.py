"""Decision endpoints for a proxy in front of the app (proxy-conventions.md), raw ASGI.

They run normalisation, rules, session and decision (DESIGN §5 steps 1-4) on the *original*
request, which each proxy describes in its own headers, and answer in that proxy's dialect with
status and headers (a body only on denial). Forwarded headers are read only when the TCP peer is
in ``serve.public.trusted_proxies``. Also serves the upstream-JWT key set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from starlette.types import Receive, Scope, Send

from sidecar import errors
from sidecar.config.model import Config
from sidecar.proxy.access import Access, Outcome, RequestFacts, Verdict, new_request_id
from sidecar.proxy.headers import TrustedProxies
from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.proxy.responses import (
    FORBIDDEN_PAGE,
    HTML,
    JSON,
    NO_STORE,
    WWW_AUTHENTICATE,
    send_error,
    send_response,
)
from sidecar.rules.model import normalise_host

if TYPE_CHECKING:
    pass

NGINX = "nginx"
FORWARD_AUTH = "forward-auth"
ENVOY = "envoy"
OATHKEEPER = "decisions"


@dataclass(slots=True)
class Original:
    method: str
    scheme: str
    host: str
    path: bytes
    query: bytes


class DecisionEndpoints:
    def __init__(self, config: Config, access: Access, trusted: TrustedProxies) -> None:
        self.config = config
        self.access = access
        self.trusted = trusted
        self.reject_params = config.proxy.reject_path_parameters
        base = urlsplit(config.public_base_url)
        self.base_scheme, self.base_host = base.scheme, base.netloc

    async def handle(self, sub: bytes, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer when ``sub`` (the path below the prefix) is one of ours; False otherwise."""
        if sub == b"/authz/nginx":
            dialect = NGINX
        elif sub == b"/authz/forward-auth":
            dialect = FORWARD_AUTH
        elif sub.startswith(b"/authz/envoy/") or sub == b"/authz/envoy":
            dialect = ENVOY
        elif sub.startswith(b"/decisions/") or sub == b"/decisions":
            dialect = OATHKEEPER
        elif sub == b"/.well-known/jwks.json":
            await self._jwks(send)
            return True
        else:
            return False
        await self._decide(dialect, sub, scope, send)
        return True

    async def _jwks(self, send: Send) -> None:
        signer = self.access.signer
        body = signer.jwks_body if signer is not None else b'{"keys":[]}'
        await send_response(send, 200, [JSON, (b"cache-control", b"public, max-age=300")], body)

    def _original(self, dialect: str, sub: bytes, scope: Scope) -> Original | None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        peer = scope["client"][0] if scope.get("client") else None
        trusted = self.trusted.trusts(peer)
        h: dict[bytes, bytes] = {}
        for name, value in headers:
            n = name.lower()
            if n.startswith((b"x-original-", b"x-forwarded-", b"host")):
                h.setdefault(n, value)
        host = h.get(b"host", b"").decode("latin-1")
        scheme = self.base_scheme
        if trusted:
            host = h.get(b"x-forwarded-host", b"").decode("latin-1").split(",")[0].strip() or host
            proto = h.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip()
            scheme = proto if proto in ("http", "https") else scheme
        if dialect == NGINX:
            if not trusted:
                return None
            method = h.get(b"x-original-method", b"GET").decode("latin-1")
            uri = h.get(b"x-original-uri")
            if uri is None and b"x-original-url" in h:
                parts = urlsplit(h[b"x-original-url"].decode("latin-1"))
                if b"x-forwarded-host" not in h and parts.netloc:
                    host = parts.netloc
                uri = (parts.path or "/").encode("latin-1") + (
                    b"?" + parts.query.encode() if parts.query else b""
                )
            if uri is None:
                return None
        elif dialect == FORWARD_AUTH:
            if not trusted or b"x-forwarded-uri" not in h:
                return None
            method = h.get(b"x-forwarded-method", b"GET").decode("latin-1")
            uri = h[b"x-forwarded-uri"]
        elif dialect == ENVOY:
            method = scope["method"]
            uri = sub[len(b"/authz/envoy") :] or b"/"
            query = scope.get("query_string", b"")
            uri += b"?" + query if query else b""
        else:
            method = scope["method"]
            uri = sub[len(b"/decisions") :] or b"/"
            if trusted:
                method = h.get(b"x-forwarded-method", method.encode()).decode("latin-1")
                uri = h.get(b"x-forwarded-uri", uri).split(b"?", 1)[0]
        path, _, query = uri.partition(b"?")
        return Original(method.upper(), scheme, host or self.base_host, path, query)

    async def _decide(self, dialect: str, sub: bytes, scope: Scope, send: Send) -> None:
        original = self._original(dialect, sub, scope)
        if original is None:
            await send_error(
                send, errors.BadRequest("the original request is missing or not from a trusted proxy")
            )
            return
        try:
            path = normalise_path(original.path, reject_parameters=self.reject_params)
        except BadPath as exc:
            await send_error(send, errors.BadRequest(f"ambiguous or malformed path: {exc}"))
            return
        facts = RequestFacts.read(scope["headers"], self.access.cookie_name)
        outcome = await self.access.check(original.method, normalise_host(original.host), path, facts, scope)
        if outcome.allowed:
            await self._allow(dialect, send, outcome)
            return
        query = ("?" + original.query.decode("latin-1")) if original.query else ""
        return_to = f"{original.scheme}://{original.host}{path}{query}"
        await self._deny(dialect, send, outcome, original.method, return_to)

    async def _allow(self, dialect: str, send: Send, outcome: Outcome) -> None:
        ours = dict(self.access.identity_headers(outcome))
        _, names = self.access.identity_names()
        headers: list[tuple[bytes, bytes]] = [NO_STORE]
        if dialect == ENVOY:
            # Envoy keeps a client copy of any header we omit: name every unset one for removal.
            headers += [(n, v) for n, v in ours.items() if v]
            missing = [n for n in names if not ours.get(n)]
            if missing:
                headers.append((b"x-envoy-auth-headers-to-remove", b", ".join(missing)))
        else:
            # nginx and Caddy/Traefik: every configured header, empty when anonymous, so the
            # proxy's copy replaces (or removes) the client's (Caddy GHSA-7r4p-vjf4-gxv4).
            headers += [(n, ours.get(n, b"")) for n in names]
        await send_response(send, 200, headers)

    async def _deny(self, dialect: str, send: Send, outcome: Outcome, method: str, return_to: str) -> None:
        verdict = outcome.verdict
        api = outcome.api or dialect == OATHKEEPER
        if verdict is Verdict.UNAVAILABLE:
            await send_error(send, errors.ServiceUnavailable(), request_id=new_request_id())
        elif verdict is Verdict.LOGIN:
            if api:
                await send_error(send, errors.SessionInactive(), extra=[WWW_AUTHENTICATE])
            elif dialect == NGINX:
                # nginx turns a 3xx from auth_request into a 500: 401 + Location for error_page.
                location = self.access.login_location(return_to).encode()
                await send_error(
                    send, errors.SessionInactive(), extra=[WWW_AUTHENTICATE, (b"location", location)]
                )
            else:
                status = 302 if method in ("GET", "HEAD") else 303
                location = self.access.login_location(return_to).encode()
                await send_response(send, status, [(b"location", location), NO_STORE])
        elif verdict is Verdict.STEP_UP:
            if api:
                step_up = self.access.login_location(return_to, aal2=True)
                await send_error(send, errors.AAL2Required(extra={"redirect_browser_to": step_up}))
            elif dialect == NGINX:
                location = self.access.login_location(return_to, aal2=True).encode()
                await send_error(send, errors.SessionInactive(), extra=[(b"location", location)])
            else:
                location = self.access.login_location(return_to, aal2=True).encode()
                await send_response(send, 303, [(b"location", location), NO_STORE])
        elif api:
            await send_error(send, errors.Forbidden())
        else:
            await send_response(send, 403, [HTML, NO_STORE], FORBIDDEN_PAGE)
