"""The public listener's raw-ASGI entry (DESIGN §1, §5).

Requests under ``serve.public.prefix`` go to the decision endpoints or, unchanged, to the
Starlette public app (which mounts its routes under the prefix itself).
Everything else is normalised, matched against the rules, judged with the session, and streamed
to the upstream. No middleware and no ``Request`` object on that path (STYLE §4).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sidecar import errors
from sidecar.api.decisions import DecisionEndpoints
from sidecar.config.model import Config
from sidecar.metrics import Metrics
from sidecar.proxy.access import Access, Outcome, RequestFacts, Verdict, new_request_id
from sidecar.proxy.forward import ForwardContext, forward_http, rewrite_request_headers_raw
from sidecar.proxy.headers import TrustedProxies
from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.proxy.responses import (
    FORBIDDEN_PAGE,
    HTML,
    NO_STORE,
    WWW_AUTHENTICATE,
    send_error,
    send_response,
)
from sidecar.proxy.upstream import UpstreamClient, create_upstream
from sidecar.proxy.websocket import proxy_websocket
from sidecar.rules.holder import RulesHolder
from sidecar.rules.model import normalise_host
from sidecar.security.jwt import JwtSigner
from sidecar.session.invalidation import Invalidation
from sidecar.session.resolver import SessionResolver

log = logging.getLogger("sidecar.proxy")

# With an empty prefix the Kratos API shares the root with the app: these first segments are ours.
_ROOT_SEGMENTS = (
    "/self-service/",
    "/sessions",
    "/schemas",
    "/health/",
    "/.well-known/",
    "/authz/",
    "/decisions/",
    "/ui/",
    "/identities",
    "/admin/",
)


def framing_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Request smuggling guard: CL and TE together, repeated CL, or TE other than plain chunked."""
    return framing(headers)[0]


def framing(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bool]:
    """(``framing_problem``, whether the request has a body), in one pass over the headers."""
    cl = te = 0
    te_value = b""
    for name, value in headers:
        n = name.lower()
        if n == b"content-length":
            cl += 1
            if not value.strip().isdigit():
                return "invalid Content-Length", True
        elif n == b"transfer-encoding":
            te += 1
            te_value = value.strip().lower()
    if cl and te:
        return "both Content-Length and Transfer-Encoding", True
    if cl > 1 or te > 1 or (te and te_value != b"chunked"):
        return "ambiguous message framing", True
    return None, bool(cl or te)


