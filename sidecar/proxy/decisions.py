"""Decision endpoints for a proxy in front of the app (proxy-conventions.md), raw ASGI.

They run normalisation, rules, session and decision (DESIGN §5 steps 1-4) on the *original*
request, which each proxy describes in its own headers, and answer in that proxy's dialect with
status and headers (a body only on denial). Each dialect is a small object: how to read the
original request, which headers allow it, how a denial must look. Forwarded headers are read only
when the TCP peer is in ``serve.public.trusted_proxies``. Also serves the upstream-JWT key set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from starlette.types import Scope, Send

from sidecar import errors, waiting
from sidecar.proxy.access import REPLAY_LATER, Access, Outcome, Replayed, RequestFacts
from sidecar.proxy.deny import Denials
from sidecar.proxy.identity_headers import IdentityHeaders
from sidecar.proxy.paths import BadPath, normalise_path
from sidecar.proxy.responses import JSON, NO_STORE, Answer, error_response, response, send_answer
from sidecar.rules.decision import Verdict
from sidecar.rules.model import normalise_host
from sidecar.security.trusted_proxies import TrustedProxies

Headers = list[tuple[bytes, bytes]]
Later = waiting.Later[Answer]
"""An answer that needs the session store: made once its load has settled, it is ``handle``'s
answer, with ``handle``'s records (``DecisionEndpoints.answer_cached`` with ``later``)."""


@dataclass(slots=True)
class Original:
    method: str
    scheme: str
    host: str
    path: bytes
    query: bytes


class Dialect:
    """nginx-like by default; subclasses change what differs."""

    always_json: ClassVar[bool] = False
    """Every denial in Kratos JSON, whatever the client (Oathkeeper's API)."""
    redirects: ClassVar[bool] = True
    """False when the proxy cannot pass a 3xx on: 401 + ``Location`` instead."""
    uri_header: ClassVar[bytes | None] = None
    """The header whose first value, when present, is the original URI (path, then ``?query``) and
    nothing else: the rest of the request decides the original method, host and scheme alone."""

    def original(
        self,
        sub: bytes,
        method: str,
        query: bytes,
        h: dict[bytes, bytes],
        trusted: bool,
        host: str,
        scheme: str,
    ) -> Original | None:
        """The request the proxy asks about; None when missing or not from a trusted proxy.

        ``sub`` is the path below the public prefix, ``method`` and ``query`` the request's own,
        ``h`` the first ``host``, ``x-original-*`` and
        ``x-forwarded-*`` values (lower-case names), ``trusted`` whether the peer is a trusted proxy,
        ``host`` and ``scheme`` the request's own (forwarded ones when trusted)."""
        raise NotImplementedError

    def allow_headers(self, ours: dict[bytes, bytes], names: tuple[bytes, ...]) -> Headers:
        # nginx and Caddy/Traefik: every configured header, empty when anonymous, so the
        # proxy's copy replaces (or removes) the client's (Caddy GHSA-7r4p-vjf4-gxv4).
        return [(n, ours.get(n, b"")) for n in names]


def _uri(path: bytes, query: bytes) -> bytes:
    return path + b"?" + query if query else path


class Nginx(Dialect):
    """nginx ``auth_request``: ``X-Original-URI`` (or ``X-Original-URL``) and ``X-Original-Method``."""

    # nginx turns a 3xx from auth_request into a 500: 401 + Location for error_page.
    redirects = False
    uri_header = b"x-original-uri"

    def original(
        self,
        sub: bytes,
        method: str,
        query: bytes,
        h: dict[bytes, bytes],
        trusted: bool,
        host: str,
        scheme: str,
    ) -> Original | None:
        if not trusted:
            return None
        uri = h.get(b"x-original-uri")
        if uri is None and b"x-original-url" in h:
            parts = urlsplit(h[b"x-original-url"].decode("latin-1"))
            if b"x-forwarded-host" not in h and parts.netloc:
                host = parts.netloc
            uri = _uri((parts.path or "/").encode("latin-1"), parts.query.encode())
        if uri is None:
            return None
        method = h.get(b"x-original-method", b"GET").decode("latin-1")
        path, _, query = uri.partition(b"?")
        return Original(method.upper(), scheme, host, path, query)


