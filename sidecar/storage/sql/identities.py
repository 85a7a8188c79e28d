"""``IdentityStore`` on SQLite or PostgreSQL.

Every write is one transaction, and uniqueness is left to the database's constraints rather than
checked first: a check-then-insert would let two racing registrations of one email both pass.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.errors import BadRequest, Conflict, NotFound
from sidecar.identity import refusals
from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.storage.decoded import Decoded
from sidecar.storage.sql.engine import Connector, translate_errors
from sidecar.storage.sql.identity_batch import insert_identities
from sidecar.storage.sql.identity_query import identity_from_row, select_identities
from sidecar.storage.sql.identity_rows import (
    delete_children,
    identity_values,
    insert_children,
    insert_credential,
)
from sidecar.storage.sql.sqlite_reads import Read
from sidecar.storage.sql.tables import (
    credential_identifiers,
    credentials,
    identities,
    recovery_addresses,
    verifiable_addresses,
)

_NO_CREDENTIALS = (None, "[]")
"""The credentials column of an identity without any (of the types read), as read: SQLite's text,
or PostgreSQL's NULL (``json_agg`` of no row)."""


def conflict_message(exc: sa.exc.IntegrityError) -> str:
    """Name what collided from the constraint, without echoing SQL or the conflicting value."""
    detail = str(exc.orig)
    if "credential_identifiers" in detail:
        return refusals.TAKEN_IDENTIFIER
    if "external_id" in detail:
        return refusals.TAKEN_EXTERNAL_ID
    if "addresses" in detail:
        return refusals.TAKEN_ADDRESS
    if "identity_credentials" in detail:
        return refusals.TAKEN_CREDENTIAL
    return refusals.TAKEN_ID


