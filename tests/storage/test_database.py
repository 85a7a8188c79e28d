"""SqlDatabase: DSNs, migrations, SQLite concurrency and outages."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from sidecar.errors import ServiceUnavailable
from sidecar.identity.model import Identity
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.engine import parse_dsn


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("dsn", "url", "flavour"),
    [
        pytest.param("memory", "sqlite+aiosqlite://", "sqlite-memory", id="memory"),
        pytest.param("sqlite://:memory:", "sqlite+aiosqlite://", "sqlite-memory", id="sqlite-2-slash-memory"),
        pytest.param(
            "sqlite:///:memory:", "sqlite+aiosqlite://", "sqlite-memory", id="sqlite-3-slash-memory"
        ),
        pytest.param("sqlite:///rel/db.sqlite", "sqlite+aiosqlite:///rel/db.sqlite", "sqlite", id="relative"),
        pytest.param(
            "sqlite:////abs/db.sqlite?_fk=true", "sqlite+aiosqlite:////abs/db.sqlite", "sqlite", id="abs"
        ),
        pytest.param(
            "postgres://u:p@h:5432/d", "postgresql+asyncpg://u:***@h:5432/d", "postgresql", id="postgres"
        ),
        pytest.param(
            "postgresql://u@h/d?sslmode=require&max_conns=20",
            "postgresql+asyncpg://u@h/d?ssl=require",
            "postgresql",
            id="postgresql-kratos-options",
        ),
        pytest.param(
            "postgresql://u@h/d?sslmode=disable", "postgresql+asyncpg://u@h/d", "postgresql", id="no-ssl"
        ),
    ],
)
def test_parse_dsn(dsn: str, url: str, flavour: str) -> None:
    spec = parse_dsn(dsn)
    assert (str(spec.url), spec.flavour) == (url, flavour)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported dsn"):
        parse_dsn("mysql://u@h/d")


def test_construction_does_not_touch_the_database(tmp_path: Path) -> None:
    SqlDatabase(f"sqlite:///{tmp_path}/never.db")
    assert not (tmp_path / "never.db").exists()


async def test_migrate_is_idempotent_and_reported(dsn: str) -> None:
    db = SqlDatabase(dsn)
    try:
        before = await db.migration_status()
        assert before[0][0] == "0001" and not any(applied for _, _, applied in before)
        await db.migrate()
        await db.migrate()
        after = await db.migration_status()
        assert [rev for rev, _, _ in after] == [rev for rev, _, _ in before]
        assert all(applied for _, _, applied in after)
        async with db.engine.connect() as conn:
            names = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert {"identities", "identity_credential_identifiers", "sessions", "kv"} <= names
    finally:
        await db.close()


async def test_memory_database_is_shared_across_connections() -> None:
    db = SqlDatabase("memory")
    try:
        await db.migrate()
        identity = Identity(schema_id="default", traits={})
        results = await asyncio.gather(
            db.identities.create(identity), *(db.kv.incr("n", timedelta(minutes=1)) for _ in range(10))
        )
        assert sorted(results[1:]) == list(range(1, 11))  # type: ignore[type-var]
        assert await db.identities.get(identity.id) == identity
    finally:
        await db.close()


async def test_concurrent_sqlite_writers_do_not_see_database_is_locked(sqlite_dsn: str) -> None:
    first, second = SqlDatabase(sqlite_dsn), SqlDatabase(sqlite_dsn)
    try:
        await first.migrate()
        writes = [db.kv.set(f"k{i}", b"v", timedelta(minutes=1)) for i in range(40) for db in (first, second)]
        await asyncio.gather(*writes)
        assert await second.kv.get("k39") == b"v"
    finally:
        await first.close()
        await second.close()


async def test_unreachable_postgres_is_service_unavailable() -> None:
    db = SqlDatabase(f"postgresql://postgres@127.0.0.1:{unused_port()}/sidecar")
    try:
        with pytest.raises(ServiceUnavailable):
            await db.ping()
        with pytest.raises(ServiceUnavailable):
            await db.identities.get(Identity(schema_id="d", traits={}).id)
        with pytest.raises(ServiceUnavailable):
            await db.migrate()
        with pytest.raises(ServiceUnavailable):
            await db.kv.take("k")
    finally:
        await db.close()
