"""Token → session + identity, with a bounded in-process cache in front of the stores (DESIGN §5.3).

A hit costs a SHA-256 and a dict lookup. Entries live ``ttl`` (a few seconds) or until the
session expires, whichever is first; unknown tokens are cached as misses for the same time so a
flood of made-up tokens cannot hammer the store. Revocations arrive through
``sidecar.session.invalidation`` and drop entries at once. A store outage raises
``ServiceUnavailable``: it is never mistaken for "no session" (fail closed).

Refresh ahead: a hit on a session entry in the last quarter of its life starts one background
load of that token (one per entry at a time), so a busy session's next request after the TTL
does not wait for the store. The load replaces the entry only if nothing was invalidated while
it ran (the resolver's epoch, bumped by every invalidation, is unchanged) and the entry is still
the one it refreshed: a revocation is never undone by a refresh that raced it. When the store
gives the same session and identity, the entry keeps its value (and the renderings memoised on
it) and gets a new deadline; when they changed, the new value replaces it; a failed load changes
nothing, so the entry still ends at its deadline (fail closed).

No secret is cached: an identity's credentials (password hash, TOTP secret, recovery codes,
security keys) are read once per load, for the level they allow, and dropped with the load;
entries hold the identity's public view (``ResolvedIdentity``), which is all whoami renders.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sidecar import errors
from sidecar.identity.model import Identity
from sidecar.identity.store import IdentityStore
from sidecar.organization.store import OrganizationStore
from sidecar.security.emails import InvalidEmail, canonical_email
from sidecar.security.tokens import digest
from sidecar.session.aal import Assurance
from sidecar.session.model import Session
from sidecar.session.store import SessionStore
from sidecar.slotted import builder
from sidecar.tracing import Tracing
from sidecar.waiting import Shared

log = logging.getLogger("sidecar.session")


@dataclass(frozen=True, slots=True)
class ResolvedSession:
    """What the access path needs of a session and its identity, flattened; and the two for whoami,
    which renders them (``sidecar.session.whoami``): the session as loaded, the identity in its
    public view (``Identity.public_view``: no credentials, no ``metadata_admin``, neither of which
    whoami shows), so a cached session holds no secret of its user."""

    session_id: uuid.UUID
    identity_id: uuid.UUID
    email: str | None
    aal: str
    traits: Mapping[str, Any]
    metadata_public: Any
    schema_id: str
    verified: bool
    expires_at: datetime
    authenticated_at: datetime
    available_aal: str = "aal1"
    """The highest level the identity's credentials allow (``sidecar.session.aal.Assurance``)."""
    organization_id: uuid.UUID | None = None
    organization_slug: str | None = None
    session: Session | None = field(default=None, compare=False, repr=False)
    identity: Identity | None = field(default=None, compare=False, repr=False)
    # Renderings of this entry, which are pure: per-rule headers by (rules generation, rule id),
    # the whoami body. They go with the entry when a revocation drops it.
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def roles(self) -> frozenset[str]:
        roles = self.metadata_public.get("roles") if isinstance(self.metadata_public, Mapping) else None
        if isinstance(roles, str):
            return frozenset({roles})
        if isinstance(roles, list):
            return frozenset(r for r in roles if isinstance(r, str))
        return frozenset()

    def template_context(self) -> dict[str, Any]:
        return {
            "identity": {
                "id": str(self.identity_id),
                "schema_id": self.schema_id,
                "email": self.email,
                "traits": self.traits,
                "metadata_public": self.metadata_public,
                "organization_id": str(self.organization_id) if self.organization_id else None,
                "organization": self.organization_slug,
            },
            "session": {
                "id": str(self.session_id),
                "aal": self.aal,
                "authenticated_at": self.authenticated_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            },
        }


@functools.lru_cache(maxsize=4096)
def _canonical(email: str) -> str | None:
    """``canonical_email``, None for no valid address; remembered for the last few thousand
    traits (it is pure): on a session-cache miss it cost 44k instructions, more than the rest of
    the identity's part (issue 15)."""
    try:
        return canonical_email(email)
    except InvalidEmail:
        return None


def _email_of(identity: Identity) -> str | None:
    """The canonical form (``sidecar.security.emails``) of the ``email`` trait or first email address.

    The canonical form is what the identity is known by, and it is safe in a header: no controls,
    no invisible characters, an ASCII domain. A trait that is no valid address is not passed on.
    """
    email = identity.traits.get("email") if isinstance(identity.traits, dict) else None
    if isinstance(email, str):
        canonical = _canonical(email)
        if canonical is not None:
            return canonical
    for address in identity.verifiable_addresses:
        if address.via == "email":
            return address.value
    return None


