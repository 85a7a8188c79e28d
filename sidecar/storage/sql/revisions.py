"""Where the database's schema stands against the migrations this sidecar ships, read without
Alembic.

Readiness asks this at every start (``SqlDatabase.ping``), and importing Alembic costs ~0.13 s of
CPU (``python -X importtime``), which a server that does not migrate never needs. So the shipped
revisions are read from the scripts' ``revision`` / ``down_revision`` assignments, and the applied
ones from Alembic's ``alembic_version`` table; ``sidecar.storage.sql.migrator`` runs Alembic itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"


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


def _assigned(script: Path) -> dict[str, str | None]:
    names: dict[str, str | None] = {}
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.Assign) or not isinstance(node.value, ast.Constant):
            continue
        value = node.value.value
        for target in node.targets:
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                names[target.id] = value if isinstance(value, str) else None
    return names


def shipped_revisions() -> tuple[str, frozenset[str]]:
    """The newest revision and every revision of the migration scripts (one linear history)."""
    parents: dict[str, str | None] = {}
    for script in sorted((MIGRATIONS / "versions").glob("*.py")):
        names = _assigned(script)
        revision = names.get("revision")
        if not isinstance(revision, str):
            raise ValueError(f"{script}: no revision = '...'")
        parents[revision] = names.get("down_revision")
    heads = set(parents) - set(parents.values())
    if len(heads) != 1:
        raise ValueError(f"the migrations have {len(heads)} heads ({sorted(heads)}), not one")
    return heads.pop(), frozenset(parents)


def applied_revisions(connection: sa.Connection) -> tuple[str, ...]:
    """The revisions in ``alembic_version`` (what Alembic's ``get_current_heads`` reads); none
    before the first migration."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return ()
    try:
        return tuple(connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())  # noqa: S608 - a constant
    except sa.exc.DBAPIError:
        # Dropped between the check and the read (a restored backup under a running server):
        # the schema is at no version, as if the check had seen it; any other error goes on.
        # (Readiness reads on an autocommit connection; inside a transaction, PostgreSQL refuses
        # the check again after a failed statement, and that error goes on.)
        if sa.inspect(connection).has_table(VERSION_TABLE):
            raise
        return ()
