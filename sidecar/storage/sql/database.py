"""The SQL database: one lazy engine, the stores over it, and its Alembic migrations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from sidecar.errors import ServiceUnavailable
from sidecar.storage.sql.courier_store import SqlCourierStore
from sidecar.storage.sql.engine import Connector, create_engine, parse_dsn
from sidecar.storage.sql.identities import SqlIdentityStore
from sidecar.storage.sql.kv import SqlKeyValueStore
from sidecar.storage.sql.organizations import SqlOrganizationStore
from sidecar.storage.sql.scim import SqlScimStore
from sidecar.storage.sql.sessions import SqlSessionStore
from sidecar.storage.sql.webhook_outbox import SqlOutboxStore

MIGRATIONS = Path(__file__).with_name("migrations")
# Arbitrary constant: every sidecar replica racing to migrate on start takes the same lock.
_MIGRATION_LOCK_ID = 0x51DECA2


def _alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The revisions before and after, read under the lock: replicas that waited for another's
    migration see the schema already current and apply nothing."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    before = _current(connection)
    command.upgrade(_alembic_config(connection), "head")
    return before, _current(connection)


def _current(connection: sa.Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """Where the database's schema stands against the migrations this sidecar ships."""

    current: tuple[str, ...]
    head: str
    known: frozenset[str]

    @property
    def behind(self) -> bool:
        """True when migrations are pending. A revision we do not know is a newer sidecar's
        (a rollout in progress): not behind."""
        if self.head in self.current:
            return False
        return not self.current or all(rev in self.known for rev in self.current)

    @property
    def shown(self) -> str:
        return ", ".join(self.current) or "none"

    def problem(self) -> str:
        return (
            f"database schema is at version {self.shown}, this sidecar needs {self.head}: "
            "run `sidecar migrate up` (or start with `sidecar serve --migrate`)"
        )


def _status(connection: sa.Connection) -> list[tuple[str, str, bool]]:
    script = ScriptDirectory.from_config(_alembic_config())
    current = MigrationContext.configure(connection).get_current_heads()
    applied = {rev.revision for rev in script.iterate_revisions(current, "base") if rev is not None}
    ordered = reversed(list(script.walk_revisions()))
    return [(rev.revision, (rev.doc or "").strip(), rev.revision in applied) for rev in ordered]


class SqlDatabase:
    """SQLite or PostgreSQL, picked by ``dsn``; constructing it connects to nothing.

    DSNs: ``sqlite://relative.db``, ``sqlite:///abs/path.db`` (Kratos' reading), ``memory`` / ``sqlite://:memory:``
    (one in-process database shared by every connection), ``postgres://`` / ``postgresql://``.
    """

    def __init__(self, dsn: str) -> None:
        spec = parse_dsn(dsn)
        self.engine: AsyncEngine = create_engine(spec)
        self._connector = Connector(self.engine, spec.flavour, spec)
        self.identities = SqlIdentityStore(self._connector)
        self.sessions = SqlSessionStore(self._connector)
        self.kv = SqlKeyValueStore(self._connector)
        self.courier = SqlCourierStore(self._connector)
        self.outbox = SqlOutboxStore(self._connector)
        self.organizations = SqlOrganizationStore(self._connector)
        self.scim = SqlScimStore(self._connector)
        self._script: tuple[str, frozenset[str]] | None = None

    async def migrate(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Upgrade to the newest revision; a no-op when already there. Returns the revisions
        before and after (equal when another replica had just done it)."""
        async with self._connector.write() as conn:
            return await conn.run_sync(_upgrade)

    async def migration_status(self) -> list[tuple[str, str, bool]]:
        """``(revision, description, applied)`` for every known revision, oldest first."""
        async with self._connector.read() as conn:
            return await conn.run_sync(_status)

    async def schema_version(self) -> SchemaVersion:
        """The applied revision(s) next to the newest one shipped; one small query."""
        if self._script is None:
            script = ScriptDirectory.from_config(_alembic_config())
            self._script = (
                str(script.get_current_head()),
                frozenset(r.revision for r in script.walk_revisions()),
            )
        head, known = self._script
        async with self._connector.read() as conn:
            current = await conn.run_sync(_current)
        return SchemaVersion(current, head, known)

    async def ping(self) -> None:
        """Raise ``ServiceUnavailable`` when the database cannot be reached or its schema is
        behind this sidecar's migrations (every query would fail: not ready)."""
        version = await self.schema_version()
        if version.behind:
            raise ServiceUnavailable(version.problem())

    async def close(self) -> None:
        await self._connector.close()
        await self.engine.dispose()
