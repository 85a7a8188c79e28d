"""The public listener's raw-ASGI entry (DESIGN §1, §5).

Requests under ``serve.public.prefix`` go to whoami (``GET``/``HEAD``, the call apps make on every
request), the decision endpoints or, unchanged, to the Starlette public app (which mounts its
routes under the prefix itself).
Everything else is normalised, matched against the rules, judged with the session, and streamed
to the upstream. No middleware and no ``Request`` object on that path (STYLE §4).

The layers, each its own module: ``prefix`` (ours or the app's, the normalised path), ``access``
(rule, session, verdict; the judgement is ``sidecar.rules.decision``), ``identity_headers``,
``deny`` (one renderer for every denial), ``forward`` (header rewrite, streaming) over the
``upstream`` seam, ``decisions`` (the proxies' dialects) and ``websocket``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sidecar import errors
from sidecar.metrics import Metrics
from sidecar.proxy.access import Access, Outcome, RequestFacts
from sidecar.proxy.decisions import DecisionEndpoints, Later
from sidecar.proxy.deny import Denials
from sidecar.proxy.forward import (
    ONE_TRACEPARENT,
    REQUEST_ID_HEADER,
    REQUEST_ID_SLOT,
    TRACEPARENT_HEADER,
    TRACEPARENT_SLOT,
    Forward,
    ForwardContext,
    Plan,
    Rewrite,
    forward_http,
    rewrite_request_headers_raw,
)
from sidecar.proxy.identity_headers import IdentityHeaders
from sidecar.proxy.paths import BadPath
from sidecar.proxy.prefix import OwnPaths
from sidecar.proxy.responses import Answer, error_response, send_error
from sidecar.proxy.upstream import Upstream
from sidecar.proxy.websocket import WebSocketProxy
from sidecar.proxy.whoami import PATH as WHOAMI_PATH
from sidecar.proxy.whoami import WhoamiEndpoint
from sidecar.rules.holder import RulesHolder
from sidecar.rules.model import normalise_host
from sidecar.security.trusted_proxies import TrustedProxies
from sidecar.session.invalidation import Invalidation
from sidecar.tracing import Tracing

TRACE_HEADERS = (b"traceparent", b"tracestate")
KEEP_RELAY = "sidecar.keep_relay"
"""Scope key the HTTP protocol sets when it may remember this request's relay (``plan_now``)."""
UNFRAMED = "sidecar.unframed"
"""Scope key the HTTP protocol sets when the request has neither a Content-Length nor a
Transfer-Encoding header (``sidecar.http_protocol``): ``framing`` would find nothing (``plan_now``)."""
_PLANS = "forward_plans"
PLANS_PER_SESSION = 32
_REWRITES = "forward_rewrites"
REWRITES_PER_SESSION = 8


def _target(path: str, scope: Scope) -> bytes:
    """The upstream's request target: the normalised path and the query as received."""
    query = scope.get("query_string", b"")
    return path.encode() + b"?" + query if query else path.encode()


