"""Identity <-> rows across the five identity tables: insert one whole, load many at once."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress, new_id
from sidecar.storage.sql.tables import (
    credential_identifiers,
    credentials,
    recovery_addresses,
    verifiable_addresses,
)


def identity_values(identity: Identity) -> dict[str, Any]:
    """The ``identities`` row, without ``id`` and ``created_at`` (fixed once inserted)."""
    return {
        "schema_id": identity.schema_id,
        "traits": identity.traits,
        "state": identity.state,
        "state_changed_at": identity.state_changed_at,
        "metadata_public": identity.metadata_public,
        "metadata_admin": identity.metadata_admin,
        "external_id": identity.external_id,
        "organization_id": identity.organization_id,
        "updated_at": identity.updated_at,
    }


async def insert_credential(conn: AsyncConnection, identity_id: uuid.UUID, credential: Credential) -> None:
    await conn.execute(
        sa.insert(credentials).values(
            id=credential.id,
            identity_id=identity_id,
            type=credential.type,
            config=credential.config,
            version=credential.version,
            created_at=credential.created_at,
            updated_at=credential.updated_at,
        )
    )
    if credential.identifiers:
        rows = [
            {
                "id": new_id(),
                "identity_id": identity_id,
                "credential_id": credential.id,
                "type": credential.type,
                "identifier": identifier,
            }
            for identifier in dict.fromkeys(credential.identifiers)
        ]
        await conn.execute(sa.insert(credential_identifiers), rows)


async def insert_children(conn: AsyncConnection, identity: Identity) -> None:
    """Credentials, identifiers and addresses; the identity row must exist already."""
    for credential in identity.credentials.values():
        await insert_credential(conn, identity.id, credential)
    if identity.verifiable_addresses:
        await conn.execute(
            sa.insert(verifiable_addresses),
            [
                {
                    "id": a.id,
                    "identity_id": identity.id,
                    "via": a.via,
                    "value": a.value,
                    "verified": a.verified,
                    "status": a.status,
                    "verified_at": a.verified_at,
                    "created_at": a.created_at,
                    "updated_at": a.updated_at,
                }
                for a in identity.verifiable_addresses
            ],
        )
    if identity.recovery_addresses:
        await conn.execute(
            sa.insert(recovery_addresses),
            [
                {
                    "id": a.id,
                    "identity_id": identity.id,
                    "via": a.via,
                    "value": a.value,
                    "created_at": a.created_at,
                    "updated_at": a.updated_at,
                }
                for a in identity.recovery_addresses
            ],
        )


async def delete_children(conn: AsyncConnection, identity_id: uuid.UUID) -> None:
    # Explicit rather than relying on ON DELETE CASCADE, which SQLite only honours with a pragma.
    for table in (credential_identifiers, credentials, verifiable_addresses, recovery_addresses):
        await conn.execute(sa.delete(table).where(table.c.identity_id == identity_id))


async def _rows_by_identity(
    conn: AsyncConnection, table: sa.Table, ids: Sequence[uuid.UUID], *order: sa.ColumnElement[Any]
) -> dict[uuid.UUID, list[sa.Row[Any]]]:
    grouped: dict[uuid.UUID, list[sa.Row[Any]]] = defaultdict(list)
    result = await conn.execute(sa.select(table).where(table.c.identity_id.in_(ids)).order_by(*order))
    for row in result:
        grouped[row.identity_id].append(row)
    return grouped


async def load_identities(conn: AsyncConnection, rows: Sequence[sa.Row[Any]]) -> list[Identity]:
    """Assemble full identities for ``identities`` rows with four queries, whatever their number."""
    if not rows:
        return []
    ids = [row.id for row in rows]
    creds = await _rows_by_identity(conn, credentials, ids, credentials.c.type)
    idents = await _rows_by_identity(conn, credential_identifiers, ids, credential_identifiers.c.identifier)
    verifiable = await _rows_by_identity(
        conn, verifiable_addresses, ids, verifiable_addresses.c.created_at, verifiable_addresses.c.id
    )
    recovery = await _rows_by_identity(
        conn, recovery_addresses, ids, recovery_addresses.c.created_at, recovery_addresses.c.id
    )
    by_credential: dict[uuid.UUID, list[str]] = defaultdict(list)
    for identity_rows in idents.values():
        for row in identity_rows:
            by_credential[row.credential_id].append(row.identifier)
    return [
        Identity(
            id=row.id,
            schema_id=row.schema_id,
            traits=row.traits,
            state=row.state,
            state_changed_at=row.state_changed_at,
            metadata_public=row.metadata_public,
            metadata_admin=row.metadata_admin,
            external_id=row.external_id,
            organization_id=row.organization_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            credentials={
                c.type: Credential(
                    id=c.id,
                    type=c.type,
                    identifiers=tuple(by_credential.get(c.id, ())),
                    config=c.config,
                    version=c.version,
                    created_at=c.created_at,
                    updated_at=c.updated_at,
                )
                for c in creds.get(row.id, ())
            },
            verifiable_addresses=tuple(
                VerifiableAddress(
                    id=a.id,
                    via=a.via,
                    value=a.value,
                    verified=a.verified,
                    status=a.status,
                    verified_at=a.verified_at,
                    created_at=a.created_at,
                    updated_at=a.updated_at,
                )
                for a in verifiable.get(row.id, ())
            ),
            recovery_addresses=tuple(
                RecoveryAddress(
                    id=a.id, via=a.via, value=a.value, created_at=a.created_at, updated_at=a.updated_at
                )
                for a in recovery.get(row.id, ())
            ),
        )
        for row in rows
    ]
