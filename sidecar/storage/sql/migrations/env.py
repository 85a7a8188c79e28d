"""Alembic environment: always run programmatically by ``SqlDatabase.migrate`` over its connection.

There is no alembic.ini and no URL here: the caller passes a live synchronous connection (from
``AsyncConnection.run_sync``) in ``config.attributes["connection"]`` so migrations share the
application's engine, pragmas and transaction.
"""

from __future__ import annotations

from alembic import context

from sidecar.storage.sql.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `sidecar migrate` (SqlDatabase.migrate), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode rebuilds tables for later revisions.
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