class ForwardAuth(Dialect):
    """Traefik ForwardAuth and Caddy ``forward_auth``: ``X-Forwarded-Method/Proto/Host/Uri``."""

    uri_header = b"x-forwarded-uri"

    def original(
        self,
        sub: bytes,
        method: str,
        query: bytes,
        h: dict[bytes, bytes],
        trusted: bool,
        host: str,
        scheme: str,
    ) -> Original | None:
        if not trusted or b"x-forwarded-uri" not in h:
            return None
        method = h.get(b"x-forwarded-method", b"GET").decode("latin-1")
        path, _, query = h[b"x-forwarded-uri"].partition(b"?")
        return Original(method.upper(), scheme, host, path, query)


class Envoy(Dialect):
    """Envoy ext_authz (HTTP service): the original path is appended to ours; only 200 allows."""

    def original(
        self,
        sub: bytes,
        method: str,
        query: bytes,
        h: dict[bytes, bytes],
        trusted: bool,
        host: str,
        scheme: str,
    ) -> Original | None:
        path = sub[len(b"/authz/envoy") :] or b"/"
        return Original(method.upper(), scheme, host, path, query)

    def allow_headers(self, ours: dict[bytes, bytes], names: tuple[bytes, ...]) -> Headers:
        # Envoy keeps a client copy of any header we omit: name every unset one for removal.
        headers = [(n, v) for n, v in ours.items() if v]
        missing = [n for n in names if not ours.get(n)]
        if missing:
            headers.append((b"x-envoy-auth-headers-to-remove", b", ".join(missing)))
        return headers


class Oathkeeper(Dialect):
    """Oathkeeper's ``/decisions/<path>``: the path is appended, or sent in forwarded headers."""

    always_json = True

    def original(
        self,
        sub: bytes,
        method: str,
        query: bytes,
        h: dict[bytes, bytes],
        trusted: bool,
        host: str,
        scheme: str,
    ) -> Original | None:
        path = sub[len(b"/decisions") :] or b"/"
        if trusted:
            method = h.get(b"x-forwarded-method", method.encode()).decode("latin-1")
            path = h.get(b"x-forwarded-uri", path).split(b"?", 1)[0]
        return Original(method.upper(), scheme, host, path, b"")


NGINX, FORWARD_AUTH, ENVOY, OATHKEEPER = Nginx(), ForwardAuth(), Envoy(), Oathkeeper()


_EXACT = {
    b"/authz/nginx": NGINX,
    b"/authz/forward-auth": FORWARD_AUTH,
    b"/authz/envoy": ENVOY,
    b"/decisions": OATHKEEPER,
}


def dialect_for(sub: bytes) -> Dialect | None:
    # The exact paths in one lookup (nginx and forward-auth ask at one path each).
    exact = _EXACT.get(sub)
    if exact is not None:
        return exact
    if sub.startswith(b"/authz/envoy/"):
        return ENVOY
    if sub.startswith(b"/decisions/"):
        return OATHKEEPER
    return None


@dataclass(slots=True)
class Asked:
    """A decision request read and checked: what ``Access.check`` is asked, and for the answer."""

    dialect: Dialect
    original: Original
    host: str
    path: str
    facts: RequestFacts


