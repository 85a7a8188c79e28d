"""SessionResolver: cache hits, TTL, revocation, bounds, and outages that fail closed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Collection
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar import errors
from sidecar.identity.model import Identity, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.invalidation import PollingInvalidation, RedisInvalidation
from sidecar.session.model import Session
from sidecar.session.resolver import SessionResolver


class CountingStore:
    """Wraps a real store and counts calls; ``down`` simulates an outage."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.down = False

    async def get_by_token(self, token_digest: str) -> Session | None:
        self.calls += 1
        if self.down:
            raise errors.ServiceUnavailable("down")
        result: Session | None = await self.inner.get_by_token(token_digest)
        return result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    from sidecar.storage.sql.database import SqlDatabase

    database = SqlDatabase(f"sqlite:///{tmp_path}/r.db")
    await database.migrate()
    yield database
    await database.close()


async def signed_in(db: Any, **session_kw: Any) -> tuple[Identity, Session, str]:
    identity = await db.identities.create(
        Identity(schema_id="default", traits={"email": "a@example.com"}, metadata_public={"roles": ["x"]})
    )
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), **session_kw)
    token = new_session_token()
    await db.sessions.create(session, digest(token))
    return identity, session, token


async def test_resolves_and_caches(db: Any) -> None:
    identity, session, token = await signed_in(db, aal="aal2")
    store, clock = CountingStore(db.sessions), Clock()
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5), monotonic=clock)  # type: ignore[arg-type]
    got = await resolver.resolve(token)
    assert got is not None
    assert (got.identity_id, got.session_id, got.email, got.aal) == (
        identity.id,
        session.id,
        "a@example.com",
        "aal2",
    )
    assert got.roles == {"x"}
    assert await resolver.resolve(token) is got and store.calls == 1
    clock.now += 6
    assert await resolver.resolve(token) == got and store.calls == 2


async def test_unknown_tokens_are_cached_misses(db: Any) -> None:
    store, clock = CountingStore(db.sessions), Clock()
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5), monotonic=clock)  # type: ignore[arg-type]
    assert await resolver.resolve("ory_st_nope") is None
    assert await resolver.resolve("ory_st_nope") is None
    assert store.calls == 1


async def test_concurrent_misses_share_one_lookup(db: Any) -> None:
    _, _, token = await signed_in(db)
    store = CountingStore(db.sessions)
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5))  # type: ignore[arg-type]
    results = await asyncio.gather(*(resolver.resolve(token) for _ in range(20)))
    assert store.calls == 1 and len({r.session_id for r in results if r}) == 1


