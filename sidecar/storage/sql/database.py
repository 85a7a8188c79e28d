"""The SQL database: one lazy engine, the stores over it, and its Alembic migrations."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from sidecar.errors import ServiceUnavailable
from sidecar.storage.sql.courier_store import SqlCourierStore
from sidecar.storage.sql.engine import Connector, create_engine, parse_dsn
from sidecar.storage.sql.identities import SqlIdentityStore
from sidecar.storage.sql.kv import SqlKeyValueStore
from sidecar.storage.sql.organizations import SqlOrganizationStore
from sidecar.storage.sql.revisions import SchemaVersion, applied_revisions, shipped_revisions
from sidecar.storage.sql.scim import SqlScimStore
from sidecar.storage.sql.sessions import SqlSessionStore
from sidecar.storage.sql.webhook_outbox import SqlOutboxStore


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
        from sidecar.storage.sql import migrator  # Alembic: only when migrating (revisions.py)

        async with self._connector.write() as conn:
            return await conn.run_sync(migrator.upgrade)

    async def migration_status(self) -> list[tuple[str, str, bool]]:
        """``(revision, description, applied)`` for every known revision, oldest first."""
        from sidecar.storage.sql import migrator

        async with self._connector.read() as conn:
            return await conn.run_sync(migrator.status)

    async def schema_version(self) -> SchemaVersion:
        """The applied revision(s) next to the newest one shipped; one small query."""
        if self._script is None:
            self._script = shipped_revisions()
        head, known = self._script
        async with self._connector.read() as conn:
            current = await conn.run_sync(applied_revisions)
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