class ResolvedIdentity(NamedTuple):
    """What sessions need of one identity, worked out once per load of it and cached with it
    (``SessionResolver``'s identity cache) for all its sessions: the public view, the email, whether
    an address is verified, the highest level its credentials allow. No credential is kept. (A
    tuple: made on every session-cache miss, and a frozen dataclass costs twice as much to make.)"""

    identity: Identity
    email: str | None
    verified: bool
    available_aal: str

    @classmethod
    def of(cls, identity: Identity, available_aal: str = "aal1") -> ResolvedIdentity:
        """``identity`` as loaded (credentials included: ``available_aal`` was computed from them)."""
        return cls(
            identity.public_view(),
            _email_of(identity),
            any(a.verified for a in identity.verifiable_addresses),
            available_aal,
        )


# A ``ResolvedSession`` is made on every session-cache miss: its 16 fields cost about a third more
# through the dataclass's ``__init__`` (timeit: 2.35 -> 1.61 µs).
_make_resolved: Callable[..., ResolvedSession] = builder(ResolvedSession)


def resolved_from(
    session: Session, person: ResolvedIdentity, organization_slug: str | None = None
) -> ResolvedSession:
    identity = person.identity
    return _make_resolved(
        session_id=session.id,
        identity_id=identity.id,
        email=person.email,
        aal=session.aal,
        traits=identity.traits,
        metadata_public=identity.metadata_public,
        schema_id=identity.schema_id,
        verified=person.verified,
        expires_at=session.expires_at,
        authenticated_at=session.authenticated_at,
        available_aal=person.available_aal,
        session=session,
        identity=identity,
        organization_id=identity.organization_id,
        organization_slug=organization_slug,
        memo={},
    )


def resolved(
    session: Session, identity: Identity, available_aal: str = "aal1", organization_slug: str | None = None
) -> ResolvedSession:
    """The session of ``identity`` (as loaded) as the access path and whoami see it."""
    return resolved_from(session, ResolvedIdentity.of(identity, available_aal), organization_slug)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _pass_on(waiter: asyncio.Future[Any], load: Shared[Any]) -> None:
    """``load``'s outcome to ``waiter``, unless the waiter was cancelled meanwhile."""
    if waiter.done():
        return
    try:
        value = load.result()
    except asyncio.CancelledError:
        waiter.cancel()
    except BaseException as exc:
        waiter.set_exception(exc)
    else:
        waiter.set_result(value)


def _keep(kept: dict[Any, Any], key: Any, value: Any, size: int) -> None:
    """``kept[key] = value``, the oldest key out past ``size`` (first in, first out)."""
    if size <= 0:
        return
    if key not in kept and len(kept) >= size:
        del kept[next(iter(kept))]
    kept[key] = value


REFRESH_AHEAD = 0.25
"""The last part of an entry's life in which a hit starts its background refresh."""


@dataclass(slots=True)
class _Entry:
    value: ResolvedSession | None
    until: float  # monotonic deadline
    refresh_after: float = float("inf")  # a hit past this starts a refresh (session entries only)
    refreshing: bool = False