class HeldStore(CountingStore):
    """A session store whose reads wait for ``release`` (set), or fail with ``fail`` when set."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.release = asyncio.Event()
        self.fail: BaseException | None = None

    async def get_by_token(self, token_digest: str) -> Session | None:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        result: Session | None = await self.inner.get_by_token(token_digest)
        return result


async def test_a_waiter_cancelled_leaves_the_shared_lookup_to_the_others(db: Any) -> None:
    """One of the misses sharing a lookup goes away (its client left, its task cancelled): the
    lookup goes on and the other misses get its session, from the one store read."""
    _, session, token = await signed_in(db)
    store = HeldStore(db.sessions)
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    first = asyncio.ensure_future(resolver.resolve(token))
    await asyncio.sleep(0)
    waiters = [asyncio.ensure_future(resolver.resolve(token)) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    await asyncio.sleep(0)
    store.release.set()
    found = await first
    assert found is not None and found.session_id == session.id
    assert waiters[0].cancelled()
    for waiter in waiters[1:]:
        assert (await waiter) is found
    assert store.calls == 1
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert not unhandled, unhandled  # nothing handed to a cancelled waiter


async def test_the_misses_sharing_a_lookup_share_its_outage(db: Any) -> None:
    _, _, token = await signed_in(db)
    store = HeldStore(db.sessions)
    store.fail = errors.ServiceUnavailable("down")
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5))  # type: ignore[arg-type]
    misses = [asyncio.ensure_future(resolver.resolve(token)) for _ in range(4)]
    await asyncio.sleep(0)
    store.release.set()
    outcomes = await asyncio.gather(*misses, return_exceptions=True)
    assert all(isinstance(o, errors.ServiceUnavailable) for o in outcomes), outcomes
    assert store.calls == 1


async def test_a_miss_after_a_revocation_never_joins_the_load_that_raced_it(db: Any) -> None:
    """A load in flight when the session is revoked may have read it before: those who asked before
    get what it read (they were concurrent with the revocation), it is not cached, and a request
    after the revocation waits for a load of its own, which finds no session. Fails when an
    invalidation leaves the load in flight to be joined (``_notify`` not clearing ``_inflight``)."""
    _, session, token = await signed_in(db)
    store = HeldStore(db.sessions)
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5))  # type: ignore[arg-type]
    before = asyncio.ensure_future(resolver.resolve(token))
    for _ in range(5):
        await asyncio.sleep(0)
    assert store.calls == 1
    # The read in flight has the session (as a store read a moment before the revocation would).
    raced = await db.sessions.get_by_token(digest(token))
    store.inner = RacedStore(db.sessions, raced)
    assert await db.sessions.revoke(session.id)
    resolver.invalidate_session(session.id)
    after = asyncio.ensure_future(resolver.resolve(token))
    for _ in range(5):
        await asyncio.sleep(0)
    store.release.set()
    found = await before
    assert found is not None and found.session_id == session.id
    store.inner = db.sessions
    assert await after is None and store.calls == 2
    assert await resolver.resolve(token) is None  # the raced load was not cached


class RacedStore:
    """A store that still gives the session it had (read before a revocation), once."""

    def __init__(self, inner: Any, raced: Session | None) -> None:
        self.inner = inner
        self.raced = raced

    async def get_by_token(self, token_digest: str) -> Session | None:
        raced, self.raced = self.raced, None
        if raced is not None:
            return raced
        result: Session | None = await self.inner.get_by_token(token_digest)
        return result


async def test_revoked_expired_and_inactive_identity_are_no_session(db: Any) -> None:
    _, session, token = await signed_in(db)
    resolver = SessionResolver(db.sessions, db.identities, ttl=timedelta(seconds=5))
    assert await resolver.resolve(token) is not None
    await db.sessions.revoke(session.id)
    assert await resolver.resolve(token) is not None  # still cached ...
    resolver.invalidate_session(session.id)
    assert await resolver.resolve(token) is None  # ... until the revocation arrives
    identity2, _, token2 = await signed_in(db)
    await db.identities.update(replace(identity2, state="inactive"))
    assert await resolver.resolve(token2) is None


async def test_invalidate_identity_drops_all_its_sessions(db: Any) -> None:
    identity, _, t1 = await signed_in(db)
    s2 = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    t2 = new_session_token()
    await db.sessions.create(s2, digest(t2))
    store = CountingStore(db.sessions)
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=60))  # type: ignore[arg-type]
    await resolver.resolve(t1)
    await resolver.resolve(t2)
    resolver.invalidate_identity(identity.id)
    await resolver.resolve(t1)
    await resolver.resolve(t2)
    assert store.calls == 4


async def test_cache_is_bounded(db: Any) -> None:
    resolver = SessionResolver(db.sessions, db.identities, ttl=timedelta(seconds=60), max_entries=3)
    for i in range(10):
        await resolver.resolve(f"ory_st_{i}")
    assert len(resolver._cache) == 3


async def test_outage_raises_service_unavailable_not_none(db: Any) -> None:
    _, _, token = await signed_in(db)
    store = CountingStore(db.sessions)
    store.down = True
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=5))  # type: ignore[arg-type]
    with pytest.raises(errors.ServiceUnavailable):
        await resolver.resolve(token)
    store.down = False
    assert await resolver.resolve(token) is not None  # nothing bad was cached


async def test_redis_outage_is_service_unavailable(db: Any) -> None:
    from sidecar.storage.redis.backend import RedisBackend
    from tests.conftest import free_port

    redis = RedisBackend(f"redis://127.0.0.1:{free_port()}/0", "x:")
    try:
        resolver = SessionResolver(redis.sessions, db.identities, ttl=timedelta(seconds=5))
        with pytest.raises(errors.ServiceUnavailable):
            await resolver.resolve(new_session_token())
    finally:
        await redis.close()


async def test_redis_pubsub_invalidation_reaches_other_workers(
    db: Any, redis_url: str, unique_prefix: str
) -> None:
    from sidecar.storage.redis.backend import RedisBackend

    _, session, token = await signed_in(db)
    a, b = RedisBackend(redis_url, unique_prefix), RedisBackend(redis_url, unique_prefix)
    worker = SessionResolver(db.sessions, db.identities, ttl=timedelta(seconds=60))
    sub = RedisInvalidation(b.client, worker, channel=unique_prefix + "revocations")
    pub = RedisInvalidation(a.client, None, channel=unique_prefix + "revocations")
    try:
        await sub.start()
        await asyncio.wait_for(sub.subscribed.wait(), 5)
        assert await worker.resolve(token) is not None
        await db.sessions.revoke(session.id)
        await pub.publish(session_id=session.id)
        for _ in range(50):
            if await worker.resolve(token) is None:
                break
            await asyncio.sleep(0.02)
        assert await worker.resolve(token) is None
    finally:
        await sub.stop()
        await a.close()
        await b.close()


async def test_sql_polling_invalidation(db: Any) -> None:
    _, session, token = await signed_in(db)
    worker = SessionResolver(db.sessions, db.identities, ttl=timedelta(seconds=60))
    sub = PollingInvalidation(db.kv, worker, interval=0.05)
    await sub.start()
    try:
        assert await worker.resolve(token) is not None
        await db.sessions.revoke(session.id)
        await PollingInvalidation(db.kv, None).publish(session_id=session.id)
        # The poller (every 50 ms) drops the cached session; until then the cache answers.
        deadline = asyncio.get_running_loop().time() + 10
        while await worker.resolve(token) is not None:
            assert asyncio.get_running_loop().time() < deadline, "the invalidation was never heard"
            await asyncio.sleep(0.05)
    finally:
        await sub.stop()


async def test_listeners_hear_every_invalidation(db: Any) -> None:
    resolver = SessionResolver(db.sessions, db.identities, ttl=timedelta(seconds=5))
    heard: list[int] = []
    resolver.add_listener(lambda: heard.append(1))
    resolver.invalidate_session(uuid.uuid4())
    resolver.invalidate_identity(uuid.uuid4())
    resolver.invalidate_all()
    assert len(heard) == 3


async def test_session_miss_reuses_the_cached_identity(db: Any) -> None:
    identity, _, t1 = await signed_in(db)
    t2 = new_session_token()
    await db.sessions.create(
        Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1)), digest(t2)
    )

    class CountingIdentities:
        calls = 0

        async def get_for_session(self, identity_id: uuid.UUID, types: Collection[str]) -> Identity | None:
            CountingIdentities.calls += 1
            result: Identity | None = await db.identities.get_for_session(identity_id, types)
            return result

    resolver = SessionResolver(
        db.sessions,
        CountingIdentities(),  # type: ignore[arg-type]
        ttl=timedelta(0),
        identity_ttl=timedelta(seconds=60),
    )
    for token in (t1, t2, t1, t2):
        assert await resolver.resolve(token) is not None
    assert CountingIdentities.calls == 1
    resolver.invalidate_identity(identity.id)
    await resolver.resolve(t1)
    assert CountingIdentities.calls == 2


async def test_still_cached_vouches_only_for_the_entry_that_was_read(db: Any) -> None:
    """What a remembered answer (``sidecar.http_protocol``) relies on: the same unexpired entry,
    counted as a hit; anything else is False with nothing counted or refreshed."""
    _, session, token = await signed_in(db)
    clock, lookups = Clock(), list[bool]()
    resolver = SessionResolver(
        db.sessions, db.identities, ttl=timedelta(seconds=5), monotonic=clock, on_lookup=lookups.append
    )
    got = await resolver.resolve(token)
    key = digest(token)
    assert got is not None and lookups == [False]
    assert resolver.still_cached(key, got) and lookups == [False, True]
    assert not resolver.still_cached(key, replace(got))  # equal, but not the entry read
    assert not resolver.still_cached(digest(new_session_token()), got)
    assert lookups == [False, True]
    resolver.invalidate_session(session.id)
    assert not resolver.still_cached(key, got)
    again = await resolver.resolve(token)
    assert again == got and again is not got
    assert not resolver.still_cached(key, got) and resolver.still_cached(key, again)
    clock.now += 6  # expired
    before = list(lookups)
    assert not resolver.still_cached(key, again) and lookups == before
    unknown = new_session_token()
    assert await resolver.resolve(unknown) is None  # a cached "no session" is an entry too
    assert resolver.still_cached(digest(unknown), None)
    assert not resolver.still_cached(digest(unknown), again)


# --- refresh ahead: a busy session never waits for the store, and never outlives a revocation ---


class GatedStore(CountingStore):
    """``CountingStore`` whose reads, once ``hold`` is set, wait for ``gate`` before they return
    what they read (an answer that is stale by the time it arrives)."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.hold = False
        self.gate = asyncio.Event()

    async def get_by_token(self, token_digest: str) -> Session | None:
        found = await super().get_by_token(token_digest)
        if self.hold:
            await self.gate.wait()
        return found


