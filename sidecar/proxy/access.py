"""Steps 2-4 of the access path (DESIGN §5): rule, session, decision. Shared by the proxy and the
decision endpoints, which differ only in how they read the original request and phrase the answer.

``Access.check`` takes plain values and returns an ``Outcome``; nothing here touches ASGI.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from sidecar import errors
from sidecar.config.model import Config
from sidecar.metrics import Metrics
from sidecar.proxy.headers import canonical, header_value_ok, parse_cookie
from sidecar.rules.holder import RulesHolder
from sidecar.rules.model import Rule
from sidecar.rules.templates import Template, compile_template
from sidecar.security.jwt import JwtSigner
from sidecar.security.tokens import SESSION_TOKEN_PREFIX
from sidecar.session.resolver import ResolvedSession, SessionResolver

log = logging.getLogger("sidecar.proxy")


class Verdict(enum.Enum):
    ALLOW = "allow"
    LOGIN = "login"  # no (valid) session
    STEP_UP = "step_up"  # session is aal1, rule needs aal2
    FORBIDDEN = "forbidden"  # signed in but not allowed, deny rule, or no matching rule
    UNAVAILABLE = "unavailable"  # the session store is down: fail closed


@dataclass(slots=True)
class RequestFacts:
    """What the decision reads from the request headers, collected in one pass."""

    token: str | None = None
    token_from_bearer: bool = False
    api: bool = False

    @classmethod
    def read(cls, headers: list[tuple[bytes, bytes]], cookie_name: bytes) -> RequestFacts:
        session_token = bearer = cookie = None
        requested_with = fetch_mode = fetch_dest = None
        html = False
        for name, value in headers:
            n = name.lower()
            if n == b"cookie":
                if cookie is None:
                    cookie = parse_cookie(value, cookie_name)
            elif n == b"x-session-token":
                session_token = value
            elif n == b"authorization":
                if value[:7].lower() == b"bearer ":
                    bearer = value[7:].strip()
            elif n == b"accept":
                html = b"text/html" in value
            elif n == b"sec-fetch-mode":
                fetch_mode = value
            elif n == b"sec-fetch-dest":
                fetch_dest = value
            elif n == b"x-requested-with":
                requested_with = value
        # proxy-conventions.md "Browser navigation or API call": first signal that applies wins.
        if session_token or bearer or (requested_with and requested_with.lower() == b"xmlhttprequest"):
            api = True
        elif fetch_mode == b"navigate" or fetch_dest == b"document":
            api = False
        elif fetch_mode is not None:
            api = True
        else:
            api = not html
        raw = session_token or bearer or cookie
        token = raw.decode("latin-1") if raw else None
        return cls(token=token, token_from_bearer=session_token is None and bearer is not None, api=api)


@dataclass(slots=True)
class Outcome:
    verdict: Verdict
    rule: Rule | None
    session: ResolvedSession | None
    api: bool
    reason: str

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


class Access:
    def __init__(
        self,
        config: Config,
        resolver: SessionResolver,
        rules: RulesHolder,
        signer: JwtSigner | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.resolver = resolver
        self.rules = rules
        self.signer = signer
        self.cookie_name = config.session.cookie.name.encode()
        names = config.proxy.identity_headers
        self.base_names = (
            names.id.lower().encode(),
            names.email.lower().encode(),
            names.aal.lower().encode(),
        )
        self.global_templates: tuple[tuple[str, Template], ...] = tuple(
            (k, compile_template(v)) for k, v in config.proxy.headers.items()
        )
        self.jwt_header = config.proxy.jwt.header.lower().encode()
        self.login_url = config.public_base_url + "/self-service/login/browser"
        self._strip_cache: tuple[int, frozenset[bytes], tuple[bytes, ...]] = (-1, frozenset(), ())

    # --- identity headers ------------------------------------------------------------------

    def _jwt_wanted(self, rule: Rule | None) -> bool:
        return self.signer is not None and (
            self.config.proxy.jwt.enabled or (rule is not None and rule.upstream_jwt is not None)
        )

    def identity_names(self) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
        """(canonical names to strip from clients, every configured header name in order)."""
        ruleset = self.rules.current
        if self._strip_cache[0] != ruleset.generation:
            ordered: list[bytes] = list(self.base_names)
            ordered += [k.lower().encode() for k, _ in self.global_templates]
            for rule in ruleset.rules:
                ordered += [k.lower().encode() for k, _ in rule.headers]
            if self.signer is not None and (
                self.config.proxy.jwt.enabled or any(r.upstream_jwt for r in ruleset.rules)
            ):
                ordered.append(self.jwt_header)
            unique = tuple(dict.fromkeys(ordered))
            self._strip_cache = (ruleset.generation, frozenset(canonical(n) for n in unique), unique)
        return self._strip_cache[1], self._strip_cache[2]

    def identity_headers(self, outcome: Outcome) -> list[tuple[bytes, bytes]]:
        """Our headers for an allowed request (empty list when anonymous)."""
        session, rule = outcome.session, outcome.rule
        if session is None or rule is None:
            return []
        memo_key = (self.rules.current.generation, rule.id)
        headers: list[tuple[bytes, bytes]] | None = session.memo.get(memo_key)
        if headers is None:
            headers = [
                (self.base_names[0], str(session.identity_id).encode()),
                (self.base_names[2], session.aal.encode()),
            ]
            if session.email and header_value_ok(session.email):
                headers.append((self.base_names[1], session.email.encode()))
            templates = self.global_templates + rule.headers
            if templates:
                context = session.template_context()
                rendered: dict[bytes, bytes] = {}
                for name, template in templates:
                    value = template.render(context)
                    if not header_value_ok(value):
                        log.warning(
                            "header %s for identity %s has control characters; not sent",
                            name,
                            session.identity_id,
                        )
                        continue
                    rendered[name.lower().encode()] = value.encode()
                headers = [(n, v) for n, v in headers if n not in rendered] + list(rendered.items())
            session.memo[memo_key] = headers
        if self._jwt_wanted(rule):
            headers = [*headers, (self.jwt_header, self._jwt(session, rule))]
        return headers

    def _jwt(self, session: ResolvedSession, rule: Rule) -> bytes:
        assert self.signer is not None
        conf = self.config.proxy.jwt
        audience = (
            rule.upstream_jwt.audience if rule.upstream_jwt and rule.upstream_jwt.audience else conf.audience
        )
        ttl = (rule.upstream_jwt.ttl if rule.upstream_jwt else conf.ttl).total_seconds()
        claims: dict[str, Any] = {
            "sub": str(session.identity_id),
            "sid": str(session.session_id),
            "aal": session.aal,
        }
        if session.email:
            claims["email"] = session.email
        token = self.signer.sign(claims, audience=audience, ttl=ttl, cache_key=str(session.session_id))
        return (b"Bearer " + token.encode()) if self.jwt_header == b"authorization" else token.encode()

    # --- decision --------------------------------------------------------------------------

    async def check(
        self,
        method: str,
        host: str,
        path: str,
        facts: RequestFacts,
        scope: MutableMapping[str, Any] | None = None,
    ) -> Outcome:
        """Decide, then record the decision: metrics, and the access log's scope keys."""
        started = time.perf_counter()
        outcome = await self._check(method, host, path, facts)
        rule_id = outcome.rule.id if outcome.rule is not None else "-"
        if self.metrics is not None:
            self.metrics.observe_decision(rule_id, outcome.verdict.value, time.perf_counter() - started)
        if scope is not None:
            scope["sidecar.path"] = path
            scope["sidecar.rule"] = rule_id
            scope["sidecar.decision"] = outcome.verdict.value
            if outcome.session is not None:
                scope["sidecar.identity_id"] = str(outcome.session.identity_id)
        return outcome

    async def _check(self, method: str, host: str, path: str, facts: RequestFacts) -> Outcome:
        ruleset = self.rules.current
        rule = ruleset.match(method, host, path)
        if rule is None:
            return Outcome(Verdict.FORBIDDEN, None, None, facts.api, "no rule matched (default deny)")
        ruleset.hits[rule.position] += 1  # coverage: a list slot, no label lookup or lock
        api = facts.api if rule.on_unauthenticated is None else rule.on_unauthenticated == "json"
        req = rule.require
        if req.level == "deny":
            return Outcome(Verdict.FORBIDDEN, rule, None, api, f"rule {rule.id!r} denies")
        if req.level == "public":
            return Outcome(Verdict.ALLOW, rule, None, api, f"rule {rule.id!r} is public")
        session: ResolvedSession | None = None
        if facts.token:
            try:
                session = await self.resolver.resolve(facts.token)
            except errors.ServiceUnavailable:
                if req.level == "optional" and not req.has_conditions:
                    # Anonymous access is what this rule grants anyway; serving it grants nothing more.
                    return Outcome(
                        Verdict.ALLOW, rule, None, api, "session store unavailable; served anonymously"
                    )
                return Outcome(Verdict.UNAVAILABLE, rule, None, api, "session store unavailable")
        if session is None:
            if req.level == "optional":
                return Outcome(Verdict.ALLOW, rule, None, api, f"rule {rule.id!r} allows anonymous access")
            return Outcome(Verdict.LOGIN, rule, None, api, "no valid session")
        return self.judge(rule, session, api, self.config.session.whoami.required_aal)

    @staticmethod
    def judge(rule: Rule, session: ResolvedSession, api: bool, required_aal: str = "aal1") -> Outcome:
        req = rule.require
        if required_aal == "highest_available" and session.aal < session.available_aal:
            # A first factor alone must not pass while the identity has a second factor set up
            # (Kratos' whoami answers session_aal2_required here): step up, or stay anonymous.
            if req.level == "optional" and not req.has_conditions:
                return Outcome(Verdict.ALLOW, rule, None, api, "second factor pending; served anonymously")
            return Outcome(Verdict.STEP_UP, rule, session, api, "the identity has aal2 available")
        if req.roles is not None and not (req.roles & session.roles):
            return Outcome(
                Verdict.FORBIDDEN, rule, session, api, f"needs one of the roles {sorted(req.roles)}"
            )
        for key, expected in req.traits.items():
            if session.traits.get(key) != expected:
                return Outcome(
                    Verdict.FORBIDDEN, rule, session, api, f"trait {key!r} does not equal {expected!r}"
                )
        if req.verified and not session.verified:
            return Outcome(Verdict.FORBIDDEN, rule, session, api, "needs a verified address")
        if req.aal2 and session.aal != "aal2":
            return Outcome(Verdict.STEP_UP, rule, session, api, "needs aal2, session is " + session.aal)
        # The identity is in ``session``; formatting its UUID here cost a microsecond per request.
        return Outcome(Verdict.ALLOW, rule, session, api, "allowed by the rule")

    def login_location(self, return_to: str, *, aal2: bool = False) -> str:
        query = "aal=aal2&" if aal2 else ""
        return f"{self.login_url}?{query}return_to={quote(return_to, safe='')}"

    def is_session_token(self, bearer: bytes) -> bool:
        return bearer.startswith(SESSION_TOKEN_PREFIX.encode())


def new_request_id() -> str:
    return uuid.uuid4().hex