class SessionResolver:
    """Bounded LRU + TTL cache keyed by token digest; see the module docstring."""

    def __init__(
        self,
        sessions: SessionStore,
        identities: IdentityStore,
        *,
        ttl: timedelta,
        max_entries: int = 10000,
        identity_ttl: timedelta | None = None,
        clock: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        on_lookup: Callable[[bool], None] | None = None,
        assurance: Assurance | None = None,
        tracing: Tracing | None = None,
        organizations: OrganizationStore | None = None,
    ) -> None:
        """``assurance``: the levels identities can reach (``sidecar.strategies.registry.assurance``);
        without it every identity counts as aal1 at most. Only the credentials it reads are loaded.
        ``tracing``: spans for resolution, the store and the identity load (none, and no cost,
        when off)."""
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self._spans = tracing or Tracing.off()
        self.sessions = sessions
        self.on_lookup = on_lookup  # called with True on a cache hit, False on a miss (metrics)
        self.identities = identities
        self._assurance = assurance
        # The credential types an identity is loaded with: those its reachable level is made of.
        self._credential_types = assurance.methods if assurance is not None else frozenset()
        self._organizations = organizations
        # id -> (slug, deadline): slugs change rarely; they follow within ``identity_ttl``.
        self._slugs: dict[uuid.UUID, tuple[str | None, float]] = {}
        self.ttl = ttl.total_seconds()
        self.max_entries = max_entries
        self.clock = clock
        self.monotonic = monotonic
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._by_session: dict[uuid.UUID, str] = {}
        # identity -> the key of its one cached session, or a set of keys when it has more (a set
        # for each would be 216 bytes of every entry's ~3 kB: most identities have one session).
        self._by_identity: dict[uuid.UUID, str | set[str]] = {}
        # The loads in flight, by digest: the misses of one token while it loads wait for that one.
        self._inflight: dict[str, Shared[ResolvedSession]] = {}
        self._listeners: set[Callable[[], None]] = set()
        # Identities are cached apart from sessions (same TTL unless told otherwise), so a
        # session-cache miss costs one session-store round trip, not a SQL query as well. What is
        # cached is the identity's part of its sessions (``ResolvedIdentity``), worked out once per
        # load: never its credentials.
        self.identity_ttl = (identity_ttl if identity_ttl is not None else ttl).total_seconds()
        self._identities: OrderedDict[uuid.UUID, tuple[ResolvedIdentity | None, float]] = OrderedDict()
        # What the last load of an identity made of it (by id), kept for a load that finds the
        # very object the store gave then: the store gives the same object for a row read again
        # unchanged (``sidecar.storage.decoded``), so its part of its sessions (the email, the
        # level its credentials allow) is worked out once per content, not once per miss (issue
        # 15). Only identities without credentials; invalidations drop it; bounded as the cache.
        self._people: dict[uuid.UUID, ResolvedIdentity] = {}
        # By digest: what the last load of the token made, and of which identity part (``_load``).
        self._made: dict[str, tuple[ResolvedIdentity, ResolvedSession]] = {}
        # Bumped by every invalidation: a load that raced a revocation is returned but not cached.
        self._epoch = 0
        self._refreshes: set[asyncio.Task[None]] = set()

    async def resolve(self, token: str) -> ResolvedSession | None:
        if self.tracing is None:
            return await self.resolve_digest(digest(token))
        key = digest(token)
        with self.tracing.span("sidecar.session.resolve") as span:
            entry = self._cache.get(key)
            hit = entry is not None and entry.until > self.monotonic()
            if span is not None:
                span.set_attribute("sidecar.session.cache", "hit" if hit else "miss")
            value = await self.resolve_digest(key)
            if value is not None and span is not None:
                span.set_attribute("sidecar.session.id", str(value.session_id))
                span.set_attribute("enduser.id", str(value.identity_id))
            return value

    def cached(self, token: str) -> tuple[bool, ResolvedSession | None]:
        """``resolve`` from the in-process cache alone, for answers made without I/O: (True, the
        session, or None for a cached "no session") on a hit, counted as ``resolve`` counts it;
        (False, None) when only the store can answer, with nothing counted or changed."""
        return self._hit(digest(token))

    def cached_digest(self, key: str) -> tuple[bool, ResolvedSession | None]:
        """``cached`` for the token whose digest (``sidecar.security.tokens.digest``) is ``key``."""
        return self._hit(key)

    def holds(self, key: str) -> bool:
        """Whether the cache holds an unexpired entry for the token whose digest is ``key`` (a
        ``cached_digest`` would find it): nothing counted, refreshed or changed."""
        entry = self._cache.get(key)
        return entry is not None and entry.until > self.monotonic()

    def still_cached(self, key: str, value: ResolvedSession | None) -> bool:
        """For an answer remembered from an earlier ``cached`` hit on the token whose digest is
        ``key``: True, counted and refreshed as ``cached`` counts a hit, when the entry is unexpired
        and still holds ``value`` (the same object: one loaded again after a revocation is
        another); else False, with nothing counted or changed."""
        entry = self._cache.get(key)
        if entry is None or entry.value is not value:
            return False
        now = self.monotonic()
        if entry.until <= now:
            return False
        if now >= entry.refresh_after:
            self._refresh_ahead(key, entry)
        self._cache.move_to_end(key)
        if self.on_lookup is not None:
            self.on_lookup(True)
        return True

    def _hit(self, key: str) -> tuple[bool, ResolvedSession | None]:
        entry = self._cache.get(key)
        if entry is None:
            return False, None
        now = self.monotonic()
        if entry.until <= now:
            return False, None
        if now >= entry.refresh_after:
            self._refresh_ahead(key, entry)
        self._cache.move_to_end(key)
        if self.on_lookup is not None:
            self.on_lookup(True)
        return True, entry.value

    def _refresh_ahead(self, key: str, entry: _Entry) -> None:
        if entry.refreshing:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to run it on: the entry expires as it would have
            return
        entry.refreshing = True
        task = loop.create_task(self._refresh(key, entry, self._epoch))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _refresh(self, key: str, entry: _Entry, epoch: int) -> None:
        try:
            value = await self._load(key, fresh=True)
        except Exception:  # the store is down: the entry ends at its deadline (fail closed)
            log.debug("refreshing a cached session failed; it expires at its deadline", exc_info=True)
            entry.refreshing = False
            return
        if epoch != self._epoch or self._cache.get(key) is not entry:
            entry.refreshing = False  # a later hit may try again while the entry lives
            return  # invalidated, dropped or replaced meanwhile: never bring it back
        old = entry.value
        if (
            value is not None
            and old is not None
            and value == old
            and value.session == old.session
            and value.identity == old.identity
        ):
            # Unchanged: the same value (its memoised renderings stay valid), a new deadline.
            self._deadline(entry, value)
            entry.refreshing = False
        else:
            self._drop(key)
            self._store(key, value)

    async def resolve_digest(self, key: str) -> ResolvedSession | None:
        """``resolve`` for the token whose digest (``sidecar.security.tokens.digest``) is ``key``,
        for a caller that has it from ``cached_digest`` (the SHA-256 is not made again). No spans:
        with tracing on, callers take ``resolve``."""
        found, value = self._hit(key)
        if found:
            return value
        load = self.loading(key)
        # A future of its own, so a caller cancelled (its client gone) never cancels the load the
        # others wait for: ``asyncio.shield``'s guarantee without its per-call machinery.
        waiter: asyncio.Future[ResolvedSession | None] = asyncio.get_running_loop().create_future()
        load.subscribe(functools.partial(_pass_on, waiter, load))
        return await waiter

    def loading(self, key: str) -> Shared[ResolvedSession]:
        """The store's load of the token whose digest is ``key``, for a caller that found it missing
        from the cache (``cached_digest``): counted as ``resolve`` counts a miss, and shared: the
        load in flight for that token when there is one (concurrent misses of one token make one
        store round trip), else a new one, in a task of its own. It settles with the session (None:
        no valid one) or the store's error (``ServiceUnavailable`` on an outage), and is cached
        then unless an invalidation came meanwhile (a load that raced a revocation is given to
        those who asked before it, never cached, and never joined by a request after it:
        ``_notify``)."""
        self._drop(key)  # expired (or absent: then nothing to drop)
        if self.on_lookup is not None:
            self.on_lookup(False)
        load = self._inflight.get(key)
        if load is None:
            load = self._inflight[key] = Shared()
            load.task = asyncio.get_running_loop().create_task(self._fill(key, load, self._epoch))
        return load

    async def _fill(self, key: str, load: Shared[ResolvedSession], epoch: int) -> None:
        """``loading``'s task: the load, cached, then settled (its waiters answered)."""
        try:
            value = await self._load(key)
        except BaseException as exc:  # (a cancellation too: the waiters get it, then it goes on)
            if self._inflight.get(key) is load:
                del self._inflight[key]
            load.settle(error=exc)
            if not isinstance(exc, Exception):
                raise
            return
        if epoch == self._epoch and self.ttl > 0:
            self._store(key, value)
        if self._inflight.get(key) is load:
            del self._inflight[key]
        load.settle(value)

    async def _load(self, key: str, *, fresh: bool = False) -> ResolvedSession | None:
        """``fresh``: the identity from the store too, not from its cache (a refresh: the entry's
        new deadline must not outlive what the identity cache held)."""
        try:
            with self._spans.span("sidecar.session.store"):
                session = await self.sessions.get_by_token(key)
            if session is None or not session.is_valid(self.clock()):
                return None
            person = await self._identity(session.identity_id, fresh=fresh)
            slug = await self._slug(person.identity.organization_id) if person is not None else None
        except errors.SidecarError:
            raise
        except Exception as exc:  # a backend that leaked its own error type is still an outage
            raise errors.ServiceUnavailable("the session store is unavailable") from exc
        if person is None:
            return None
        # The value the last load of this token made, when made of the very objects this one read
        # (the stores give the same object for a record read again unchanged: ``sidecar.storage.
        # decoded``; the identity's part is kept by identity): it is a pure function of them, and
        # being the same object it vouches, as a cache entry does, for the answers remembered
        # from it (``Access`` replays; issue 15). A record changed in any way is another object.
        kept = self._made.get(key)
        if kept is not None and kept[0] is person:
            value = kept[1]
            if value.session is session and value.organization_slug == slug:
                return value
        value = resolved_from(session, person, slug)
        _keep(self._made, key, (person, value), self.max_entries)
        return value

    async def _slug(self, organization_id: uuid.UUID | None) -> str | None:
        if organization_id is None or self._organizations is None:
            return None
        now = self.monotonic()
        hit = self._slugs.get(organization_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await self._organizations.get(organization_id)
        slug = found.slug if found is not None else None
        if len(self._slugs) >= self.max_entries:
            self._slugs.clear()
        self._slugs[organization_id] = (slug, now + self.identity_ttl)
        return slug

    async def _identity(self, identity_id: uuid.UUID, *, fresh: bool = False) -> ResolvedIdentity | None:
        """The identity's part of its sessions, None when it is gone or not active."""
        hit = self._identities.get(identity_id)
        now = self.monotonic()
        if hit is not None and hit[1] > now and not fresh:
            return hit[0]
        epoch = self._epoch
        with self._spans.span("sidecar.identity.load") as span:
            identity = await self.identities.get_for_session(identity_id, self._credential_types)
            if span is not None:
                span.set_attribute("sidecar.identity.found", identity is not None)
        person: ResolvedIdentity | None = None
        if identity is not None and identity.state == "active":
            known = self._people.get(identity_id)
            if known is not None and known.identity is identity:
                person = known  # the very identity read before: what it allows is as it was
            else:
                level = self._assurance.available_aal(identity) if self._assurance is not None else "aal1"
                person = ResolvedIdentity.of(identity, level)
                # Only an identity that is its own public view (no credentials) is kept.
                if person.identity is identity and epoch == self._epoch:
                    _keep(self._people, identity_id, person, self.max_entries)
        del identity  # its credentials go with this load; nothing cached refers to them
        if epoch == self._epoch and self.identity_ttl > 0:
            self._identities[identity_id] = (person, now + self.identity_ttl)
            self._identities.move_to_end(identity_id)
            while len(self._identities) > self.max_entries:
                self._identities.popitem(last=False)
        return person

    def _deadline(self, entry: _Entry, value: ResolvedSession) -> None:
        now = self.monotonic()
        ttl = min(self.ttl, (value.expires_at - self.clock()).total_seconds())
        entry.until = now + ttl
        entry.refresh_after = now + self.ttl * (1 - REFRESH_AHEAD)

    def _store(self, key: str, value: ResolvedSession | None) -> None:
        entry = _Entry(value, self.monotonic() + self.ttl)
        if value is not None:
            self._deadline(entry, value)
            self._by_session[value.session_id] = key
            known = self._by_identity.get(value.identity_id)
            if known is None:
                self._by_identity[value.identity_id] = key
            elif isinstance(known, set):
                known.add(key)
            elif known != key:
                self._by_identity[value.identity_id] = {known, key}
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._drop(next(iter(self._cache)))

    def _drop(self, key: str) -> None:
        entry = self._cache.pop(key, None)
        if entry is None or entry.value is None:
            return
        self._by_session.pop(entry.value.session_id, None)
        identity_id = entry.value.identity_id
        keys = self._by_identity.get(identity_id)
        if keys == key:
            del self._by_identity[identity_id]
        elif isinstance(keys, set):
            keys.discard(key)
            if len(keys) == 1:
                self._by_identity[identity_id] = keys.pop()

    def _notify(self) -> None:
        self._epoch += 1
        self._inflight.clear()
        self._made.clear()
        for listener in list(self._listeners):
            listener()

    def invalidate_session(self, session_id: uuid.UUID) -> None:
        key = self._by_session.get(session_id)
        if key is not None:
            self._drop(key)
        self._notify()

    def invalidate_identity(self, identity_id: uuid.UUID) -> None:
        self._identities.pop(identity_id, None)
        self._people.pop(identity_id, None)
        keys = self._by_identity.get(identity_id)
        for key in [keys] if isinstance(keys, str) else list(keys or ()):
            self._drop(key)
        self._notify()

    def invalidate_all(self) -> None:
        self._cache.clear()
        self._by_session.clear()
        self._by_identity.clear()
        self._identities.clear()
        self._slugs.clear()
        self._people.clear()
        self._notify()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Called after every invalidation: long-lived connections (WebSockets) re-check then."""
        self._listeners.add(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.discard(listener)
