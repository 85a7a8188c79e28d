"""The ``OrganizationStore`` contract on SQLite and PostgreSQL (migration 0004)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sidecar import errors
from sidecar.identity.model import Identity
from sidecar.organization.model import Organization
from sidecar.storage.sql.database import SqlDatabase


async def test_create_get_by_id_slug_and_domain(database: SqlDatabase) -> None:
    store = database.organizations
    org = await store.create(Organization("ACME", "acme", ("acme.test", "acme.example")))
    got = await store.get(org.id)
    assert got is not None and got.label == "ACME" and set(got.domains) == {"acme.test", "acme.example"}
    assert (await store.get_by_slug("acme")) == got
    assert (await store.find_by_domain("acme.example")) == got
    assert await store.find_by_domain("other.test") is None
    assert await store.get(uuid.uuid4()) is None


async def test_slug_and_domain_are_unique_under_races(database: SqlDatabase) -> None:
    store = database.organizations
    results = await asyncio.gather(
        *(store.create(Organization(f"Org {i}", f"org-{i}", ("shared.test",))) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Organization) for r in results) == 1
    assert all(isinstance(r, errors.Conflict) for r in results if not isinstance(r, Organization))
    winner = next(r for r in results if isinstance(r, Organization))
    with pytest.raises(errors.Conflict, match="slug"):
        await store.create(Organization("Again", winner.slug))
    assert len(await store.list(page_size=50)) == 1


async def test_update_replaces_domains_and_frees_the_old_ones(database: SqlDatabase) -> None:
    store = database.organizations
    a = await store.create(Organization("A", "a", ("a.test", "old.test")))
    b = await store.create(Organization("B", "b", ()))
    updated = await store.update(Organization("A2", "a2", ("a.test",), id=a.id, created_at=a.created_at))
    assert updated.label == "A2" and updated.slug == "a2" and updated.domains == ("a.test",)
    assert (await store.update(Organization("B", "b", ("old.test",), id=b.id))).domains == ("old.test",)
    with pytest.raises(errors.Conflict):
        await store.update(Organization("B", "b", ("a.test",), id=b.id))
    assert (await store.get(b.id)).domains == ("old.test",)  # type: ignore[union-attr]  # unchanged
    with pytest.raises(errors.NotFound):
        await store.update(Organization("X", "x", id=uuid.uuid4()))


async def test_list_pages_by_id_and_filters_by_domain(database: SqlDatabase) -> None:
    store = database.organizations
    made = [await store.create(Organization(f"O{i}", f"o{i}", (f"o{i}.test",))) for i in range(5)]
    ids = sorted(o.id for o in made)
    first = await store.list(page_size=2)
    assert [o.id for o in first] == ids[:2]
    rest = await store.list(page_size=10, after=first[-1].id)
    assert [o.id for o in rest] == ids[2:]
    assert [o.slug for o in await store.list(page_size=10, domain="o3.test")] == ["o3"]


async def test_delete_refuses_while_an_identity_belongs(database: SqlDatabase) -> None:
    store = database.organizations
    org = await store.create(Organization("M", "m", ("m.test",)))
    member = await database.identities.create(
        Identity(schema_id="default", traits={"email": "x@m.test"}, organization_id=org.id)
    )
    assert [i.id for i in await database.identities.list(page_size=10, organization_id=org.id)] == [member.id]
    with pytest.raises(errors.Conflict):
        await store.delete(org.id)
    assert await store.get(org.id) is not None
    await database.identities.delete(member.id)
    assert await store.delete(org.id) is True
    assert await store.find_by_domain("m.test") is None  # domains went with it
    assert await store.delete(org.id) is False