class DecisionEndpoints:
    """Two entries, one logic: ``handle`` (ASGI) and ``answer_cached`` (no I/O, for the HTTP
    protocol's synchronous answers) both read the request with ``_asked``, judge it with
    ``Access.check`` or ``Access.check_cached`` (the same steps) and phrase the answer with
    ``answer`` (pure)."""

    def __init__(
        self,
        access: Access,
        identity: IdentityHeaders,
        denials: Denials,
        trusted: TrustedProxies,
        *,
        public_base_url: str,
        reject_path_parameters: bool,
    ) -> None:
        self.access = access
        self.identity = identity
        self.denials = denials
        self.trusted = trusted
        self.reject_params = reject_path_parameters
        base = urlsplit(public_base_url)
        self.base_scheme, self.base_host = base.scheme, base.netloc
        self._hosts: dict[str, str] = {}

    def _host(self, host: str) -> str:
        """``normalise_host`` memoised: few distinct hosts ask (bounded anyway)."""
        known = self._hosts.get(host)
        if known is None:
            if len(self._hosts) > 1024:
                self._hosts.clear()
            known = self._hosts[host] = normalise_host(host)
        return known

    async def handle(self, sub: bytes, scope: Scope, send: Send) -> bool:
        """Answer when ``sub`` (the path below the prefix) is one of ours; False otherwise."""
        dialect = dialect_for(sub)
        if dialect is not None:
            asked = self._asked(dialect, sub, scope)
            if isinstance(asked, Asked):
                original = asked.original
                outcome = await self.access.check(
                    original.method, self._host(asked.host), asked.path, asked.facts, scope
                )
                await send_answer(send, self.answer(asked, outcome))
            else:
                await send_answer(send, asked)
            return True
        if sub == b"/.well-known/jwks.json":
            await send_answer(send, self._jwks())
            return True
        return False

    def answer_cached(self, sub: bytes, scope: Scope, later: bool = False) -> Answer | Later | None:
        """``handle``'s answer when it needs no I/O (the session cached, or none needed); None for
        a path not ours or an answer that needs the session store. Records what ``handle`` does.
        With ``later``, an answer that needs the session store is a ``Later`` instead of None
        (``sidecar.waiting``): made once the session's load has settled, it is ``handle``'s answer
        to the request, with ``handle``'s records (the request
        read once, here, as ``handle`` reads it; matched once, the token digested once), for the
        HTTP protocol to write without ASGI (``sidecar.http_protocol``).
        A judged answer is a function of the request's method, target and headers (bar
        ``x-request-id`` and ``traceparent``, which it never reads) and its peer, as long as the
        ``replay`` put in ``scope["sidecar.replay"]`` (``sidecar.logs``) holds, when
        ``scope["sidecar.remember"]`` asks for one: whoever keys on those may remember it
        (``sidecar.http_protocol``).

        An allowed answer is moreover the same for any original URI its dialect's ``uri_header``
        carries whose path the same rule decides (the answer holds no path): then
        ``scope["sidecar.vary"]`` is ``(uri_header, same)``, where ``same(value)`` is the
        normalised path of the original URI ``value`` when that request, the same in every other
        header, gets this answer (while ``replay`` holds), else None. Pure: records nothing."""
        dialect = dialect_for(sub)
        if dialect is not None:
            asked = self._asked(dialect, sub, scope)
            if not isinstance(asked, Asked):
                return asked
            original = asked.original
            host = self._hosts.get(asked.host) or self._host(asked.host)
            if not scope.get("sidecar.remember"):
                outcome = self.access.check_cached(
                    original.method, host, asked.path, asked.facts, scope, later
                )
                if outcome is None:
                    return None
                if isinstance(outcome, Outcome):
                    return self.answer(asked, outcome)
                return self._later(asked, outcome)
            checked = self.access.check_replayable(
                original.method, host, asked.path, asked.facts, scope, later
            )
            if checked is None:
                return None
            if not isinstance(checked, tuple):
                return self._later(asked, checked, scope)
            outcome, replay, same_rule = checked
            # The answer is the same for the same request while ``replay`` holds (``Access``),
            # except for a signed JWT in an allowed one (its own expiry): that one is not offered.
            if not (outcome.allowed and self.identity.signer is not None):
                scope["sidecar.replay"] = replay
                name = dialect.uri_header
                if outcome.allowed and name is not None:
                    scope["sidecar.vary"] = (name, self._same(same_rule))
            return self.answer(asked, outcome)
        if sub == b"/.well-known/jwks.json":
            return self._jwks()
        return None

    def _later(self, asked: Asked, judging: waiting.Later[Outcome], scope: Scope | None = None) -> Later:
        """``handle``'s answer for a request ``answer_cached`` read, once ``Access`` has judged it
        with the session from the store (``Access.check_cached`` with ``later``: ``check``'s
        records). ``scope``: the request's, when a replay was asked for (``check_replayable``):
        then the answer's replay is there once made, as ``Access._replay_later``'s is, but
        giving the answer (``_replay_later``), unless it is allowed with a signed JWT."""
        judged = judging.make
        if scope is None:
            return waiting.wrapped(judging, lambda: self.answer(asked, judged()))

        def made() -> Answer:
            outcome = judged()
            again = scope.pop(REPLAY_LATER, None)
            if again is not None and not (outcome.allowed and self.identity.signer is not None):
                scope[REPLAY_LATER] = self._replay_later(asked, again)
            return self.answer(asked, outcome)

        return waiting.wrapped(judging, made)

    def _replay_later(
        self, asked: Asked, again: Callable[[], waiting.Later[Replayed] | None]
    ) -> Callable[[], waiting.Later[tuple[Answer, Any] | None] | None]:
        """``Access._replay_later``'s ``again`` with the answer made of a new outcome."""

        def answered() -> waiting.Later[tuple[Answer, Any] | None] | None:
            waited = again()
            if waited is None:
                return None
            judged = waited.make

            def made() -> tuple[Answer, Any] | None:
                replayed = judged()
                if replayed is None:
                    return None
                outcome, scope = replayed
                return self.answer(asked, outcome), scope

            return waiting.wrapped(waited, made)

        return answered

    def _same(self, same_rule: Callable[[str], bool]) -> Callable[[bytes], str | None]:
        """``answer_cached``'s ``same`` for a judged request: the original URI read as the
        dialects read theirs (``Nginx``, ``ForwardAuth``: path before the first ``?``), its path
        normalised as ``_asked`` does, and the rule that decided the first asked of it."""
        reject = self.reject_params

        def same(uri: bytes) -> str | None:
            try:
                path = normalise_path(uri.partition(b"?")[0], reject_parameters=reject)
            except BadPath:
                return None
            return path if same_rule(path) else None

        return same

    def _jwks(self) -> Answer:
        signer = self.identity.signer
        body = signer.jwks_body if signer is not None else b'{"keys":[]}'
        return response(200, [JSON, (b"cache-control", b"public, max-age=300")], body)

    def _original(
        self, dialect: Dialect, sub: bytes, scope: Scope, h: dict[bytes, bytes] | None = None
    ) -> Original | None:
        """``h``: the request's headers a dialect reads, as ``RequestFacts.read`` collects them
        with ``original`` (read here when not given)."""
        if h is None:
            h = {}
            RequestFacts.read(scope["headers"], b"", h)
        peer = scope["client"][0] if scope.get("client") else None
        trusted = self.trusted.trusts(peer)
        host = h.get(b"host", b"").decode("latin-1")
        scheme = self.base_scheme
        if trusted:  # (without the header, or with an empty one, what the request says stands)
            forwarded = h.get(b"x-forwarded-host")
            if forwarded:
                host = forwarded.decode("latin-1").split(",")[0].strip() or host
            forwarded = h.get(b"x-forwarded-proto")
            if forwarded:
                proto = forwarded.decode("latin-1").split(",")[0].strip()
                scheme = proto if proto in ("http", "https") else scheme
        method: str = scope["method"]
        return dialect.original(sub, method, scope.get("query_string", b""), h, trusted, host, scheme)

    def _asked(self, dialect: Dialect, sub: bytes, scope: Scope) -> Asked | Answer:
        """The request to judge, or the 400 that refuses it. Pure: reads, records nothing."""
        # One pass over the headers for the facts and what the dialect reads.
        h: dict[bytes, bytes] = {}
        facts = RequestFacts.read(scope["headers"], self.access.cookie_name, h)
        original = self._original(dialect, sub, scope, h)
        if original is None:
            return error_response(
                errors.BadRequest("the original request is missing or not from a trusted proxy")
            )
        host = original.host or self.base_host
        try:
            path = normalise_path(original.path, reject_parameters=self.reject_params)
        except BadPath as exc:
            return error_response(errors.BadRequest(f"ambiguous or malformed path: {exc}"))
        return Asked(dialect, original, host, path, facts)

    def answer(self, asked: Asked, outcome: Outcome) -> Answer:
        """The dialect's answer to a judged request (pure)."""
        dialect, original = asked.dialect, asked.original
        if outcome.verdict is Verdict.ALLOW:  # ``outcome.allowed``, without the property's call
            ours = dict(self.identity.render(outcome))
            _, names = self.identity.names()
            return response(200, [NO_STORE, *dialect.allow_headers(ours, names)])
        query = ("?" + original.query.decode("latin-1")) if original.query else ""
        return self.denials.render(
            outcome.verdict,
            api=outcome.api or dialect.always_json,
            method=original.method,
            return_to=f"{original.scheme}://{asked.host}{asked.path}{query}",
            redirects=dialect.redirects,
        )