class Gateway:
    def __init__(
        self,
        config: Config,
        access: Access,
        public_app: ASGIApp,
        *,
        upstream: UpstreamClient | None,
        invalidation: Invalidation | None = None,
    ) -> None:
        self.config = config
        self.access = access
        self.public_app = public_app
        self.upstream = upstream
        self.invalidation = invalidation
        self.trusted = TrustedProxies.parse(config.serve.public.trusted_proxies)
        self.decisions = DecisionEndpoints(config, access, self.trusted)
        self.prefix = config.serve.public.prefix.encode()
        self.upstream_base = config.proxy.upstream.rstrip("/") if config.proxy.upstream else None
        self.reject_params = config.proxy.reject_path_parameters
        base = urlsplit(config.public_base_url)
        self.base_origin = f"{base.scheme}://{base.netloc}"
        self._started = False
        self._hosts: dict[bytes, str] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Background tasks (rules watcher, revocations); also run lazily by the first request,
        since the servers run with ``lifespan="off"`` and start ``Services`` themselves."""
        if self._started:
            return
        self._started = True
        self.access.rules.start()
        if self.invalidation is not None:
            await self.invalidation.start(self.access.resolver)

    async def stop(self) -> None:
        self._started = False
        await self.access.rules.stop()
        if self.invalidation is not None:
            await self.invalidation.stop()
        if self.upstream is not None:
            await self.upstream.close()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def wrapped_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        await self.public_app(scope, wrapped_receive, send)

    # --- dispatch --------------------------------------------------------------------------

    def _ours(self, raw: bytes) -> bytes | None:
        """The path below the prefix when the request is for the sidecar itself."""
        prefix = self.prefix
        if prefix:
            if raw == prefix or raw.startswith(prefix + b"/"):
                return raw[len(prefix) :] or b"/"
            return None
        return raw if raw.decode("latin-1").startswith(_ROOT_SEGMENTS) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._started:
            await self.start()
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        sub = self._ours(raw)
        if sub is not None:
            if kind == "http" and await self.decisions.handle(sub, scope, receive, send):
                return
            await self.public_app(scope, receive, send)
            return
        if kind == "http":
            await self._http(scope, raw, receive, send)
        elif kind == "websocket":
            await proxy_websocket(self, scope, raw, receive, send)

    def _host(self, raw: bytes) -> str:
        """``normalise_host`` memoised: a site sees few distinct Host values (bounded anyway)."""
        host = self._hosts.get(raw)
        if host is None:
            if len(self._hosts) > 1024:
                self._hosts.clear()
            host = self._hosts[raw] = normalise_host(raw.decode("latin-1"))
        return host

    def normalise(self, raw: bytes) -> str:
        path = normalise_path(raw, reject_parameters=self.reject_params)
        if self._ours(path.encode()) is not None:
            # Reached the prefix only after decoding: a different path to us than to a naive reader.
            raise BadPath("encoded path into the sidecar's own prefix")
        return path

    def original_url(self, scope: Scope, path: str, trusted: bool, headers: list[tuple[bytes, bytes]]) -> str:
        """Absolute URL for ``return_to``: from trusted X-Forwarded-Proto/Host, else ``base_url``."""
        origin = self.base_origin
        if trusted:
            proto = host = None
            for name, value in headers:
                n = name.lower()
                if n == b"x-forwarded-proto":
                    proto = value.split(b",")[0].strip().decode("latin-1")
                elif n == b"x-forwarded-host":
                    host = value.split(b",")[0].strip().decode("latin-1")
            if host and proto in ("http", "https"):
                origin = f"{proto}://{host}"
        query = scope.get("query_string", b"")
        return origin + path + ("?" + query.decode("latin-1") if query else "")

    async def _http(self, scope: Scope, raw: bytes, receive: Receive, send: Send) -> None:
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        method: str = scope["method"]
        head = method == "HEAD"
        problem, has_body = framing(headers)
        if problem:
            await send_error(send, errors.BadRequest(problem), head=head)
            return
        try:
            path = self.normalise(raw)
        except BadPath as exc:
            await send_error(send, errors.BadRequest(f"ambiguous or malformed path: {exc}"), head=head)
            return
        host = b""
        for name, value in headers:
            if name == b"host":
                host = value
                break
        facts = RequestFacts.read(headers, self.access.cookie_name)
        outcome = await self.access.check(method, self._host(host), path, facts, scope)
        peer = scope["client"][0] if scope.get("client") else ""
        trusted = self.trusted.trusts(peer)
        if not outcome.allowed:
            if outcome.rule is None and self.upstream_base is None:
                await send_error(send, errors.NotFound(), head=head)
                return
            await self.deny(send, outcome, method, self.original_url(scope, path, trusted, headers))
            return
        rule = outcome.rule
        base = (rule.upstream if rule is not None else None) or self.upstream_base
        if base is None or self.upstream is None:
            await send_error(send, errors.NotFound(), head=head)
            return
        strip, _ = self.access.identity_names()
        ctx = ForwardContext(
            peer=peer,
            scheme=scope.get("scheme", "http"),
            trusted=trusted,
            strip=strip,
            cookie_name=self.access.cookie_name,
            strip_bearer=outcome.session is not None and facts.token_from_bearer,
        )
        upstream_headers = rewrite_request_headers_raw(headers, ctx, self.access.identity_headers(outcome))
        query = scope.get("query_string", b"")
        target = path.encode() + b"?" + query if query else path.encode()
        await forward_http(
            self.upstream,
            method,
            base,
            target,
            upstream_headers,
            has_body,
            receive,
            send,
            request_id=scope.get("sidecar.request_id"),
            metrics=self.access.metrics,
        )

    async def deny(self, send: Send, outcome: Outcome, method: str, original_url: str) -> None:
        head = method == "HEAD"
        verdict = outcome.verdict
        if verdict is Verdict.UNAVAILABLE:
            await send_error(send, errors.ServiceUnavailable(), request_id=new_request_id(), head=head)
        elif verdict is Verdict.LOGIN:
            if outcome.api:
                await send_error(send, errors.SessionInactive(), extra=[WWW_AUTHENTICATE], head=head)
            else:
                status = 302 if method in ("GET", "HEAD") else 303
                location = self.access.login_location(original_url)
                await send_response(send, status, [(b"location", location.encode()), NO_STORE])
        elif verdict is Verdict.STEP_UP:
            location = self.access.login_location(original_url, aal2=True)
            if outcome.api:
                # Kratos' session_aal2_required carries where a browser would step up.
                step_up = errors.AAL2Required(extra={"redirect_browser_to": location})
                await send_error(send, step_up, head=head)
            else:
                await send_response(send, 303, [(b"location", location.encode()), NO_STORE])
        elif outcome.api:
            await send_error(send, errors.Forbidden(), head=head)
        else:
            await send_response(send, 403, [HTML, NO_STORE], FORBIDDEN_PAGE, head=head)


def build_gateway(
    config: Config,
    resolver: SessionResolver,
    public_app: ASGIApp,
    *,
    rules: RulesHolder | None = None,
    upstream: UpstreamClient | None = None,
    invalidation: Invalidation | None = None,
    signer: JwtSigner | None = None,
    metrics: Metrics | None = None,
) -> Gateway:
    """The public ASGI app. Loads the rules now, so a bad rule file fails the start (``RulesError``)."""
    if rules is None:
        rules = RulesHolder(
            config.rules, order=config.rules_order, reserved_prefix=config.serve.public.prefix
        )
        rules.load()
    if signer is None and (config.proxy.jwt.enabled or any(r.upstream_jwt for r in rules.current.rules)):
        signer = JwtSigner(
            config.secrets.default or config.secrets.cookie,
            alg=config.proxy.jwt.alg,
            issuer=config.proxy.jwt.issuer or config.public_base_url,
            default_audience=config.proxy.jwt.audience,
        )
    if upstream is None:
        # Lazy: no connection until a request is proxied (rules may gain an upstream on reload).
        upstream = create_upstream(config.proxy.timeouts)
    access = Access(config, resolver, rules, signer, metrics)
    return Gateway(config, access, public_app, upstream=upstream, invalidation=invalidation)
