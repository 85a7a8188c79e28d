"""Identity -> rows across the five identity tables, inserted whole (loading: ``identity_query``)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.identity.model import Credential, Identity, new_id
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


def credential_row(identity_id: uuid.UUID, credential: Credential) -> dict[str, Any]:
    return {
        "id": credential.id,
        "identity_id": identity_id,
        "type": credential.type,
        "config": credential.config,
        "version": credential.version,
        "created_at": credential.created_at,
        "updated_at": credential.updated_at,
    }


def identifier_rows(identity_id: uuid.UUID, credential: Credential) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id(),
            "identity_id": identity_id,
            "credential_id": credential.id,
            "type": credential.type,
            "identifier": identifier,
        }
        for identifier in dict.fromkeys(credential.identifiers)
    ]


def verifiable_rows(identity: Identity) -> list[dict[str, Any]]:
    return [
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
    ]


def recovery_rows(identity: Identity) -> list[dict[str, Any]]:
    return [
        {
            "id": a.id,
            "identity_id": identity.id,
            "via": a.via,
            "value": a.value,
            "created_at": a.created_at,
            "updated_at": a.updated_at,
        }
        for a in identity.recovery_addresses
    ]


async def insert_credential(conn: AsyncConnection, identity_id: uuid.UUID, credential: Credential) -> None:
    await conn.execute(sa.insert(credentials).values(credential_row(identity_id, credential)))
    if credential.identifiers:
        await conn.execute(sa.insert(credential_identifiers), identifier_rows(identity_id, credential))


async def insert_children(conn: AsyncConnection, identity: Identity) -> None:
    """Credentials, identifiers and addresses; the identity row must exist already."""
    for credential in identity.credentials.values():
        await insert_credential(conn, identity.id, credential)
    if identity.verifiable_addresses:
        await conn.execute(sa.insert(verifiable_addresses), verifiable_rows(identity))
    if identity.recovery_addresses:
        await conn.execute(sa.insert(recovery_addresses), recovery_rows(identity))


async def delete_children(conn: AsyncConnection, identity_id: uuid.UUID) -> None:
    # Explicit rather than relying on ON DELETE CASCADE, which SQLite only honours with a pragma.
    for table in (credential_identifiers, credentials, verifiable_addresses, recovery_addresses):
        await conn.execute(sa.delete(table).where(table.c.identity_id == identity_id))
