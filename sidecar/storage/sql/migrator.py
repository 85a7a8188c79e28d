"""Alembic over this sidecar's migrations: upgrade and list them. Imported by ``SqlDatabase`` when
it migrates (``sidecar migrate``, ``serve --dev`` / ``--migrate``), never for readiness
(``sidecar.storage.sql.revisions``), so a server that does not migrate never loads Alembic.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sidecar.storage.sql.revisions import MIGRATIONS, applied_revisions

# Arbitrary constant: every sidecar replica racing to migrate on start takes the same lock.
_MIGRATION_LOCK_ID = 0x51DECA2


def _alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(connection: sa.Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The revisions before and after, read under the lock: replicas that waited for another's
    migration see the schema already current and apply nothing."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
    before = applied_revisions(connection)
    command.upgrade(_alembic_config(connection), "head")
    return before, applied_revisions(connection)


def status(connection: sa.Connection) -> list[tuple[str, str, bool]]:
    """``(revision, description, applied)`` for every known revision, oldest first."""
    script = ScriptDirectory.from_config(_alembic_config())
    current = MigrationContext.configure(connection).get_current_heads()
    applied = {rev.revision for rev in script.iterate_revisions(current, "base") if rev is not None}
    ordered = reversed(list(script.walk_revisions()))
    return [(rev.revision, (rev.doc or "").strip(), rev.revision in applied) for rev in ordered]


def shipped() -> tuple[str, frozenset[str]]:
    """What Alembic reads as the newest revision and all of them (tests hold ``revisions`` to it)."""
    script = ScriptDirectory.from_config(_alembic_config())
    return str(script.get_current_head()), frozenset(r.revision for r in script.walk_revisions())
