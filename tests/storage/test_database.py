"""SqlDatabase: DSNs, migrations, SQLite concurrency and outages."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine.reflection import Inspector

from sidecar.errors import ServiceUnavailable
from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress, utcnow
from sidecar.session.model import Session
from sidecar.storage.sql import migrator
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.engine import parse_dsn
from tests.conftest import free_port


@pytest.mark.parametrize(
    ("dsn", "url", "flavour"),
    [
        pytest.param("memory", "sqlite+aiosqlite://", "sqlite-memory", id="memory"),
        pytest.param("sqlite://:memory:", "sqlite+aiosqlite://", "sqlite-memory", id="sqlite-2-slash-memory"),
        pytest.param(
            "sqlite:///:memory:", "sqlite+aiosqlite://", "sqlite-memory", id="sqlite-3-slash-memory"
        ),
        # Kratos (pop + go-sqlite3) takes everything after sqlite:// up to ? as the path.
        pytest.param("sqlite://rel/db.sqlite", "sqlite+aiosqlite:///rel/db.sqlite", "sqlite", id="relative"),
        pytest.param(
            "sqlite:///abs/db.sqlite?_fk=true", "sqlite+aiosqlite:////abs/db.sqlite", "sqlite", id="abs"
        ),
        pytest.param(
            "sqlite:////abs/db.sqlite", "sqlite+aiosqlite:////abs/db.sqlite", "sqlite", id="abs-four-slashes"
        ),
        pytest.param("sqlite://file:db.sqlite", "sqlite+aiosqlite:///db.sqlite", "sqlite", id="file-prefix"),
        pytest.param(
            "sqlite://file::memory:?_fk=true&cache=shared",
            "sqlite+aiosqlite://",
            "sqlite-memory",
            id="kratos-memory",
        ),
        pytest.param(
            "sqlite://foo.db?mode=memory&_fk=true", "sqlite+aiosqlite://", "sqlite-memory", id="mode-memory"
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


@pytest.mark.parametrize(
    ("dsn", "pragmas"),
    [
        pytest.param(
            "sqlite://a.db?_fk=true",
            {"journal_mode": "WAL", "synchronous": "NORMAL", "busy_timeout": "5000"},
            id="defaults",
        ),
        pytest.param(
            "sqlite://a.db?_journal_mode=delete&_busy_timeout=250&_sync=2&_txlock=immediate&cache=shared",
            {"journal_mode": "DELETE", "synchronous": "FULL", "busy_timeout": "250"},
            id="go-sqlite3-options",
        ),
        pytest.param(
            "sqlite://a.db?_journal=TRUNCATE&_timeout=10&_synchronous=off",
            {"journal_mode": "TRUNCATE", "synchronous": "OFF", "busy_timeout": "10"},
            id="aliases",
        ),
    ],
)
def test_sqlite_options_become_pragmas(dsn: str, pragmas: dict[str, str]) -> None:
    assert dict(parse_dsn(dsn).pragmas) == pragmas


@pytest.mark.parametrize(
    ("dsn", "named"),
    [
        pytest.param("sqlite://a.db?_fk=false", "_fk=false", id="no-foreign-keys"),
        pytest.param("sqlite://a.db?_journal_mode=fast", "_journal_mode=fast", id="bad-journal"),
        pytest.param("sqlite://a.db?_busy_timeout=soon", "_busy_timeout=soon", id="bad-timeout"),
        pytest.param("sqlite://a.db?_txlock=deferred", "_txlock=deferred", id="deferred"),
        pytest.param("sqlite://a.db?mode=ro", "mode=ro", id="read-only"),
        pytest.param("sqlite://a.db?_auth_user=x", "'_auth_user'", id="unknown"),
    ],
)
def test_sqlite_options_sidecar_cannot_honour_are_refused(dsn: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_dsn(dsn)


async def test_sqlite_options_apply_on_connect(tmp_path: Path) -> None:
    db = SqlDatabase(f"sqlite://{tmp_path}/p.db?_journal_mode=TRUNCATE&_busy_timeout=1234&_fk=true")
    try:
        async with db.engine.connect() as conn:
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert (journal, timeout, fks) == ("truncate", 1234, 1)
    finally:
        await db.engine.dispose()


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


async def test_schema_version_reads_what_alembic_reads(dsn: str) -> None:
    """Readiness reads the revisions without Alembic (``sidecar.storage.sql.revisions``): the
    same head, known revisions and applied ones as Alembic, before and after migrating."""
    db = SqlDatabase(dsn)
    try:
        head, known = migrator.shipped()
        version = await db.schema_version()
        assert (version.head, version.known, version.current, version.behind) == (head, known, (), True)
        await db.migrate()
        async with db.engine.connect() as conn:
            heads = await conn.run_sync(lambda c: tuple(MigrationContext.configure(c).get_current_heads()))
        version = await db.schema_version()
        assert version.current == heads == (head,) and not version.behind
    finally:
        await db.close()


async def test_schema_version_when_the_table_goes_between_check_and_read(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The version table dropped after the check that it exists and before the read (as a
    restored backup can under a running server): no version, as when the check saw it gone, not
    the driver's "no such table" error (which readiness and the store monitor would report)."""
    db = SqlDatabase(dsn)
    real = Inspector.has_table
    asked: list[str] = []

    def gone_after_the_check(self: Inspector, name: str, *args: Any, **kwargs: Any) -> bool:
        asked.append(name)
        return True if len(asked) == 1 else real(self, name, *args, **kwargs)

    try:
        monkeypatch.setattr(Inspector, "has_table", gone_after_the_check)
        version = await db.schema_version()
        assert version.current == () and version.behind
        assert asked == ["alembic_version", "alembic_version"]
        monkeypatch.undo()
        await db.migrate()  # the connection was left usable: the next check reads the version
        assert not (await db.schema_version()).behind
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
    db = SqlDatabase(f"postgresql://postgres@127.0.0.1:{free_port()}/sidecar")
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