def framing(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bool]:
    """Request smuggling guard, in one pass over the headers: (the problem — CL and TE together,
    repeated CL, TE other than plain chunked — or None, whether the request has a body)."""
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
        public_app: ASGIApp,
        *,
        paths: OwnPaths,
        access: Access,
        identity: IdentityHeaders,
        denials: Denials,
        decisions: DecisionEndpoints,
        websockets: WebSocketProxy,
        trusted: TrustedProxies,
        rules: RulesHolder,
        upstream: Upstream | None,
        upstream_base: str | None,
        base_origin: str,
        invalidation: Invalidation | None = None,
        metrics: Metrics | None = None,
        whoami: WhoamiEndpoint | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.public_app = public_app
        self.whoami = whoami
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.paths = paths
        self.access = access
        self.identity = identity
        self.denials = denials
        self.decisions = decisions
        self.websockets = websockets
        self.trusted = trusted
        self.rules = rules
        self.upstream = upstream
        self.upstream_base = upstream_base
        self.invalidation = invalidation
        self.metrics = metrics
        self.base_origin = base_origin
        self._started = False
        self._hosts: dict[bytes, str] = {}

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Background tasks (rules watcher, revocations); also run lazily by the first request,
        since the servers run with ``lifespan="off"`` and start ``Services`` themselves."""
        if self._started:
            return
        self._started = True
        self.rules.start()
        if self.invalidation is not None:
            await self.invalidation.start()

    async def stop(self) -> None:
        self._started = False
        await self.rules.stop()
        if self.invalidation is not None:
            await self.invalidation.stop()
        if self.upstream is not None:
            await self.upstream.close()
        await self.websockets.close()

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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._started:
            await self.start()
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        sub = self.paths.below(raw)
        if sub is not None:
            if kind == "http" and (
                (self.whoami is not None and await self.whoami.handle(sub, scope, send))
                or await self.decisions.handle(sub, scope, send)
            ):
                return
            await self.public_app(scope, receive, send)
            return
        if kind == "http":
            await self._http(scope, raw, receive, send)
        elif kind == "websocket":
            await self.websockets(scope, raw, receive, send)

    def may_answer(self, scope: Scope) -> bool:
        """False when ``answer_cached`` answers None whatever the cache holds: before ``start``,
        and for every path outside ours (the proxied requests)."""
        if not self._started:
            return False
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        return self.paths.below(raw) is not None

    def answer_cached(self, scope: Scope, later: bool = False) -> Answer | Later | None:
        """The answer ``__call__`` would give to an HTTP request, when it needs no I/O: whoami and
        the decision endpoints with the session in the resolver's cache (or none needed). None for
        everything else, and before ``start`` has run (the revocation feed must be listening
        before a cached session is trusted). Used by ``sidecar.http_protocol``.

        With ``later``, whoami and the decisions that need the session store are answered too, by
        a coroutine that gives ``__call__``'s answer once the store has (``answer_later``)."""
        if not self._started:
            return None
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        sub = self.paths.below(raw)
        if sub is None:
            return None
        whoami = self.whoami
        if whoami is not None and sub == WHOAMI_PATH:
            return whoami.answer_cached(sub, scope, later)
        return self.decisions.answer_cached(sub, scope, later)

    def answer_later(self, scope: Scope) -> Answer | Later | None:
        """``answer_cached`` with ``later``: the HTTP protocol's responder
        (``sidecar.app.fast_responders``)."""
        return self.answer_cached(scope, True)

    def _host(self, raw: bytes) -> str:
        """``normalise_host`` memoised: a site sees few distinct Host values (bounded anyway)."""
        host = self._hosts.get(raw)
        if host is None:
            if len(self._hosts) > 1024:
                self._hosts.clear()
            host = self._hosts[raw] = normalise_host(raw.decode("latin-1"))
        return host

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
            path = self.paths.normalise(raw)
        except BadPath as exc:
            await send_error(send, errors.BadRequest(f"ambiguous or malformed path: {exc}"), head=head)
            return
        access = self.access
        facts = RequestFacts.read(headers, access.cookie_name)
        outcome = await access.check(method, self._request_host(headers), path, facts, scope)
        peer = scope["client"][0] if scope.get("client") else ""
        trusted = self.trusted.trusts(peer)
        if not outcome.allowed:
            if outcome.rule is None and self.upstream_base is None:
                await send_error(send, errors.NotFound(), head=head)
                return
            await self.denials.send(
                send,
                outcome.verdict,
                api=outcome.api,
                method=method,
                return_to=self.original_url(scope, path, trusted, headers),
                head=head,
            )
            return
        planned = self._forward(scope, path, facts, outcome, peer, trusted)
        if planned is None or self.upstream is None:
            await send_error(send, errors.NotFound(), head=head)
            return
        base, target, upstream_headers = planned.base, planned.target, planned.headers
        tracing = self.tracing
        if tracing is None:
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
                metrics=self.metrics,
            )
            return
        attrs = {"http.request.method": method, "server.address": base.partition("://")[2]}
        with tracing.span("sidecar.upstream", attrs, client=True):
            # The app joins our trace: the upstream span is its parent, whatever the client sent.
            traceparent = tracing.inject()
            upstream_headers = [(k, v) for k, v in upstream_headers if k.lower() not in TRACE_HEADERS]
            if traceparent is not None:
                upstream_headers.append((b"traceparent", traceparent))
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
                metrics=self.metrics,
            )

    def _request_host(self, headers: list[tuple[bytes, bytes]]) -> str:
        for name, value in headers:
            if name == b"host":
                return self._host(value)
        return self._host(b"")

    def _forward(
        self, scope: Scope, path: str, facts: RequestFacts, outcome: Outcome, peer: str, trusted: bool
    ) -> Forward | None:
        """An allowed request's upstream base, target (path and query) and rewritten headers; None
        when it has nowhere to go (404). One rewrite for the ASGI path and the fast path.

        A signed-in request's plan is kept in its cached session's memo (``PLANS_PER_SESSION`` at
        most), so it lives no longer than the cache entry: a revocation or an expiry drops it with
        the entry, and ``Access`` has judged the session again before a plan is looked up. The key
        holds everything the plan is made of: the rules generation and the rule (upstream, header
        names to strip, templates), the method, the normalised path, the query, the peer (trust,
        ``X-Forwarded-For``), the scheme and every request header as received, so a client's own
        identity, forwarded or cookie header can only meet the plan built from those very headers,
        but for the request id (ours, or a trusted proxy's) and a traceparent the HTTP protocol
        names (``ONE_TRACEPARENT``): new with each request, each has its slot in the plan.
        A signed JWT (its expiry moves) is rendered every time.

        A request seen for the first time (a client walking a site: a new path each request) has
        no plan, but its rewritten headers do not depend on its method, path or query: they are
        kept in the session's memo too (``REWRITES_PER_SESSION`` at most), under the plan's key
        without those three, as a ``Rewrite`` (with the fast path's encoded header block), and
        this request's ids put in their slots."""
        rule = outcome.rule
        session = outcome.session
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        plans: dict[tuple[Any, ...], Plan | None] | None = None
        rewrites: dict[tuple[Any, ...], Rewrite] | None = None
        rewrite_key: tuple[Any, ...] = ()
        request_id: bytes | None = None
        traceparent: bytes | None = None
        if session is not None and rule is not None and not self.identity.signs(rule):
            own_id = scope.get("sidecar.request_id")
            if own_id is not None and headers:
                request_id = own_id.encode()
                last = headers[-1]
                if last[0] == REQUEST_ID_HEADER and last[1] == request_id:  # the access log's own
                    headers = [*headers[:-1], (REQUEST_ID_HEADER, REQUEST_ID_SLOT)]
                else:  # a trusted client's, where it sent it
                    headers = [
                        (n, REQUEST_ID_SLOT) if n == REQUEST_ID_HEADER and v == request_id else (n, v)
                        for n, v in headers
                    ]
            traceparent = scope.get(ONE_TRACEPARENT)
            if traceparent is not None:
                headers = [(n, TRACEPARENT_SLOT) if n == TRACEPARENT_HEADER else (n, v) for n, v in headers]
            generation, scheme, received = (
                self.rules.current.generation,
                scope.get("scheme", "http"),
                tuple(headers),
            )
            key = (
                generation,
                rule.id,
                scope["method"],
                path,
                scope.get("query_string", b""),
                peer,
                scheme,
                received,
            )
            plans = session.memo.get(_PLANS)
            if plans is None:
                plans = session.memo[_PLANS] = {}
            noted = len(plans)
            # One lookup (the key's hash, over every header, made once): the plan, or None for a
            # request noted before, or None inserted for one seen for the first time.
            plan: Plan | None = plans.setdefault(key)
            if plan is not None:
                return plan.forward(request_id, traceparent)
            if len(plans) > noted:
                # First sight: only noted, so a client that never repeats a request (a new URL
                # each time) pays for the key alone; the plan is kept from the second on.
                if noted >= PLANS_PER_SESSION:
                    plans.clear()  # a client walking many URLs: start over rather than grow
                    plans[key] = None
                plans = None
                rewrite_key = (generation, rule.id, peer, scheme, received)
                rewrites = session.memo.get(_REWRITES)
                if rewrites is None:
                    rewrites = session.memo[_REWRITES] = {}
                else:
                    kept = rewrites.get(rewrite_key)
                    if kept is not None:
                        base = rule.upstream or self.upstream_base
                        if base is None:
                            return None
                        target = _target(path, scope)
                        return Forward(base, target, kept.headers, None, request_id, traceparent, None, kept)
        base = (rule.upstream if rule is not None else None) or self.upstream_base
        if base is None:
            return None
        identity = self.identity
        strip, _ = identity.names()
        ctx = ForwardContext(
            peer=peer,
            scheme=scope.get("scheme", "http"),
            trusted=trusted,
            strip=strip,
            cookie_name=self.access.cookie_name,
            strip_bearer=session is not None and facts.token_from_bearer,
        )
        upstream_headers = rewrite_request_headers_raw(headers, ctx, identity.render(outcome))
        target = _target(path, scope)
        if rewrites is not None:
            if len(rewrites) >= REWRITES_PER_SESSION:
                rewrites.clear()
            rewrite = rewrites[rewrite_key] = Rewrite(upstream_headers)
            return Forward(base, target, upstream_headers, None, request_id, traceparent, None, rewrite)
        if plans is None:
            return Forward(base, target, upstream_headers)
        plan = plans[key] = Plan(base, target, upstream_headers)
        return plan.forward(request_id, traceparent)

    def plan_now(self, scope: Scope) -> Forward | Answer | None:
        """The fast path's entry (``sidecar.proxy.fast``), for a GET without a body: what ``_http``
        would do, decided without waiting. A ``Forward`` (the same base, target and headers) for
        an allowed request, an ``Answer`` for a denial, or None, with nothing recorded, whenever
        the ASGI path must serve it: ours (under the prefix), bad framing or path (its 400), a
        session not in the resolver's cache, tracing on, or before ``start``."""
        if self.tracing is not None or not self._started:
            return None
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        if self.paths.below(raw) is not None:
            return None
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if not scope.get(UNFRAMED):
            problem, has_body = framing(headers)
            if problem or has_body:
                return None
        try:
            path = self.paths.normalise(raw)
        except BadPath:
            return None
        method: str = scope["method"]
        access = self.access
        facts = RequestFacts.read(headers, access.cookie_name)
        noted = access.check_noted(method, self._request_host(headers), path, facts, scope)
        if noted is None:
            return None
        outcome = noted[0]
        peer = scope["client"][0] if scope.get("client") else ""
        trusted = self.trusted.trusts(peer)
        if not outcome.allowed:
            if outcome.rule is None and self.upstream_base is None:
                return error_response(errors.NotFound())
            return self.denials.render(
                outcome.verdict,
                api=outcome.api,
                method=method,
                return_to=self.original_url(scope, path, trusted, headers),
            )
        planned = self._forward(scope, path, facts, outcome, peer, trusted)
        if planned is None or self.upstream is None:
            return error_response(errors.NotFound())
        if planned.plan is not None and scope.get(KEEP_RELAY):
            # Everything the plan was made from is the request's (its key) or checked by the
            # replay: the same rule set (and so generation and rule), the same session entry.
            planned.replay = self._while_started(access.replay_of(noted[1]))
        return planned

    def _while_started(self, replay: Callable[[], bool]) -> Callable[[], bool]:
        """``replay``, and False once ``stop`` has run (the upstream client is closed then): what
        ``plan_now`` would answer the request (None) must end its remembered relay too."""

        def replayed() -> bool:
            return self._started and replay()

        return replayed