@pytest.fixture(params=["sql", "redis"])
async def session_store(request: pytest.FixtureRequest, db: Any, unique_prefix: str) -> Any:
    """The session store of either backend (identities stay in ``db``)."""
    if request.param == "sql":
        yield db.sessions
        return
    from sidecar.storage.redis.backend import RedisBackend

    redis = RedisBackend(request.getfixturevalue("redis_url"), unique_prefix)
    yield redis.sessions
    await redis.close()


async def signed_in_to(store: Any, db: Any) -> tuple[Session, str]:
    identity = await db.identities.create(Identity(schema_id="default", traits={"email": "r@example.com"}))
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    token = new_session_token()
    await store.create(session, digest(token))
    return session, token


async def settled(resolver: SessionResolver) -> None:
    """Until the resolver's background refreshes are done."""
    while resolver._refreshes:
        await asyncio.gather(*resolver._refreshes)


async def test_a_hit_late_in_its_life_refreshes_the_entry_ahead(db: Any, session_store: Any) -> None:
    _, token = await signed_in_to(session_store, db)
    store, clock = CountingStore(session_store), Clock()
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=4), monotonic=clock)  # type: ignore[arg-type]
    got = await resolver.resolve(token)
    assert got is not None and store.calls == 1
    clock.now += 2.5  # not yet in the last quarter
    assert await resolver.resolve(token) is got
    await settled(resolver)
    assert store.calls == 1
    clock.now += 1  # 3.5 of 4 s: the hit answers at once and starts one refresh
    assert await resolver.resolve(token) is got
    assert resolver.cached(token) == (True, got)  # a second hit meanwhile: no second refresh
    await settled(resolver)
    assert store.calls == 2
    clock.now += 1.5  # past the first deadline (4 s), within the refreshed one
    assert resolver.cached(token) == (True, got)  # the same value: its memo and replays stay valid
    assert resolver.still_cached(digest(token), got)
    assert await resolver.resolve(token) is got and store.calls == 2


