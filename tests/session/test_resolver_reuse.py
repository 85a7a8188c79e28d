"""``SessionResolver`` on a miss that finds the very identity the store gave before (it gives the
same object for a row read again unchanged: ``sidecar.storage.decoded``): its part of its sessions
(``ResolvedIdentity``) is the one worked out then; any change, invalidation or credential makes
another. SQLite and PostgreSQL (where asyncpg's rows are made afresh: no reuse)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.aal import Assurance
from sidecar.session.model import Session
from sidecar.session.resolver import SessionResolver
from sidecar.storage.sql.database import SqlDatabase


def reused_here(database: SqlDatabase) -> bool:
    """Whether the stores give the same objects for unchanged records (SQLite's raw rows,
    asyncpg's records of identities read with their JSON as text)."""
    return database._connector._reader is not None or database._connector._raw_pg


async def signed_in(database: SqlDatabase, **identity_kw: Any) -> tuple[Identity, Session, str]:
    identity = await database.identities.create(
        Identity(schema_id="default", traits={"email": "a@example.com"}, **identity_kw)
    )
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    token = new_session_token()
    await database.sessions.create(session, digest(token))
    return identity, session, token


def totp_ready(identity: Identity) -> bool:
    return "totp" in identity.credentials


def no_cache(database: SqlDatabase, **kw: Any) -> SessionResolver:
    """The session cache off (``session.cache_ttl: 0s``): every resolve reads both stores."""
    assurance = Assurance([("totp", totp_ready)])
    return SessionResolver(
        database.sessions, database.identities, ttl=timedelta(0), assurance=assurance, **kw
    )


async def test_an_unchanged_identity_is_worked_out_once(database: SqlDatabase) -> None:
    identity, _, token = await signed_in(database)
    resolver = no_cache(database)
    first = await resolver.resolve(token)
    person = resolver._people.get(identity.id)
    again = await resolver.resolve(token)
    assert first is not None and again is not None and again == first
    assert (first.email, first.available_aal) == ("a@example.com", "aal1")
    if reused_here(database):
        assert person is not None and resolver._people[identity.id] is person
        assert again.identity is first.identity is person.identity


async def test_every_identity_invalidation_makes_another(database: SqlDatabase) -> None:
    identity, _, token = await signed_in(database)
    resolver = no_cache(database)
    invalidations: list[Callable[[], None]] = [
        lambda: resolver.invalidate_identity(identity.id),
        resolver.invalidate_all,
    ]
    for invalidate in invalidations:
        await resolver.resolve(token)
        before = resolver._people.get(identity.id)
        assert before is not None
        invalidate()
        assert identity.id not in resolver._people
        await resolver.resolve(token)
        after = resolver._people.get(identity.id)
        assert after is not None and after is not before and after == before


async def test_a_revoked_session_or_an_inactive_identity_is_never_the_value_again(
    database: SqlDatabase,
) -> None:
    identity, session, token = await signed_in(database)
    resolver = no_cache(database)
    assert await resolver.resolve(token) is not None
    assert await resolver.resolve(token) is not None
    await database.identities.update(replace(identity, state="inactive"))
    assert await resolver.resolve(token) is None
    await database.identities.update(replace(identity, state="active"))
    assert await resolver.resolve(token) is not None
    assert await database.sessions.revoke(session.id)
    assert await resolver.resolve(token) is None


async def test_changed_traits_make_another_value(database: SqlDatabase) -> None:
    identity, _, token = await signed_in(database)
    resolver = no_cache(database)
    first = await resolver.resolve(token)
    await database.identities.update(replace(identity, traits={"email": "b@example.com"}))
    got = await resolver.resolve(token)
    assert first is not None and got is not None and got is not first
    assert (first.email, got.email) == ("a@example.com", "b@example.com")


async def test_an_identity_with_a_second_factor_is_worked_out_on_every_load(database: SqlDatabase) -> None:
    """Its credentials are read for the level they allow and never kept: no value made from them
    is reused, and removing the second factor lowers the level at once."""
    totp = Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=S"})
    identity, _, token = await signed_in(database, credentials={"totp": totp})
    resolver = no_cache(database)
    first = await resolver.resolve(token)
    again = await resolver.resolve(token)
    assert first is not None and again is not None and again.identity is not first.identity
    assert first.available_aal == again.available_aal == "aal2"
    assert not resolver._people
    await database.identities.update(replace(identity, credentials={}))
    after = await resolver.resolve(token)
    assert after is not None and after.available_aal == "aal1"


async def test_a_load_that_raced_an_invalidation_is_not_kept(database: SqlDatabase) -> None:
    identity, _, token = await signed_in(database)
    resolver = no_cache(database)
    gate, reached = asyncio.Event(), asyncio.Event()
    inner = database.identities

    class Gated:
        async def get_for_session(self, identity_id: Any, types: Any) -> Identity | None:
            reached.set()
            await gate.wait()
            found: Identity | None = await inner.get_for_session(identity_id, types)
            return found

    resolver.identities = Gated()  # type: ignore[assignment]
    loading = asyncio.ensure_future(resolver.resolve(token))
    # The invalidation must come while the load is under way (its session read done, the
    # identity read begun), not before it started: a sleep is not enough on a loaded machine.
    await asyncio.wait_for(reached.wait(), 10)
    resolver.invalidate_identity(identity.id)
    gate.set()
    assert await loading is not None
    assert not resolver._people


async def test_what_is_kept_is_bounded(database: SqlDatabase) -> None:
    resolver = no_cache(database, max_entries=2)
    tokens = [(await signed_in(database))[2] for _ in range(3)]
    for token in tokens:
        assert await resolver.resolve(token) is not None
    assert len(resolver._people) <= 2


async def test_a_load_of_the_same_records_gives_the_very_value_of_the_last(database: SqlDatabase) -> None:
    """What a remembered answer made from a load is vouched by (``sidecar.http_protocol``'s
    ``RememberedLater``): the same session and identity read again give the very value the last
    load gave; a changed session, a changed identity or any invalidation gives another. Fails when
    the value is made afresh every load, or reused whatever was read."""
    identity, session, token = await signed_in(database)
    resolver = no_cache(database)
    first = await resolver.resolve(token)
    again = await resolver.resolve(token)
    assert first is not None and again == first
    read = [await database.sessions.get_by_token(digest(token)) for _ in range(2)]
    if reused_here(database) and read[0] is read[1]:  # (both stores give the objects they gave)
        assert again is first
    await database.sessions.update(replace(session, expires_at=session.expires_at + timedelta(minutes=5)))
    extended = await resolver.resolve(token)
    assert extended is not None and extended is not first and extended.expires_at > first.expires_at
    await database.identities.update(replace(identity, traits={"email": "b@example.com"}))
    changed = await resolver.resolve(token)
    assert changed is not None and changed is not extended and changed.email == "b@example.com"
    resolver.invalidate_session(session.id)
    after = await resolver.resolve(token)
    assert after is not None and after is not changed and after == changed
