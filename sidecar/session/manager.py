"""Session lifecycle: issue, resolve, refresh, extend, revoke (kratos-api.md §3.2, §6).

Tokens come from ``security.tokens`` (CSPRNG, ``ory_st_`` + 32 alphanumerics); stores keep only
their SHA-256 digest. Every revocation is published on ``revocations`` so in-process caches in
front of the store (the access proxy's resolver, in every worker) drop the session at once.

Sessions follow their identity: the identity manager tells this manager (``IdentityObserver``)
when an identity changed, so cached copies are dropped, and when it was deleted, so its sessions
go with it (Kratos deletes them in the same transaction).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from sidecar.config.model import SessionConfig
from sidecar.identity.model import utcnow
from sidecar.security import tokens
from sidecar.session.model import AuthenticationMethod, Device, ProviderSignIn, Session
from sidecar.session.store import SessionStore


class RevocationChannel(Protocol):
    """``sidecar.session.invalidation.Invalidation``: tells every worker's session cache."""

    async def publish(
        self, session_id: uuid.UUID | None = None, identity_id: uuid.UUID | None = None
    ) -> None: ...


class _NoCache:
    """For a manager with no cache in front of its store (tools, tests)."""

    async def publish(
        self, session_id: uuid.UUID | None = None, identity_id: uuid.UUID | None = None
    ) -> None:
        return None


@dataclass(frozen=True, slots=True)
class IssuedSession:
    session: Session
    token: str