async def test_a_refresh_that_raced_an_invalidation_is_dropped(db: Any, session_store: Any) -> None:
    session, token = await signed_in_to(session_store, db)
    store, clock = GatedStore(session_store), Clock()
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=4), monotonic=clock)  # type: ignore[arg-type]
    assert await resolver.resolve(token) is not None
    await session_store.update(replace(session, aal="aal2"))  # so the refresh would replace it
    clock.now += 3.5
    store.hold = True
    assert resolver.cached(token)[0]  # starts the refresh, which reads the active session
    while store.calls < 2:
        await asyncio.sleep(0)
    await session_store.revoke(session.id)  # revoked while the refresh's answer is under way
    resolver.invalidate_session(session.id)
    store.gate.set()
    await settled(resolver)
    assert resolver.cached(token) == (False, None)  # not brought back by the refresh
    store.hold = False
    assert await resolver.resolve(token) is None


async def test_a_failed_refresh_does_not_extend_the_entry(db: Any, session_store: Any) -> None:
    _, token = await signed_in_to(session_store, db)
    store, clock = CountingStore(session_store), Clock()
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=4), monotonic=clock)  # type: ignore[arg-type]
    got = await resolver.resolve(token)
    clock.now += 3.5
    store.down = True
    assert resolver.cached(token) == (True, got)  # refresh started; it fails
    await settled(resolver)
    assert store.calls == 2
    clock.now += 0.6  # past the deadline it had
    assert resolver.cached(token) == (False, None)
    with pytest.raises(errors.ServiceUnavailable):  # fail closed
        await resolver.resolve(token)


async def test_a_refresh_that_finds_a_change_replaces_the_value(db: Any, session_store: Any) -> None:
    session, token = await signed_in_to(session_store, db)
    store, clock = CountingStore(session_store), Clock()
    resolver = SessionResolver(store, db.identities, ttl=timedelta(seconds=4), monotonic=clock)  # type: ignore[arg-type]
    got = await resolver.resolve(token)
    assert got is not None and got.aal == "aal1"
    await session_store.update(replace(session, aal="aal2"))  # unpublished: only the TTL bounds it
    clock.now += 3.5
    assert resolver.cached(token) == (True, got)
    await settled(resolver)
    found, now = resolver.cached(token)
    assert found and now is not None and now.aal == "aal2"
    assert not resolver.still_cached(digest(token), got)


