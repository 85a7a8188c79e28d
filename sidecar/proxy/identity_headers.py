"""The identity headers an allowed request carries upstream (DESIGN §5.5), and the names every
client copy is stripped by.

``X-User-ID``, ``X-User-Email`` and ``X-User-AAL`` (``proxy.identity_headers``), templates over the
session (``proxy.headers`` and per-rule ``headers``) and an optional signed JWT. Rendering is pure,
so the list is memoised on the cached session per (rules generation, rule): a cache hit renders
nothing. Names are lower-case bytes, as they go on the wire.
"""

from __future__ import annotations

import logging
from typing import Any

from sidecar.config.model import ProxyConfig
from sidecar.proxy.access import Outcome, identity_text
from sidecar.proxy.headers import canonical, header_value_ok
from sidecar.rules.holder import RulesHolder
from sidecar.rules.model import Rule
from sidecar.rules.templates import Template, compile_template
from sidecar.security.jwt import JwtSigner
from sidecar.session.resolver import ResolvedSession

log = logging.getLogger("sidecar.proxy")


class IdentityHeaders:
    def __init__(self, config: ProxyConfig, rules: RulesHolder, signer: JwtSigner | None = None) -> None:
        self._config = config
        self._rules = rules
        self.signer = signer
        names = config.identity_headers
        self.base_names = (
            names.id.lower().encode(),
            names.email.lower().encode(),
            names.aal.lower().encode(),
            names.organization.lower().encode(),
        )
        self.global_templates: tuple[tuple[str, Template], ...] = tuple(
            (k, compile_template(v)) for k, v in config.headers.items()
        )
        self.jwt_header = config.jwt.header.lower().encode()
        self._names_cache: tuple[int, frozenset[bytes], tuple[bytes, ...]] = (-1, frozenset(), ())

    def signs(self, rule: Rule | None) -> bool:
        """Whether requests under ``rule`` carry a signed JWT (rendered anew: its expiry moves)."""
        return self._jwt_wanted(rule)

    def _jwt_wanted(self, rule: Rule | None) -> bool:
        return self.signer is not None and (
            self._config.jwt.enabled or (rule is not None and rule.upstream_jwt is not None)
        )

    def names(self) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
        """(canonical names to strip from clients, every configured header name in order)."""
        ruleset = self._rules.current
        if self._names_cache[0] != ruleset.generation:
            ordered: list[bytes] = list(self.base_names)
            ordered += [k.lower().encode() for k, _ in self.global_templates]
            for rule in ruleset.rules:
                ordered += [k.lower().encode() for k, _ in rule.headers]
            if self.signer is not None and (
                self._config.jwt.enabled or any(r.upstream_jwt for r in ruleset.rules)
            ):
                ordered.append(self.jwt_header)
            unique = tuple(dict.fromkeys(ordered))
            self._names_cache = (ruleset.generation, frozenset(canonical(n) for n in unique), unique)
        return self._names_cache[1], self._names_cache[2]

    def render(self, outcome: Outcome) -> list[tuple[bytes, bytes]]:
        """Our headers for an allowed request (empty list when anonymous)."""
        session, rule = outcome.session, outcome.rule
        if session is None or rule is None:
            return []
        memo_key = (self._rules.current.generation, rule.id)
        headers: list[tuple[bytes, bytes]] | None = session.memo.get(memo_key)
        if headers is None:
            headers = [
                (self.base_names[0], identity_text(session).encode()),
                (self.base_names[2], session.aal.encode()),
            ]
            if session.email and header_value_ok(session.email):
                headers.append((self.base_names[1], session.email.encode()))
            if session.organization_id is not None:
                headers.append((self.base_names[3], str(session.organization_id).encode()))
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
        signer = self.signer
        if signer is not None and self._jwt_wanted(rule):
            headers = [*headers, (self.jwt_header, self._jwt(signer, session, rule))]
        return headers

    def _jwt(self, signer: JwtSigner, session: ResolvedSession, rule: Rule) -> bytes:
        conf = self._config.jwt
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
        if session.organization_id is not None:
            claims["organization_id"] = str(session.organization_id)
        token = signer.sign(claims, audience=audience, ttl=ttl, cache_key=str(session.session_id))
        return (b"Bearer " + token.encode()) if self.jwt_header == b"authorization" else token.encode()
