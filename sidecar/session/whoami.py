"""``GET /sessions/whoami`` (Kratos ``toSession``) answered from the proxy's session cache.

Apps built the Kratos way call whoami on every request they serve, so it carries more traffic
than everything else here. It resolves the token exactly as the access path does
(``SessionResolver``: a SHA-256 and a dict lookup on a hit) and renders the body once per cache
entry. Freshness is the access path's: a logout, an admin revocation, an identity disabled,
deleted or changed (traits, addresses, credentials that change the reachable AAL) and a session
that changed (step-up, refresh, extension) drop the entry in this worker at once and in every
other worker and replica through ``sidecar.session.invalidation``, within ``session.cache_ttl``
at worst (a lost pub/sub message, an unreachable store).

The raw-ASGI endpoint (``sidecar.proxy.whoami``) and the Starlette route (other methods, CORS)
both call :class:`Whoami`, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sidecar import errors, waiting
from sidecar.identity.model import Identity
from sidecar.security.tokens import digest
from sidecar.session.aal import step_up_url
from sidecar.session.model import Session
from sidecar.session.resolver import ResolvedSession, SessionResolver
from sidecar.session.session_json import session_to_json

MAX_TOKEN_LENGTH = 256
"""Longer is no token of ours (``SessionManager.resolve`` refuses the same)."""

_MEMO_KEY = "whoami"


@dataclass(frozen=True, slots=True)
class WhoamiAnswer:
    body: bytes
    """The session JSON, identity included (its public view: no credentials, no metadata_admin)."""
    identity_id: str
    """For ``X-Kratos-Authenticated-Identity-Id``."""


def _checked(token: str | None) -> str:
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise errors.SessionInactive()
    return token


def _active(resolved: ResolvedSession | None) -> tuple[ResolvedSession, Session, Identity]:
    if resolved is None or resolved.session is None or resolved.identity is None:
        raise errors.SessionInactive()
    return resolved, resolved.session, resolved.identity


class Whoami:
    def __init__(
        self,
        resolver: SessionResolver,
        *,
        required_aal: str,
        public_base_url: str,
        public_identity: Callable[[Identity], dict[str, Any]],
    ) -> None:
        """``required_aal``: ``session.whoami.required_aal``; ``public_identity``: the identity as
        self-service callers see it (``identity_to_json(admin=False)``)."""
        self._resolver = resolver
        self._required_aal = required_aal
        self._step_up = step_up_url(public_base_url)
        self._public_identity = public_identity

    async def current(self, token: str | None) -> ResolvedSession:
        """The caller's active session, or ``SessionInactive`` (``ServiceUnavailable`` on an outage)."""
        return (await self._resolve(token))[0]

    async def _resolve(self, token: str | None) -> tuple[ResolvedSession, Session, Identity]:
        return _active(await self._resolver.resolve(_checked(token)))

    async def answer(self, token: str | None) -> WhoamiAnswer:
        """Kratos' whoami: the session, or ``SessionInactive`` / ``AAL2Required``."""
        return self._answer(*await self._resolve(token))

    def answer_cached(
        self, token: str | None, later: bool = False
    ) -> WhoamiAnswer | waiting.Later[WhoamiAnswer] | None:
        """``answer`` without I/O: the same answer or error when the resolver's in-process cache
        holds the token (or none is needed), None when only the session store can tell; with
        ``later``, a ``Later`` then instead (``sidecar.waiting``), whose ``make`` gives ``answer``'s
        answer or raises its error once the store's load of the session has settled
        (``SessionResolver.loading``)."""
        key = digest(_checked(token))
        resolver = self._resolver
        found, resolved = resolver.cached_digest(key)
        if found:
            return self._answer(*_active(resolved))
        if not later:
            return None
        load = resolver.loading(key)
        return waiting.later(load, lambda: self._answer(*_active(load.result())))

    def _answer(self, resolved: ResolvedSession, session: Session, identity: Identity) -> WhoamiAnswer:
        # Kratos' DoesSessionSatisfy: highest_available wants the top level the credentials allow.
        if self._required_aal == "highest_available" and resolved.aal < resolved.available_aal:
            raise errors.AAL2Required(extra={"redirect_browser_to": self._step_up})
        memo = resolved.memo.get(_MEMO_KEY)
        if not isinstance(memo, WhoamiAnswer):
            body = session_to_json(session, self._public_identity(identity))
            memo = resolved.memo[_MEMO_KEY] = WhoamiAnswer(
                json.dumps(body, separators=(",", ":"), default=str).encode(), str(identity.id)
            )
        return memo
