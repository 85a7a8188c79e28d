"""The session check's reads on PostgreSQL (``Connector._fetch_raw_pg``: asyncpg's ``fetchrow`` on a
pooled connection): what the engine gives, and outages that stay outages."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from sidecar.errors import ServiceUnavailable
from sidecar.identity.model import Credential, Identity, VerifiableAddress, utcnow
from sidecar.session.model import Session
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.tables import identities


@pytest.fixture
async def db(postgres_dsn: str) -> AsyncIterator[SqlDatabase]:
    database = SqlDatabase(postgres_dsn)
    await database.migrate()
    yield database
    await database.close()


async def _identity(db: SqlDatabase) -> Identity:
    return await db.identities.create(
        Identity(
            schema_id="default",
            traits={"email": "pg@example.test"},
            metadata_public={"roles": ["a"]},
            state_changed_at=utcnow(),
            verifiable_addresses=(VerifiableAddress("pg@example.test", verified=True, verified_at=utcnow()),),
            credentials={"password": Credential("password", ("pg@example.test",), {"hashed_password": "h"})},
        )
    )


def _types(value: Any) -> list[tuple[str, type]]:
    return [(f.name, type(getattr(value, f.name))) for f in fields(value)]


async def test_values_and_their_types_are_the_engines(db: SqlDatabase) -> None:
    identity = await _identity(db)
    fast = await db.identities.get(identity.id)
    general = await db.identities._find(identities.c.id == identity.id)
    assert fast == general == identity
    assert _types(fast) == _types(general)
    assert _types(fast.verifiable_addresses[0]) == _types(general.verifiable_addresses[0])  # type: ignore[union-attr]
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    await db.sessions.create(session, "a" * 64)
    by_token, by_id = await db.sessions.get_by_token("a" * 64), await db.sessions.get(session.id)
    assert by_token == by_id == session
    assert _types(by_token) == _types(by_id)
    assert await db.identities.get(uuid.uuid4()) is None
    assert await db.sessions.get_by_token("b" * 64) is None


async def _locked(postgres_dsn: str) -> asyncpg.Connection:
    """A connection holding ``identities`` in ACCESS EXCLUSIVE mode: every read of it waits."""
    locker = await asyncpg.connect(postgres_dsn)
    await locker.execute("BEGIN; LOCK TABLE identities IN ACCESS EXCLUSIVE MODE")
    return locker


async def _waiting_backend(locker: asyncpg.Connection) -> int:
    for _ in range(500):
        pid = await locker.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("no read is waiting for the lock")


async def test_a_backend_killed_mid_read_is_unavailable_not_no_identity(
    db: SqlDatabase, postgres_dsn: str
) -> None:
    identity = await _identity(db)
    assert await db.identities.get(identity.id) == identity
    locker = await _locked(postgres_dsn)
    try:
        read = asyncio.ensure_future(db.identities.get(identity.id))
        pid = await _waiting_backend(locker)
        assert await locker.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(read, 30)  # a bound on a hang, not on speed
    finally:
        await locker.execute("ROLLBACK")
        await locker.close()
    for _ in range(3):  # the dead connection is never used again
        assert await db.identities.get(identity.id) == identity


async def test_a_cancelled_read_leaves_no_connection_out_of_step(db: SqlDatabase, postgres_dsn: str) -> None:
    first = await _identity(db)
    second = await db.identities.create(Identity(schema_id="default", traits={"email": "two@example.test"}))
    assert await db.identities.get(first.id) == first
    locker = await _locked(postgres_dsn)
    try:
        read = asyncio.ensure_future(db.identities.get(first.id))
        pid = await _waiting_backend(locker)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
    finally:
        await locker.execute("ROLLBACK")
    try:
        # Invalidated, as the engine invalidates a connection an exit exception interrupted:
        # closed (its backend ends once the lock lets it run), never handed to the next read
        # with a reply in flight.
        for _ in range(500):
            if not await locker.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.01)
        assert not await locker.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await locker.close()
    for _ in range(5):
        assert await db.identities.get(second.id) == second
        assert await db.identities.get(first.id) == first
    assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_a_server_error_is_the_engines_error(db: SqlDatabase) -> None:
    identity = await _identity(db)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE identities RENAME TO identities_gone"))
    with pytest.raises(sa.exc.ProgrammingError):  # what the engine raises (a 500, not a 503)
        await db.identities.get(identity.id)
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE identities_gone RENAME TO identities"))
    assert await db.identities.get(identity.id) == identity


async def test_a_stopped_server_is_unavailable(postgres_dsn: str) -> None:
    db = SqlDatabase(postgres_dsn.rsplit("/", 1)[0].replace(":5432", ":1") + "/nowhere")
    try:
        with pytest.raises(ServiceUnavailable):
            await db.identities.get(uuid.uuid4())
        with pytest.raises(ServiceUnavailable):
            await db.sessions.get_by_token("c" * 64)
    finally:
        await db.close()


async def test_prepared_statement_options_keep_the_engines_path(postgres_dsn: str) -> None:
    # PgBouncer setups turn prepared statements off in the DSN: asyncpg's own cache would not.
    db = SqlDatabase(f"{postgres_dsn}?prepared_statement_cache_size=0")
    await db.migrate()
    try:
        identity = await _identity(db)
        assert not db.identities._db._raw_pg
        assert await db.identities.get(identity.id) == identity
    finally:
        await db.close()
