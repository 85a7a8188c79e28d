"""Many new identities in one transaction, with multi-row INSERTs (Kratos' ``CreateIdentities``).

Each table gets one ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` for the whole batch
(SQLAlchemy splits it into multi-row statements under the driver's parameter limit). A row the
database skipped is a uniqueness conflict: its identity is marked failed, and once every table is
written the failed identities' rows are deleted again, still inside the transaction. So one bad
item never rolls back or blocks the others, and what the caller is told matches what was stored.

Rows are inserted in the order of their unique key (a stable sort: among equal keys the first item
of the batch wins), so two batches that overlap take their row
locks in the same order (PostgreSQL) instead of deadlocking.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.errors import Conflict
from sidecar.identity.model import Identity
from sidecar.storage.sql.identity_rows import (
    credential_row,
    identifier_rows,
    identity_values,
    recovery_rows,
    verifiable_rows,
)
from sidecar.storage.sql.tables import (
    credential_identifiers,
    credentials,
    identities,
    recovery_addresses,
    verifiable_addresses,
)

_IDENTIFIER = "an identity with this identifier already exists"
_ADDRESS = "an identity with this address already exists"


async def _insert_skipping_conflicts(
    conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> set[uuid.UUID]:
    """Ids of the rows the database took; the others met a unique constraint."""
    if not rows:
        return set()
    rows.sort(key=key)
    insert = postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)
    stmt = insert.on_conflict_do_nothing().returning(table.c.id)
    return set((await conn.execute(stmt, rows)).scalars())


async def insert_identities(conn: AsyncConnection, batch: Sequence[Identity]) -> list[Identity | Exception]:
    """Insert ``batch`` (new identities, distinct ids); per item the identity or its ``Conflict``."""
    failed: dict[uuid.UUID, str] = {}

    def fail(identity_id: uuid.UUID, reason: str) -> None:
        failed.setdefault(identity_id, reason)

    rows = [{"id": i.id, "created_at": i.created_at, **identity_values(i)} for i in batch]
    taken = await _insert_skipping_conflicts(conn, identities, rows, key=lambda r: r["external_id"] or "")
    for identity in batch:
        if identity.id not in taken:
            reason = "external_id" if identity.external_id else "id"
            fail(identity.id, f"an identity with this {reason} already exists")
    created = [i for i in batch if i.id in taken]

    owner: dict[uuid.UUID, uuid.UUID] = {}  # credential id -> identity id
    cred_rows = []
    for identity in created:
        for credential in identity.credentials.values():
            owner[credential.id] = identity.id
            cred_rows.append(credential_row(identity.id, credential))
    taken_creds = await _insert_skipping_conflicts(
        conn, credentials, cred_rows, key=lambda r: (str(r["identity_id"]), r["type"])
    )
    for credential_id, identity_id in owner.items():
        if credential_id not in taken_creds:
            fail(identity_id, "the identity already has a credential of this type")

    id_rows = [
        row
        for identity in created
        for credential in identity.credentials.values()
        if credential.id in taken_creds
        for row in identifier_rows(identity.id, credential)
    ]
    taken_ids = await _insert_skipping_conflicts(
        conn, credential_identifiers, id_rows, key=lambda r: (r["type"], r["identifier"])
    )
    for row in id_rows:
        if row["id"] not in taken_ids:
            fail(row["identity_id"], _IDENTIFIER)

    for table, make in ((verifiable_addresses, verifiable_rows), (recovery_addresses, recovery_rows)):
        address_rows = [row for identity in created for row in make(identity)]
        taken_addresses = await _insert_skipping_conflicts(
            conn, table, address_rows, key=lambda r: (r["via"], r["value"])
        )
        for row in address_rows:
            if row["id"] not in taken_addresses:
                fail(row["identity_id"], _ADDRESS)

    undo = [i.id for i in created if i.id in failed]
    if undo:
        for table in (credential_identifiers, credentials, verifiable_addresses, recovery_addresses):
            await conn.execute(sa.delete(table).where(table.c.identity_id.in_(undo)))
        await conn.execute(sa.delete(identities).where(identities.c.id.in_(undo)))
    return [Conflict(failed[i.id]) if i.id in failed else i for i in batch]
