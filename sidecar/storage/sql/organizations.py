"""``OrganizationStore`` on SQLite or PostgreSQL: organizations and their domains, one
transaction per write; the unique constraints on slug and domain settle races."""

from __future__ import annotations

import builtins
import uuid
from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.errors import Conflict, NotFound
from sidecar.organization import refusals
from sidecar.organization.model import Organization
from sidecar.storage.sql.engine import Connector
from sidecar.storage.sql.tables import identities, organization_domains, organizations


def _conflict(exc: sa.exc.IntegrityError) -> str:
    detail = str(exc.orig)
    if "organization_domains" in detail or "domain" in detail:
        return refusals.DOMAIN_CLAIMED
    if "slug" in detail:
        return refusals.TAKEN_SLUG
    return refusals.TAKEN_ID


class SqlOrganizationStore:
    def __init__(self, connector: Connector) -> None:
        self._db = connector

    async def _insert_domains(self, conn: AsyncConnection, organization: Organization) -> None:
        if organization.domains:
            await conn.execute(
                sa.insert(organization_domains),
                [{"domain": d, "organization_id": organization.id} for d in organization.domains],
            )

    async def create(self, organization: Organization) -> Organization:
        row = {
            "id": organization.id,
            "label": organization.label,
            "slug": organization.slug,
            "created_at": organization.created_at,
            "updated_at": organization.updated_at,
        }
        async with self._db.write(_conflict) as conn:
            await conn.execute(sa.insert(organizations).values(row))
            await self._insert_domains(conn, organization)
        return organization

    async def update(self, organization: Organization) -> Organization:
        values = {
            "label": organization.label,
            "slug": organization.slug,
            "updated_at": organization.updated_at,
        }
        async with self._db.write(_conflict) as conn:
            stmt = sa.update(organizations).where(organizations.c.id == organization.id).values(values)
            if (await conn.execute(stmt)).rowcount == 0:
                raise NotFound("Unable to locate the resource")
            await conn.execute(
                sa.delete(organization_domains).where(
                    organization_domains.c.organization_id == organization.id
                )
            )
            await self._insert_domains(conn, organization)
            return (await self._select(conn, organizations.c.id == organization.id))[0]

    async def _select(
        self, conn: AsyncConnection, *where: sa.ColumnElement[bool], limit: int | None = None
    ) -> builtins.list[Organization]:
        query = sa.select(organizations).where(*where).order_by(organizations.c.id).limit(limit)
        rows = (await conn.execute(query)).all()
        if not rows:
            return []
        ids = [r.id for r in rows]
        domains: dict[uuid.UUID, list[str]] = defaultdict(list)
        found = await conn.execute(
            sa.select(organization_domains)
            .where(organization_domains.c.organization_id.in_(ids))
            .order_by(organization_domains.c.domain)
        )
        for d in found:
            domains[d.organization_id].append(d.domain)
        return [
            Organization(
                id=r.id,
                label=r.label,
                slug=r.slug,
                domains=tuple(domains[r.id]),
                created_at=r.created_at,
                updated_at=r.updated_at,
            )
            for r in rows
        ]

    async def _one(self, *where: sa.ColumnElement[bool]) -> Organization | None:
        async with self._db.read() as conn:
            found = await self._select(conn, *where, limit=1)
        return found[0] if found else None

    async def get(self, organization_id: uuid.UUID) -> Organization | None:
        return await self._one(organizations.c.id == organization_id)

    async def get_by_slug(self, slug: str) -> Organization | None:
        return await self._one(organizations.c.slug == slug)

    async def find_by_domain(self, domain: str) -> Organization | None:
        owner = sa.select(organization_domains.c.organization_id).where(
            organization_domains.c.domain == domain
        )
        return await self._one(organizations.c.id.in_(owner.scalar_subquery()))

    async def list(
        self, *, page_size: int, after: uuid.UUID | None = None, domain: str | None = None
    ) -> builtins.list[Organization]:
        where: list[sa.ColumnElement[bool]] = []
        if after is not None:
            where.append(organizations.c.id > after)
        if domain is not None:
            owner = sa.select(organization_domains.c.organization_id).where(
                organization_domains.c.domain == domain
            )
            where.append(organizations.c.id.in_(owner.scalar_subquery()))
        async with self._db.read() as conn:
            return await self._select(conn, *where, limit=page_size)

    async def delete(self, organization_id: uuid.UUID) -> bool:
        members = sa.select(identities.c.id).where(identities.c.organization_id == organization_id)
        async with self._db.write() as conn:
            # One statement: an identity joining meanwhile cannot be left pointing at nothing.
            stmt = sa.delete(organizations).where(organizations.c.id == organization_id, ~members.exists())
            if (await conn.execute(stmt)).rowcount > 0:
                return True
            exists = await conn.execute(
                sa.select(organizations.c.id).where(organizations.c.id == organization_id)
            )
            if exists.first() is None:
                return False
        raise Conflict(refusals.HAS_MEMBERS)
