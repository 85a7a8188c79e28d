"""``ScimStore`` on SQLite or PostgreSQL: provisioned SCIM resources and per-organization token
digests. Versions are bumped in the same ``UPDATE`` that checks them, so two racing writers with
the same ``If-Match`` end in one success and one ``VersionMismatch``."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa

from sidecar.errors import NotFound
from sidecar.organization.model import utcnow
from sidecar.organization.provisioning import ResourceKind, ScimRecord, VersionMismatch
from sidecar.storage.sql.engine import Connector
from sidecar.storage.sql.tables import scim_resources, scim_tokens


def _conflict(exc: sa.exc.IntegrityError) -> str:
    if "unique_key" in str(exc.orig):
        return "userName is already taken in this organization"
    return "the resource already exists"


def _record(row: sa.Row[object]) -> ScimRecord:
    m = row._mapping
    return ScimRecord(
        id=m["id"],
        organization_id=m["organization_id"],
        kind=m["kind"],
        body=dict(m["body"]),
        unique_key=m["unique_key"],
        version=m["version"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


class SqlScimStore:
    def __init__(self, connector: Connector) -> None:
        self._db = connector

    def _where(self, organization_id: uuid.UUID, kind: ResourceKind) -> tuple[sa.ColumnElement[bool], ...]:
        return (scim_resources.c.organization_id == organization_id, scim_resources.c.kind == kind)

    async def get(
        self, organization_id: uuid.UUID, kind: ResourceKind, record_id: uuid.UUID
    ) -> ScimRecord | None:
        query = sa.select(scim_resources).where(
            *self._where(organization_id, kind), scim_resources.c.id == record_id
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return _record(row) if row is not None else None

    async def list(self, organization_id: uuid.UUID, kind: ResourceKind) -> builtins.list[ScimRecord]:
        query = (
            sa.select(scim_resources).where(*self._where(organization_id, kind)).order_by(scim_resources.c.id)
        )
        async with self._db.read() as conn:
            return [_record(r) for r in (await conn.execute(query)).all()]

    async def create(self, record: ScimRecord) -> ScimRecord:
        values = {
            "id": record.id,
            "organization_id": record.organization_id,
            "kind": record.kind,
            "body": record.body,
            "unique_key": record.unique_key,
            "version": 1,
            "created_at": record.created_at,
            "updated_at": record.created_at,
        }
        async with self._db.write(_conflict) as conn:
            await conn.execute(sa.insert(scim_resources).values(values))
        return replace(record, version=1, updated_at=record.created_at)

    async def update(self, record: ScimRecord, *, expected_version: int | None = None) -> ScimRecord:
        now = utcnow()
        where = [*self._where(record.organization_id, record.kind), scim_resources.c.id == record.id]
        if expected_version is not None:
            where.append(scim_resources.c.version == expected_version)
        stmt = (
            sa.update(scim_resources)
            .where(*where)
            .values(
                body=record.body,
                unique_key=record.unique_key,
                version=scim_resources.c.version + 1,
                updated_at=now,
            )
            .returning(scim_resources.c.version)
        )
        async with self._db.write(_conflict) as conn:
            version = (await conn.execute(stmt)).scalar_one_or_none()
            if version is None:
                exists = await conn.execute(sa.select(scim_resources.c.id).where(*where[:3]))
                if exists.first() is None:
                    raise NotFound("the resource does not exist")
                raise VersionMismatch()
        return replace(record, version=int(version), updated_at=now)

    async def delete(
        self,
        organization_id: uuid.UUID,
        kind: ResourceKind,
        record_id: uuid.UUID,
        *,
        expected_version: int | None = None,
    ) -> bool:
        where = [*self._where(organization_id, kind), scim_resources.c.id == record_id]
        versioned = (
            [*where, scim_resources.c.version == expected_version] if expected_version is not None else where
        )
        async with self._db.write() as conn:
            if (await conn.execute(sa.delete(scim_resources).where(*versioned))).rowcount > 0:
                return True
            if (
                expected_version is not None
                and (await conn.execute(sa.select(scim_resources.c.id).where(*where))).first()
            ):
                raise VersionMismatch()
        return False

    async def set_token(self, organization_id: uuid.UUID, digest: str) -> None:
        async with self._db.write() as conn:
            await conn.execute(sa.delete(scim_tokens).where(scim_tokens.c.organization_id == organization_id))
            await conn.execute(
                sa.insert(scim_tokens).values(
                    organization_id=organization_id, token_digest=digest, created_at=utcnow()
                )
            )

    async def delete_token(self, organization_id: uuid.UUID) -> bool:
        async with self._db.write() as conn:
            result = await conn.execute(
                sa.delete(scim_tokens).where(scim_tokens.c.organization_id == organization_id)
            )
            return result.rowcount > 0

    async def tokens_issued(self, organization_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        if not organization_ids:
            return {}
        query = sa.select(scim_tokens.c.organization_id, scim_tokens.c.created_at).where(
            scim_tokens.c.organization_id.in_(list(organization_ids))
        )
        async with self._db.read() as conn:
            return {row.organization_id: row.created_at for row in await conn.execute(query)}

    async def organization_of_token(self, digest: str) -> uuid.UUID | None:
        query = sa.select(scim_tokens.c.organization_id).where(scim_tokens.c.token_digest == digest)
        async with self._db.read() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        return found if isinstance(found, uuid.UUID) else (uuid.UUID(str(found)) if found else None)
