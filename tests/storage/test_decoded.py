"""``sidecar.storage.decoded``: the session check's reads decode a record once per content, and
every change to it (revocation, expiry, an identity's state, traits, addresses, credentials) is
still read: on Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sidecar.identity.model import Credential, Identity, VerifiableAddress, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session
from sidecar.session.resolver import SessionResolver
from sidecar.storage.decoded import Decoded
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.session_records import dumps_session
from sidecar.storage.sql.database import SqlDatabase

SECOND_FACTORS = ("totp", "lookup_secret", "webauthn")


def test_it_is_bounded_first_in_first_out() -> None:
    decoded: Decoded[int] = Decoded(size=2)
    assert decoded.put(b"a", 1) == 1
    decoded.put(b"b", 2)
    assert decoded.get(b"a") == 1
    decoded.put(b"c", 3)
    assert (decoded.get(b"a"), decoded.get(b"b"), decoded.get(b"c")) == (None, 2, 3)
    assert len(decoded) == 2


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest) -> str:
    """Resolved synchronously: the PostgreSQL fixture runs a loop of its own."""
    return str(request.getfixturevalue("sqlite_dsn" if request.param == "sqlite" else "postgres_dsn"))


@pytest.fixture(params=["sql", "redis"])
def redis_target(request: pytest.FixtureRequest) -> str | None:
    """Where the sessions live: the SQL database (None), or Redis at this URL."""
    return None if request.param == "sql" else str(request.getfixturevalue("redis_url"))


@pytest.fixture
def sessions(redis_target: str | None, database: SqlDatabase, request: pytest.FixtureRequest) -> Any:
    """The sessions in the SQL database, or in Redis."""
    if redis_target is None:
        return database.sessions
    return request.getfixturevalue("redis_backend").sessions


async def signed_in(
    database: SqlDatabase, sessions: Any, **identity_kw: Any
) -> tuple[Identity, Session, str]:
    identity = await database.identities.create(
        Identity(
            schema_id="default",
            traits={"email": "a@example.com"},
            verifiable_addresses=(VerifiableAddress(value="a@example.com"),),
            **identity_kw,
        )
    )
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    token = new_session_token()
    await sessions.create(session, digest(token))
    return identity, session, token


def no_cache(database: SqlDatabase, sessions: Any) -> SessionResolver:
    """The access path with the session cache off (``session.cache_ttl: 0s``): every resolve reads."""
    return SessionResolver(sessions, database.identities, ttl=timedelta(0))


async def test_a_session_read_again_unchanged_is_decoded_once(database: SqlDatabase, sessions: Any) -> None:
    _, session, token = await signed_in(database, sessions)
    first = await sessions.get_by_token(digest(token))
    assert first == session
    again = await sessions.get_by_token(digest(token))
    assert again == first
    # Remembered on Redis (the document's bytes), SQLite and PostgreSQL (the row: ``data`` read as text).
    assert again is first


async def test_a_revoked_session_is_never_served(database: SqlDatabase, sessions: Any) -> None:
    _, session, token = await signed_in(database, sessions)
    resolver = no_cache(database, sessions)
    assert await resolver.resolve(token) is not None
    assert await resolver.resolve(token) is not None
    assert await sessions.revoke(session.id)
    assert (await sessions.get_by_token(digest(token))).active is False
    assert await resolver.resolve(token) is None


async def test_a_changed_session_is_read_as_changed(database: SqlDatabase, sessions: Any) -> None:
    _, session, token = await signed_in(database, sessions)
    await sessions.get_by_token(digest(token))
    later = replace(session, aal="aal2", expires_at=session.expires_at + timedelta(minutes=5))
    await sessions.update(later)
    got = await sessions.get_by_token(digest(token))
    assert got is not None and (got.aal, got.expires_at) == ("aal2", later.expires_at)


async def test_a_redis_document_is_never_served_past_its_expiry(
    redis_backend: RedisBackend, unique_prefix: str
) -> None:
    """The key outlives the document's expiry (TTLs are in milliseconds, clocks differ): the
    document read once, and remembered, is refused once its own expiry has passed."""
    backend = redis_backend
    session = Session(identity_id=uuid.uuid4(), expires_at=utcnow() + timedelta(seconds=0.3))
    token_digest = digest(new_session_token())
    # Written by hand, without the store's PX: the keys stay.
    await backend.client.set(
        f"{unique_prefix}session:{session.id}", dumps_session(session, token_digest=token_digest)
    )
    await backend.client.set(f"{unique_prefix}session-token:{token_digest}", str(session.id))
    assert await backend.sessions.get_by_token(token_digest) == session
    await asyncio.sleep(max(0.0, (session.expires_at - datetime.now(UTC)).total_seconds()) + 0.05)
    assert await backend.sessions.get_by_token(token_digest) is None
    # A token key left pointing at another session's document never resolves either.
    other = digest(new_session_token())
    await backend.client.set(f"{unique_prefix}session-token:{other}", str(session.id))
    assert await backend.sessions.get_by_token(other) is None


async def test_a_stale_token_pointer_never_resolves_after_the_document_was_read(
    redis_backend: RedisBackend, unique_prefix: str
) -> None:
    backend = redis_backend
    session = Session(identity_id=uuid.uuid4(), expires_at=utcnow() + timedelta(hours=1))
    token_digest, stale = digest(new_session_token()), digest(new_session_token())
    await backend.sessions.create(session, token_digest)
    assert await backend.sessions.get_by_token(token_digest) == session  # remembered
    await backend.client.set(f"{unique_prefix}session-token:{stale}", str(session.id))
    assert await backend.sessions.get_by_token(stale) is None


async def test_an_identity_deactivated_after_a_read_is_no_session(
    database: SqlDatabase, sessions: Any
) -> None:
    identity, _, token = await signed_in(database, sessions)
    resolver = no_cache(database, sessions)
    assert await resolver.resolve(token) is not None
    assert await resolver.resolve(token) is not None
    await database.identities.update(replace(identity, state="inactive"))
    assert await resolver.resolve(token) is None
    await database.identities.update(replace(identity, state="active"))
    assert await resolver.resolve(token) is not None


async def test_a_deleted_identity_is_no_session(database: SqlDatabase, sessions: Any) -> None:
    identity, _, token = await signed_in(database, sessions)
    resolver = no_cache(database, sessions)
    assert await resolver.resolve(token) is not None
    assert await database.identities.delete(identity.id)
    assert await resolver.resolve(token) is None


async def test_traits_and_addresses_changed_are_read(database: SqlDatabase, sessions: Any) -> None:
    identity, _, token = await signed_in(database, sessions)
    resolver = no_cache(database, sessions)
    first = await resolver.resolve(token)
    assert first is not None and (first.email, first.verified) == ("a@example.com", False)
    address = replace(
        identity.verifiable_addresses[0], verified=True, status="completed", verified_at=utcnow()
    )
    await database.identities.update(
        replace(identity, traits={"email": "b@example.com"}, verifiable_addresses=(address,))
    )
    got = await resolver.resolve(token)
    assert got is not None and (got.email, got.verified) == ("b@example.com", True)
    assert got.traits == {"email": "b@example.com"}


async def test_an_identity_read_again_unchanged_is_decoded_once(database: SqlDatabase) -> None:
    identity = await database.identities.create(
        Identity(schema_id="default", traits={"email": "a@example.com"})
    )
    first = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    again = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert first == again == replace(identity, metadata_admin=None)
    # The row as the driver gave it is the key: SQLite's tuple, asyncpg's record (JSON as text).
    assert again is first


async def test_an_identity_changed_in_any_column_is_read_afresh(database: SqlDatabase) -> None:
    """Every lookup is a read: a changed state, trait, metadata or address is another row (on
    PostgreSQL too, whose JSON values are read as text), and a deleted identity is none."""
    identity = await database.identities.create(
        Identity(
            schema_id="default",
            traits={"email": "a@example.com", "name": {"first": "A"}},
            verifiable_addresses=(VerifiableAddress(value="a@example.com"),),
        )
    )
    first = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert first is not None and first.traits == {"email": "a@example.com", "name": {"first": "A"}}
    assert await database.identities.get_for_session(identity.id, SECOND_FACTORS) is first
    await database.identities.update(replace(identity, state="inactive"))
    inactive = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert inactive is not None and inactive.state == "inactive" and inactive is not first
    changed = replace(identity, traits={"email": "a@example.com", "name": {"first": "B"}})
    await database.identities.update(changed)
    got = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert got is not None and (got.state, got.traits["name"]) == ("active", {"first": "B"})
    await database.identities.update(replace(changed, metadata_public={"plan": "pro"}))
    got = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert got is not None and got.metadata_public == {"plan": "pro"}
    address = replace(identity.verifiable_addresses[0], verified=True, status="completed")
    await database.identities.update(
        replace(changed, metadata_public={"plan": "pro"}, verifiable_addresses=(address,))
    )
    got = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert got is not None and got.verifiable_addresses[0].verified
    assert await database.identities.get_for_session(identity.id, SECOND_FACTORS) is got
    assert await database.identities.delete(identity.id)
    assert await database.identities.get_for_session(identity.id, SECOND_FACTORS) is None


async def test_no_identity_with_credentials_is_remembered(database: SqlDatabase) -> None:
    """A second factor's secret (a TOTP key) is read for the level it allows and never kept:
    the identity is made afresh on every read, and its level follows the credential."""
    identity = await database.identities.create(
        Identity(
            schema_id="default",
            traits={"email": "a@example.com"},
            credentials={
                "totp": Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=SECRET"})
            },
        )
    )
    first = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    again = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert first is not None and again is not None and set(again.credentials) == {"totp"}
    assert again is not first
    remembered = database.identities._decoded._values
    assert "SECRET" not in json.dumps([repr(key) for key in remembered])
    assert not any(value.credentials for value in remembered.values())
    # The credential removed: read at once (the identity is remembered from here on).
    await database.identities.update(replace(identity, credentials={}))
    after = await database.identities.get_for_session(identity.id, SECOND_FACTORS)
    assert after is not None and after.credentials == {}
