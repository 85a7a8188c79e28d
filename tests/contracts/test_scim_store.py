"""The ``ScimStore`` contract on SQLite and PostgreSQL (migration 0005)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sidecar import errors
from sidecar.organization.model import Organization
from sidecar.organization.provisioning import ScimRecord, VersionMismatch
from sidecar.storage.sql.database import SqlDatabase


async def _org(database: SqlDatabase, slug: str) -> uuid.UUID:
    return (await database.organizations.create(Organization(slug.upper(), slug))).id


async def test_records_versions_and_races(database: SqlDatabase) -> None:
    store = database.scim
    org, other = await _org(database, "acme"), await _org(database, "globex")
    ada = await store.create(ScimRecord(org, "User", {"userName": "Ada"}, "ada"))
    assert ada.version == 1
    with pytest.raises(errors.Conflict, match="userName"):
        await store.create(ScimRecord(org, "User", {"userName": "ADA"}, "ada"))
    await store.create(ScimRecord(other, "User", {"userName": "ada"}, "ada"))  # per organization
    assert [r.id for r in await store.list(org, "User")] == [ada.id]
    assert await store.get(other, "User", ada.id) is None
    assert await store.get(org, "Group", ada.id) is None

    # Two writers holding version 1: exactly one wins, the other is told the version moved on.
    results = await asyncio.gather(
        *(
            store.update(
                ScimRecord(org, "User", {"userName": f"Ada{i}"}, "ada", id=ada.id), expected_version=1
            )
            for i in range(4)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, ScimRecord) for r in results) == 1
    assert all(isinstance(r, VersionMismatch) for r in results if not isinstance(r, ScimRecord))
    stored = await store.get(org, "User", ada.id)
    assert stored is not None and stored.version == 2
    with pytest.raises(errors.NotFound):
        await store.update(ScimRecord(org, "User", {}, None, id=uuid.uuid4()))
    with pytest.raises(VersionMismatch):
        await store.delete(org, "User", ada.id, expected_version=1)
    assert await store.delete(org, "User", ada.id, expected_version=2) is True
    assert await store.delete(org, "User", ada.id) is False


async def test_tokens_by_digest_replace_and_go_with_the_organization(database: SqlDatabase) -> None:
    store = database.scim
    org = await _org(database, "acme")
    await store.set_token(org, "digest-1")
    assert await store.organization_of_token("digest-1") == org
    await store.set_token(org, "digest-2")
    assert await store.organization_of_token("digest-1") is None
    assert await store.organization_of_token("digest-2") == org
    await store.create(ScimRecord(org, "Group", {"displayName": "admin"}))
    assert await database.organizations.delete(org) is True
    assert await store.organization_of_token("digest-2") is None
    assert await store.list(org, "Group") == []
    assert await store.delete_token(org) is False