@pytest.mark.parametrize(
    "trait",
    [
        "a@example.com",
        "A@EXAMPLE.com",
        " b@Example.COM ",
        "ÄB@exämple.test",
        "not an address",
        "a@@b",
        7,
        None,
    ],
)
def test_the_email_is_the_canonical_trait_or_the_first_email_address_every_time(trait: Any) -> None:
    """Differential against ``canonical_email`` (the resolver remembers its answers): the same on
    the first and every later load, an invalid trait falling back to the address."""
    from sidecar.identity.model import VerifiableAddress
    from sidecar.security.emails import InvalidEmail, canonical_email
    from sidecar.session.resolver import ResolvedIdentity

    identity = Identity(
        schema_id="default",
        traits={"email": trait},
        verifiable_addresses=(
            VerifiableAddress(value="+15550100", via="sms"),
            VerifiableAddress(value="fallback@example.com"),
        ),
    )
    try:
        expected = canonical_email(trait) if isinstance(trait, str) else "fallback@example.com"
    except InvalidEmail:
        expected = "fallback@example.com"
    assert [ResolvedIdentity.of(identity).email for _ in range(3)] == [expected] * 3


async def test_the_identity_index_follows_every_entry(db: Any) -> None:
    """``_by_identity`` (a key, or a set of keys for an identity with more than one cached session)
    names exactly the cached sessions of each identity through loads, revocations, identity
    invalidations and evictions, so an identity's invalidation drops every one of them."""
    import random

    people = []
    for _ in range(4):
        identity, _, first = await signed_in(db)
        tokens = [first]
        for _ in range(2):
            token = new_session_token()
            await db.sessions.create(
                Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1)), digest(token)
            )
            tokens.append(token)
        people.append((identity, tokens))
    resolver = SessionResolver(db.sessions, db.identities, ttl=timedelta(hours=1), max_entries=7)

    def check() -> None:
        cached: dict[uuid.UUID, set[str]] = {}
        for key, entry in resolver._cache.items():
            if entry.value is not None:
                cached.setdefault(entry.value.identity_id, set()).add(key)
        index = {i: {k} if isinstance(k, str) else set(k) for i, k in resolver._by_identity.items()}
        assert index == cached

    rng = random.Random(15)
    for _ in range(300):
        identity, tokens = rng.choice(people)
        action = rng.random()
        if action < 0.6:
            assert await resolver.resolve(rng.choice(tokens)) is not None
        elif action < 0.8:
            got = await resolver.resolve(rng.choice(tokens))
            assert got is not None
            resolver.invalidate_session(got.session_id)
        else:
            resolver.invalidate_identity(identity.id)
            assert all(
                e.value is None or e.value.identity_id != identity.id for e in resolver._cache.values()
            )
        check()


def test_resolved_from_is_the_dataclass_s_value_with_a_memo_of_its_own() -> None:
    """``resolved_from`` builds ``ResolvedSession`` slot by slot (``sidecar.slotted.builder``): the same value
    as the dataclass's constructor, every field set, and a new memo for each (renderings are memoised
    per cache entry: a shared one would serve one user's headers to another)."""
    from dataclasses import fields

    from sidecar.identity.model import VerifiableAddress
    from sidecar.session.resolver import ResolvedIdentity, ResolvedSession, resolved_from

    identity = Identity(
        schema_id="default",
        traits={"email": "Ann@Example.com"},
        metadata_public={"roles": ["a"]},
        verifiable_addresses=(VerifiableAddress(value="ann@example.com", verified=True),),
        organization_id=uuid.uuid4(),
    )
    person = ResolvedIdentity.of(identity, "aal2")
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal="aal1")
    built = resolved_from(session, person, "acme")
    expected = ResolvedSession(
        session_id=session.id,
        identity_id=identity.id,
        email="ann@example.com",
        aal="aal1",
        traits=person.identity.traits,
        metadata_public={"roles": ["a"]},
        schema_id="default",
        verified=True,
        expires_at=session.expires_at,
        authenticated_at=session.authenticated_at,
        available_aal="aal2",
        organization_id=identity.organization_id,
        organization_slug="acme",
        session=session,
        identity=person.identity,
    )
    assert type(built) is ResolvedSession
    for f in fields(ResolvedSession):
        assert getattr(built, f.name) == getattr(expected, f.name), f.name
    assert built == expected
    again = resolved_from(session, person, "acme")
    assert again.memo == {} and again.memo is not built.memo
    built.memo["x"] = 1
    assert again.memo == {}
    with pytest.raises(AttributeError):
        built.aal = "aal2"  # type: ignore[misc]  # still frozen