class SqlIdentityStore:
    def __init__(self, connector: Connector) -> None:
        self._db = connector
        # Built once: the SELECT with its three JSON subqueries took 0.8 ms of CPU to build and
        # its cache key 0.3 ms more, per call, on a session-cache miss (issue 15). ``select``
        # adds a WHERE to this; ``get`` runs a finished statement with the id bound at execute.
        self._base = select_identities(connector.dialect)
        self._by_id = connector.prepare(
            self._base.where(identities.c.id == sa.bindparam("identity_id", type_=identities.c.id.type))
            .order_by(identities.c.id)
            .limit(1)
        )
        # get_for_session's read per set of types, with which of its rows may be remembered.
        self._for_session: dict[frozenset[str], tuple[Read, Callable[[tuple[Any, ...]], bool]]] = {}
        # get_for_session's identities by the row read (``sidecar.storage.decoded``): rows
        # without credentials only, so that no secret is kept.
        self._decoded: Decoded[Identity] = Decoded()

    async def _insert(self, conn: AsyncConnection, identity: Identity) -> None:
        row = {"id": identity.id, "created_at": identity.created_at, **identity_values(identity)}
        await conn.execute(sa.insert(identities).values(row))
        await insert_children(conn, identity)

    async def create(self, identity: Identity) -> Identity:
        async with self._db.write(conflict_message) as conn:
            await self._insert(conn, identity)
        return identity

    async def create_many(self, identities: Sequence[Identity]) -> builtins.list[Identity | Exception]:
        try:
            async with self._db.write(conflict_message) as conn:
                return await insert_identities(conn, identities)
        except (Conflict, BadRequest):
            # A row the bulk path cannot skip (an over-long value on PostgreSQL, a constraint
            # other than uniqueness) rolled the whole batch back: now one savepoint per item.
            return await self._create_each(identities)

    async def _create_each(self, identities: Sequence[Identity]) -> builtins.list[Identity | Exception]:
        results: builtins.list[Identity | Exception] = []
        async with self._db.write(conflict_message) as conn:
            for identity in identities:
                try:
                    with translate_errors(conflict_message):
                        async with conn.begin_nested():
                            await self._insert(conn, identity)
                except (Conflict, BadRequest) as exc:
                    results.append(exc)
                else:
                    results.append(identity)
        return results

    async def update(self, identity: Identity) -> Identity:
        values = identity_values(replace(identity, updated_at=utcnow()))
        async with self._db.write(conflict_message) as conn:
            result = await conn.execute(
                sa.update(identities).where(identities.c.id == identity.id).values(values)
            )
            if result.rowcount == 0:
                raise NotFound("identity not found")
            await delete_children(conn, identity.id)
            await insert_children(conn, identity)
            return (await self._select(conn, identities.c.id == identity.id))[0]

    async def _select(
        self,
        conn: AsyncConnection,
        *where: sa.ColumnElement[bool],
        limit: int | None = None,
    ) -> builtins.list[Identity]:
        query = self._base.where(*where).order_by(identities.c.id).limit(limit)
        return [identity_from_row(row) for row in await conn.execute(query)]

    async def _find(self, *where: sa.ColumnElement[bool]) -> Identity | None:
        async with self._db.read() as conn:
            found = await self._select(conn, *where, limit=1)
        return found[0] if found else None

    async def get(self, identity_id: uuid.UUID) -> Identity | None:
        row = await self._db.fetch_one(self._by_id, {"identity_id": identity_id})
        return identity_from_row(row) if row is not None else None

    async def get_for_session(
        self, identity_id: uuid.UUID, credential_types: Collection[str]
    ) -> Identity | None:
        types = frozenset(credential_types)
        prepared = self._for_session.get(types)
        if prepared is None:
            dialect = self._db.dialect
            # JSON as text on PostgreSQL: asyncpg's row is then plain values, a key as SQLite's.
            base = select_identities(
                dialect, credential_types=sorted(types), admin=False, json_text=dialect == "postgresql"
            )
            read = self._db.prepare(
                base.where(identities.c.id == sa.bindparam("identity_id", type_=identities.c.id.type))
                .order_by(identities.c.id)
                .limit(1)
            )
            at = [c.key for c in read.statement.selected_columns].index("j_credentials")
            prepared = self._for_session[types] = (read, lambda raw: raw[at] in _NO_CREDENTIALS)
        read, keep = prepared
        return await self._db.fetch_made(
            read, {"identity_id": identity_id}, identity_from_row, self._decoded, keep
        )

    async def get_by_external_id(self, external_id: str) -> Identity | None:
        return await self._find(identities.c.external_id == external_id)

    async def find_by_identifier(self, credential_type: str, identifier: str) -> Identity | None:
        owner = sa.select(credential_identifiers.c.identity_id).where(
            credential_identifiers.c.type == credential_type,
            credential_identifiers.c.identifier == identifier,
        )
        return await self._find(identities.c.id.in_(owner.scalar_subquery()))

    async def list(
        self,
        *,
        page_size: int,
        after: uuid.UUID | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        credentials_identifier: str | None = None,
        organization_id: uuid.UUID | None = None,
    ) -> builtins.list[Identity]:
        where: builtins.list[sa.ColumnElement[bool]] = []
        if organization_id is not None:
            where.append(identities.c.organization_id == organization_id)
        if after is not None:
            where.append(identities.c.id > after)
        if ids is not None:
            where.append(identities.c.id.in_(list(ids)))
        if credentials_identifier is not None:
            owners = sa.select(credential_identifiers.c.identity_id).where(
                credential_identifiers.c.identifier == credentials_identifier
            )
            where.append(identities.c.id.in_(owners.scalar_subquery()))
        async with self._db.read() as conn:
            return await self._select(conn, *where, limit=page_size)

    async def search_traits(
        self, paths: Sequence[str], text: str, *, page_size: int, after: uuid.UUID | None = None
    ) -> builtins.list[Identity]:
        if not paths or not text:
            return []
        # LIKE wildcards in the text are literal; the backslash is the escape character.
        escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        matches = [
            sa.func.lower(identities.c.traits[tuple(path.split("."))].as_string()).like(pattern, escape="\\")
            for path in paths
        ]
        where: builtins.list[sa.ColumnElement[bool]] = [sa.or_(*matches)]
        if after is not None:
            where.append(identities.c.id > after)
        async with self._db.read() as conn:
            return await self._select(conn, *where, limit=page_size)

    async def delete(self, identity_id: uuid.UUID) -> bool:
        async with self._db.write() as conn:
            await delete_children(conn, identity_id)
            result = await conn.execute(sa.delete(identities).where(identities.c.id == identity_id))
            return result.rowcount > 0

    async def count(self) -> int:
        async with self._db.read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(identities))).scalar_one())

    async def _touch(self, conn: AsyncConnection, identity_id: uuid.UUID) -> None:
        stmt = sa.update(identities).where(identities.c.id == identity_id).values(updated_at=utcnow())
        if (await conn.execute(stmt)).rowcount == 0:
            raise NotFound("identity not found")

    async def _drop_credential(self, conn: AsyncConnection, identity_id: uuid.UUID, type_: str) -> int:
        await conn.execute(
            sa.delete(credential_identifiers).where(
                credential_identifiers.c.identity_id == identity_id, credential_identifiers.c.type == type_
            )
        )
        stmt = sa.delete(credentials).where(
            credentials.c.identity_id == identity_id, credentials.c.type == type_
        )
        return (await conn.execute(stmt)).rowcount

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> None:
        async with self._db.write(conflict_message) as conn:
            await self._touch(conn, identity_id)
            await self._drop_credential(conn, identity_id, credential.type)
            await insert_credential(conn, identity_id, credential)

    async def delete_credential(self, identity_id: uuid.UUID, credential_type: str) -> bool:
        async with self._db.write() as conn:
            deleted = await self._drop_credential(conn, identity_id, credential_type)
            if deleted:
                await self._touch(conn, identity_id)
            return deleted > 0

    async def _find_address(self, table: sa.Table, via: str, value: str) -> tuple[Identity, uuid.UUID] | None:
        query = (
            select_identities(self._db.dialect, table.c.id.label("address_id"))
            .join(table, table.c.identity_id == identities.c.id)
            .where(table.c.via == via, table.c.value == value)
        )
        async with self._db.read() as conn:
            row = (await conn.execute(query)).first()
        return (identity_from_row(row), row.address_id) if row is not None else None

    async def find_verifiable_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None:
        return await self._find_address(verifiable_addresses, via, value)

    async def find_recovery_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None:
        return await self._find_address(recovery_addresses, via, value)

    async def mark_address_verified(self, address_id: uuid.UUID) -> uuid.UUID | None:
        """Idempotent: verifying twice, or an address deleted meanwhile, is not an error (None)."""
        now = utcnow()
        values: dict[str, Any] = {
            "verified": True,
            "status": "completed",
            "verified_at": now,
            "updated_at": now,
        }
        stmt = (
            sa.update(verifiable_addresses)
            .where(verifiable_addresses.c.id == address_id, verifiable_addresses.c.verified.is_(False))
            .values(values)
            .returning(verifiable_addresses.c.identity_id)
        )
        async with self._db.write() as conn:
            owner: uuid.UUID | None = (await conn.execute(stmt)).scalar_one_or_none()
        return owner

    async def ping(self) -> None:
        async with self._db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