async def test_a_postgres_read_is_one_query_after_the_ping(postgres_dsn: str) -> None:
    """No BEGIN/ROLLBACK around reads (two extra round trips each), a one-``;`` pool ping, and
    writes still in a transaction (all or nothing, tested in the store contracts)."""
    db = SqlDatabase(postgres_dsn)
    await db.migrate()
    identity = await db.identities.create(Identity(schema_id="default", traits={"email": "rt@example.test"}))
    # What asyncpg sends outside SQLAlchemy's prepared statements: the session check's reads
    # (Connector.fetch_one) run on asyncpg's own statement cache, and are logged.
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(" ".join(record.query.split()).upper())

    @sa.event.listens_for(db.engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    await db.engine.dispose()  # new connections, each with the logger
    assert await db.identities.get(identity.id) == identity  # a fresh connection: no ping
    sent.clear()
    assert await db.identities.get(identity.id) == identity  # from the pool: pinged first
    assert sent[0] == ";" and [q.split()[0] for q in sent[1:]] == ["SELECT"], sent
    sent.clear()
    await db.identities.update(identity)
    assert sent[0] == ";" and sent[1].startswith("BEGIN") and sent[-1].startswith("COMMIT"), sent
    await db.close()


async def test_a_sqlite_session_check_reads_past_the_engine(sqlite_dsn: str) -> None:
    """A session-cache miss's two reads (session by token digest, identity by id) on a SQLite
    file go to the store's own reader (one thread hop, no SQLAlchemy execution), not through
    the engine; they give what the engine's statements give. Other reads keep their BEGIN
    (several statements share one snapshot), and writes their BEGIN IMMEDIATE."""
    db = SqlDatabase(sqlite_dsn)
    await db.migrate()
    identity = await db.identities.create(
        Identity(
            schema_id="default",
            traits={"email": "b@example.test", "name": {"first": "B"}},
            metadata_public={"roles": ["x"]},
            verifiable_addresses=(VerifiableAddress("b@example.test", verified=True),),
            recovery_addresses=(RecoveryAddress("b@example.test"),),
            credentials={"password": Credential("password", ("b@example.test",), {"hashed_password": "h"})},
        )
    )
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    await db.sessions.create(session, "d" * 64)
    sent: list[str] = []

    @sa.event.listens_for(db.engine.sync_engine, "before_cursor_execute")
    def log(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement.split()[0].upper())

    assert await db.identities.get(identity.id) == identity
    assert await db.identities.get(uuid.uuid4()) is None
    assert await db.sessions.get_by_token("d" * 64) == await db.sessions.get(session.id) == session
    assert await db.sessions.get_by_token("e" * 64) is None
    assert sent == ["SELECT"]  # the get by id above, for comparison; none from the reader
    sent.clear()
    assert await db.identities.count() == 1  # another read: in a transaction, as before
    assert sent == ["BEGIN", "SELECT"]
    sent.clear()
    await db.identities.update(identity)
    assert sent[0] == "BEGIN" and sent[-1] == "SELECT", sent  # BEGIN IMMEDIATE ... the re-read
    await db.sessions.revoke(session.id)
    revoked = await db.sessions.get_by_token("d" * 64)
    assert revoked is not None and not revoked.active  # the column wins over the document
    await db.close()


async def test_a_sqlite_reader_failure_is_service_unavailable(sqlite_dsn: str) -> None:
    """The reader fails closed as the engine does (``translate_errors``): a database it cannot
    read is an outage, not a missing session; a cancelled read leaves the reader working."""
    db = SqlDatabase(sqlite_dsn)
    await db.migrate()
    identity = await db.identities.create(Identity(schema_id="default", traits={"email": "f@example.test"}))
    read = asyncio.ensure_future(db.identities.get(identity.id))
    await asyncio.sleep(0)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    assert await db.identities.get(identity.id) == identity
    async with db.engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE sessions RENAME TO sessions_gone"))
    with pytest.raises(ServiceUnavailable):
        await db.sessions.get_by_token("d" * 64)
    await db.close()


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "unavailable"),
    [
        ("57P03", True),  # cannot_connect_now: "the database system is shutting down"
        ("57P01", True),  # admin_shutdown
        ("08006", True),  # connection_failure
        ("53300", True),  # too_many_connections
        ("42P01", False),  # undefined_table: a bug, not an outage
    ],
)
def test_server_side_outages_are_service_unavailable(sqlstate: str, unavailable: bool) -> None:
    """What PostgreSQL answers while it restarts reaches sidecar as a plain DBAPIError; it must be
    a 503 (seen as 500s in the fault test before)."""
    import sqlalchemy as sa

    from sidecar.errors import ServiceUnavailable
    from sidecar.storage.sql.engine import translate_errors

    wrapped = sa.exc.DBAPIError("SELECT 1", {}, _PgError(sqlstate))
    expected = ServiceUnavailable if unavailable else sa.exc.DBAPIError
    with pytest.raises(expected), translate_errors():
        raise wrapped