class SessionManager:
    def __init__(
        self, store: SessionStore, config: SessionConfig, revocations: RevocationChannel | None = None
    ) -> None:
        self._store = store
        self._config = config
        self._revocations = revocations or _NoCache()

    @property
    def config(self) -> SessionConfig:
        return self._config

    async def _changed(self, session: Session) -> None:
        """Store a changed session and drop cached copies everywhere: the proxy and whoami show
        its AAL, methods and expiry, and a step-up must count on the very next request."""
        await self._store.update(session)
        await self._revocations.publish(session_id=session.id)

    async def _revoked(self, sessions: list[Session]) -> None:
        for session in sessions:
            await self._revocations.publish(session_id=session.id)

    async def issue(
        self,
        identity_id: uuid.UUID,
        method: str,
        *,
        aal: str = "aal1",
        device: Device | None = None,
        via: ProviderSignIn | None = None,
    ) -> IssuedSession:
        """A brand-new session and token; an existing cookie is never reused (no fixation).
        ``via``: the provider sign-in that proved ``method`` (kept for its single logout)."""
        now = utcnow()
        session = Session(
            identity_id=identity_id,
            expires_at=now + self._config.lifespan,
            issued_at=now,
            authenticated_at=now,
            aal=aal,
            authentication_methods=(AuthenticationMethod.of(method, aal, now, via),),
            devices=(device,) if device else (),
        )
        token = tokens.new_session_token()
        await self._store.create(session, tokens.digest(token))
        return IssuedSession(session, token)

    async def resolve(self, token: str | None, now: datetime | None = None) -> Session | None:
        """The active, unexpired session for ``token``; None otherwise (also for malformed tokens)."""
        if not token or len(token) > 256:
            return None
        session = await self._store.get_by_token(tokens.digest(token))
        if session is None or not session.is_valid(now or utcnow()):
            return None
        return session

    async def get(self, session_id: uuid.UUID) -> Session | None:
        return await self._store.get(session_id)

    async def reauthenticate(
        self, session: Session, method: str, *, aal: str | None = None, via: ProviderSignIn | None = None
    ) -> Session:
        """``refresh=true`` or a step-up: same session id and token, new ``authenticated_at``."""
        now = utcnow()
        level = aal or session.aal
        updated = replace(
            session,
            authenticated_at=now,
            aal=max(level, session.aal),
            authentication_methods=(
                *session.authentication_methods,
                AuthenticationMethod.of(method, level, now, via),
            ),
        )
        await self._changed(updated)
        return updated

    async def add_authentication_method(self, session: Session, method: str, aal: str) -> Session:
        """A factor proven inside a settings flow (e.g. enrolling TOTP): the AAL may rise, but
        ``authenticated_at`` stays, so the privileged window is not extended (Kratos does the same)."""
        now = utcnow()
        updated = replace(
            session,
            aal=max(aal, session.aal),
            authentication_methods=(
                *session.authentication_methods,
                AuthenticationMethod(method=method, aal=aal, completed_at=now),
            ),
        )
        await self._changed(updated)
        return updated

    async def extend(self, session_id: uuid.UUID) -> Session | None:
        """Push ``expires_at`` to now + lifespan; a call before ``earliest_possible_extend`` is a no-op."""
        session = await self._store.get(session_id)
        if session is None:
            return None
        now = utcnow()
        earliest = self._config.earliest_possible_extend
        if earliest is not None and session.expires_at - now > earliest:
            return session
        updated = replace(session, expires_at=now + self._config.lifespan)
        await self._changed(updated)
        return updated

    async def bind_logout_token(self, session: Session) -> str:
        token = tokens.new_logout_token()
        await self._store.update(replace(session, logout_token_digest=tokens.digest(token)))
        return token

    @staticmethod
    def logout_token_matches(session: Session, token: str) -> bool:
        expected = session.logout_token_digest
        return expected is not None and tokens.equal(expected, tokens.digest(token))

    async def revoke(self, session: Session) -> bool:
        changed = await self._store.revoke(session.id)
        await self._revoked([session])
        return changed

    async def revoke_others(self, identity_id: uuid.UUID, except_id: uuid.UUID | None) -> int:
        victims = [
            s for s in await self._store.list_by_identity(identity_id, active_only=True) if s.id != except_id
        ]
        count = await self._store.revoke_all(identity_id, except_id=except_id)
        await self._revoked(victims)
        return count

    async def revoke_provider_sessions(
        self,
        identity_id: uuid.UUID,
        method: str,
        provider: str,
        subject: str,
        session_indexes: tuple[str, ...],
    ) -> int:
        """An identity provider's single logout (SAML core §3.7.3.2): the identity's active sessions
        that ``provider`` signed in for ``subject`` with one of ``session_indexes``; with none
        given, every session of the identity."""
        if not session_indexes:
            return await self.revoke_others(identity_id, None)
        wanted = set(session_indexes)
        victims = [
            s
            for s in await self._store.list_by_identity(identity_id, active_only=True)
            if any(
                m.method == method
                and m.provider == provider
                and m.subject == subject
                and m.session_index in wanted
                for m in s.authentication_methods
            )
        ]
        for session in victims:
            await self._store.revoke(session.id)
        await self._revoked(victims)
        return len(victims)

    async def delete_for_identity(self, identity_id: uuid.UUID) -> int:
        """Kratos' admin "delete all sessions of an identity": rows go, caches are told."""
        victims = await self._store.list_by_identity(identity_id)
        count = await self._store.delete_by_identity(identity_id)
        await self._revoked(victims)
        return count

    # --- sessions follow their identity (``sidecar.identity.manager.IdentityObserver``) ----------

    async def identity_changed(self, identity_id: uuid.UUID) -> None:
        """Cached sessions of the identity are dropped everywhere: a disabled identity stops
        passing the proxy now, not after ``session.cache_ttl``, and new traits show at once."""
        await self._revocations.publish(identity_id=identity_id)

    async def identity_deleted(self, identity_id: uuid.UUID) -> None:
        """A deleted identity's sessions go with it."""
        await self._store.delete_by_identity(identity_id)
        await self._revocations.publish(identity_id=identity_id)

    async def list_for_identity(self, identity_id: uuid.UUID, *, active_only: bool = False) -> list[Session]:
        return await self._store.list_by_identity(identity_id, active_only=active_only)

    async def list_all(
        self, *, page_size: int, after: uuid.UUID | None = None, active: bool | None = None
    ) -> list[Session]:
        return await self._store.list_all(page_size=page_size, after=after, active=active)
