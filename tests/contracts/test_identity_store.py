"""IdentityStore contract, run on SQLite and PostgreSQL (the ``dsn`` fixture)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from sidecar.errors import BadRequest, Conflict, NotFound
from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress
from sidecar.identity.store import IdentityStore
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.sqlite_reads import Read
from sidecar.storage.sql.tables import (
    credential_identifiers,
    credentials,
    recovery_addresses,
    verifiable_addresses,
)


@pytest.fixture
def store(database: SqlDatabase) -> IdentityStore:
    return database.identities


def make_identity(email: str, **overrides: object) -> Identity:
    identity = Identity(
        schema_id="default",
        traits={"email": email, "name": {"first": "Ada"}},
        credentials={
            "password": Credential(
                type="password", identifiers=(email,), config={"hashed_password": "$argon2"}
            )
        },
        verifiable_addresses=(VerifiableAddress(value=email),),
        recovery_addresses=(RecoveryAddress(value=email),),
        metadata_public={"plan": "free"},
    )
    return replace(identity, **overrides)  # type: ignore[arg-type]


async def test_create_then_get_round_trips(store: IdentityStore) -> None:
    identity = make_identity("ada@example.com", external_id="ext-1", organization_id=uuid.uuid4())
    assert await store.create(identity) == identity
    assert await store.get(identity.id) == identity
    assert await store.get(uuid.uuid4()) is None
    assert await store.get_by_external_id("ext-1") == identity
    assert await store.count() == 1


async def test_find_by_identifier_is_per_credential_type(store: IdentityStore) -> None:
    identity = make_identity("ada@example.com")
    await store.create(identity)
    found = await store.find_by_identifier("password", "ada@example.com")
    assert found is not None and found.id == identity.id
    assert await store.find_by_identifier("code", "ada@example.com") is None
    assert await store.find_by_identifier("password", "ADA@example.com") is None


async def test_duplicate_identifier_conflicts_without_leaking_sql(store: IdentityStore) -> None:
    await store.create(make_identity("ada@example.com"))
    other = make_identity("ada@example.com", verifiable_addresses=(), recovery_addresses=())
    with pytest.raises(Conflict) as caught:
        await store.create(other)
    assert caught.value.message == "an identity with this identifier already exists"
    assert await store.get(other.id) is None


async def test_write_is_all_or_nothing(store: IdentityStore) -> None:
    await store.create(make_identity("ada@example.com"))
    # Fresh identifier, but its address collides: the identity row must not survive.
    clash = make_identity(
        "bob@example.com", verifiable_addresses=(VerifiableAddress(value="ada@example.com"),)
    )
    with pytest.raises(Conflict):
        await store.create(clash)
    assert await store.get(clash.id) is None
    assert await store.find_by_identifier("password", "bob@example.com") is None
    assert await store.count() == 1


async def test_external_id_is_unique(store: IdentityStore) -> None:
    await store.create(make_identity("a@example.com", external_id="same"))
    with pytest.raises(Conflict, match="external_id"):
        await store.create(make_identity("b@example.com", external_id="same"))


async def test_list_is_keyset_paginated_by_id(store: IdentityStore) -> None:
    created = [make_identity(f"user{i}@example.com") for i in range(5)]
    for identity in created:
        await store.create(identity)
    pages: list[list[uuid.UUID]] = []
    after: uuid.UUID | None = None
    while page := await store.list(page_size=2, after=after):
        pages.append([i.id for i in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == sorted(i.id for i in created)


async def test_list_filters(store: IdentityStore) -> None:
    a, b, c = (make_identity(f"{n}@example.com") for n in "abc")
    for identity in (a, b, c):
        await store.create(identity)
    by_ids = await store.list(page_size=10, ids=[a.id, c.id])
    assert {i.id for i in by_ids} == {a.id, c.id}
    by_identifier = await store.list(page_size=10, credentials_identifier="b@example.com")
    assert [i.id for i in by_identifier] == [b.id]
    assert await store.list(page_size=10, credentials_identifier="nobody@example.com") == []


async def test_update_replaces_everything_and_frees_old_identifiers(store: IdentityStore) -> None:
    identity = make_identity("old@example.com")
    await store.create(identity)
    changed = replace(
        identity,
        traits={"email": "new@example.com"},
        state="inactive",
        metadata_admin={"note": "x"},
        credentials={"password": Credential(type="password", identifiers=("new@example.com",))},
        verifiable_addresses=(VerifiableAddress(value="new@example.com"),),
        recovery_addresses=(),
    )
    updated = await store.update(changed)
    assert updated.updated_at >= identity.updated_at and updated.created_at == identity.created_at
    assert replace(updated, updated_at=changed.updated_at) == changed
    assert await store.get(identity.id) == updated
    assert await store.find_by_identifier("password", "old@example.com") is None
    assert await store.find_verifiable_address("email", "old@example.com") is None
    await store.create(make_identity("old@example.com"))


async def test_update_conflict_leaves_identity_unchanged(store: IdentityStore) -> None:
    first, second = make_identity("a@example.com"), make_identity("b@example.com")
    await store.create(first)
    await store.create(second)
    steal = replace(
        second, credentials={"password": Credential(type="password", identifiers=("a@example.com",))}
    )
    with pytest.raises(Conflict):
        await store.update(steal)
    assert await store.get(second.id) == second


async def test_update_missing_identity_is_not_found(store: IdentityStore) -> None:
    with pytest.raises(NotFound):
        await store.update(make_identity("ghost@example.com"))


async def test_delete_cascades(store: IdentityStore) -> None:
    identity = make_identity("ada@example.com")
    await store.create(identity)
    assert await store.delete(identity.id) is True
    assert await store.delete(identity.id) is False
    assert await store.get(identity.id) is None
    assert await store.find_by_identifier("password", "ada@example.com") is None
    assert await store.find_verifiable_address("email", "ada@example.com") is None
    assert await store.find_recovery_address("email", "ada@example.com") is None
    await store.create(make_identity("ada@example.com"))


async def test_save_and_delete_credential(store: IdentityStore) -> None:
    identity = make_identity("ada@example.com")
    await store.create(identity)
    totp = Credential(type="totp", config={"totp_url": "otpauth://x"})
    await store.save_credential(identity.id, totp)
    replacement = Credential(type="password", identifiers=("ada2@example.com",), config={"h": "2"}, version=1)
    await store.save_credential(identity.id, replacement)
    stored = await store.get(identity.id)
    assert stored is not None and stored.credentials == {"password": replacement, "totp": totp}
    assert await store.find_by_identifier("password", "ada@example.com") is None
    found = await store.find_by_identifier("password", "ada2@example.com")
    assert found is not None and found.id == identity.id

    assert await store.delete_credential(identity.id, "totp") is True
    assert await store.delete_credential(identity.id, "totp") is False
    stored = await store.get(identity.id)
    assert stored is not None and set(stored.credentials) == {"password"}


async def test_save_credential_conflicts_and_missing_identity(store: IdentityStore) -> None:
    a, b = make_identity("a@example.com"), make_identity("b@example.com")
    await store.create(a)
    await store.create(b)
    with pytest.raises(Conflict):
        await store.save_credential(b.id, Credential(type="password", identifiers=("a@example.com",)))
    assert await store.get(b.id) == b
    with pytest.raises(NotFound):
        await store.save_credential(uuid.uuid4(), Credential(type="totp"))


async def test_addresses(store: IdentityStore) -> None:
    identity = make_identity("ada@example.com")
    await store.create(identity)
    found = await store.find_verifiable_address("email", "ada@example.com")
    assert found is not None
    owner, address_id = found
    assert owner.id == identity.id and address_id == identity.verifiable_addresses[0].id
    recovery = await store.find_recovery_address("email", "ada@example.com")
    assert recovery is not None and recovery[1] == identity.recovery_addresses[0].id
    assert await store.find_verifiable_address("sms", "ada@example.com") is None

    assert await store.mark_address_verified(address_id) == identity.id  # the owner, to be told
    assert await store.mark_address_verified(address_id) is None  # nothing changed
    assert await store.mark_address_verified(uuid.uuid4()) is None
    stored = await store.get(identity.id)
    assert stored is not None
    address = stored.verifiable_addresses[0]
    assert address.verified and address.status == "completed" and address.verified_at is not None


async def test_create_many_isolates_a_bad_item(store: IdentityStore) -> None:
    good, dup, other = (
        make_identity("a@example.com"),
        make_identity("a@example.com"),
        make_identity("c@example.com"),
    )
    results = await store.create_many([good, dup, other])
    assert results[0] == good and results[2] == other
    assert isinstance(results[1], Conflict)
    assert await store.count() == 2
    assert await store.get(dup.id) is None
    assert await store.get(good.id) == good and await store.get(other.id) == other


async def test_create_many_reports_each_kind_of_collision_alone(
    store: IdentityStore, database: SqlDatabase
) -> None:
    """Collisions with stored identities and within the batch, on every unique key; the failed
    items leave no row behind and every other item is stored whole."""
    await store.create(make_identity("old@example.com", external_id="ext-old"))
    other_address = replace(
        make_identity("fresh@example.com"),
        recovery_addresses=(RecoveryAddress(value="old@example.com"),),
    )
    batch = [
        make_identity("n1@example.com"),
        make_identity("old@example.com"),  # identifier (and addresses) of a stored identity
        make_identity("n2@example.com", external_id="ext-old"),  # a stored external_id
        other_address,  # only its recovery address collides
        make_identity("n3@example.com", external_id="ext-new"),
        make_identity("n4@example.com", external_id="ext-new"),  # external_id earlier in the batch
        make_identity("n1@example.com"),  # identifier earlier in the batch
        rich_identity("rich@example.com"),
    ]
    results = await store.create_many(batch)
    outcome = ["ok" if isinstance(r, Identity) else str(r) for r in results]
    assert outcome == [
        "ok",
        "an identity with this identifier already exists",
        "an identity with this external_id already exists",
        "an identity with this address already exists",
        "ok",
        "an identity with this external_id already exists",
        "an identity with this identifier already exists",
        "ok",
    ]
    for identity, result in zip(batch, results, strict=True):
        assert await store.get(identity.id) == (in_load_order(identity) if result == identity else None)
    assert await store.count() == 1 + 3
    # No orphan child rows of the refused items.
    failed = [i.id for i, r in zip(batch, results, strict=True) if isinstance(r, Conflict)]
    async with database.engine.connect() as conn:
        for table in (credentials, credential_identifiers, verifiable_addresses, recovery_addresses):
            query = sa.select(sa.func.count()).select_from(table).where(table.c.identity_id.in_(failed))
            assert (await conn.execute(query)).scalar_one() == 0, table.name
    # The collided values still belong to the first owner.
    owner = await store.find_recovery_address("email", "old@example.com")
    assert owner is not None and owner[0].external_id == "ext-old"


async def test_create_many_is_a_few_multi_row_statements(store: IdentityStore, statements: list[str]) -> None:
    """Kratos' bulk insert: the statement count does not grow with the batch."""
    counts = []
    for size, tag in ((5, "a"), (200, "b")):
        statements.clear()
        results = await store.create_many([rich_identity(f"{tag}{k}@example.com") for k in range(size)])
        assert all(isinstance(r, Identity) for r in results)
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 6, (counts, statements)
    assert await store.count() == 205


async def test_create_many_isolates_a_value_the_database_rejects(store: IdentityStore, dsn: str) -> None:
    """PostgreSQL refuses an over-long value (SQLite stores it): that item alone fails."""
    good = make_identity("ok1@example.com")
    long_id = make_identity("ok2@example.com", external_id="x" * 300)
    later = make_identity("ok3@example.com")
    results = await store.create_many([good, long_id, later])
    assert results[0] == good and results[2] == later
    if dsn.startswith("postgresql"):
        assert isinstance(results[1], BadRequest)
        assert await store.count() == 2
    else:
        assert results[1] == long_id
        assert await store.count() == 3


async def test_concurrent_registrations_of_one_identifier(store: IdentityStore) -> None:
    racers = [make_identity("race@example.com") for _ in range(20)]
    results = await asyncio.gather(*(store.create(i) for i in racers), return_exceptions=True)
    assert sum(isinstance(r, Identity) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 19
    assert await store.count() == 1


def rich_identity(email: str) -> Identity:
    """Every child kind, several of each, and values JSON must carry exactly (quotes, unicode,
    nested config, an unset and a set ``verified_at``)."""
    base = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    return make_identity(
        email,
        traits={"email": email, "name": {"first": 'Zoë "Z" \\ O\'Neil'}, "tags": ["a", "b"]},
        metadata_public=None,
        metadata_admin={"note": "ünïcode ✓", "n": [1, 2.5, None, True]},
        credentials={
            "password": Credential(
                type="password",
                identifiers=(email, f"alias-{email}"),
                config={"hashed_password": "$argon2id$v=19$m=65536,t=3,p=2$c2FsdA$aGFzaA"},
                version=1,
                created_at=base,
                updated_at=base + timedelta(seconds=1),
            ),
            "totp": Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=ABC&issuer=y"}),
            "webauthn": Credential(
                type="webauthn",
                identifiers=(),
                config={"credentials": [{"id": "AQID", "is_passwordless": False, "nested": {"k": []}}]},
            ),
        },
        verifiable_addresses=(
            VerifiableAddress(value=email, created_at=base + timedelta(seconds=5)),
            VerifiableAddress(
                value=f"second-{email}",
                verified=True,
                status="completed",
                verified_at=base + timedelta(microseconds=7),
                created_at=base,
            ),
        ),
        recovery_addresses=(
            RecoveryAddress(value=f"r2-{email}", created_at=base),
            RecoveryAddress(value=email, created_at=base + timedelta(hours=1)),
        ),
    )


def in_load_order(identity: Identity) -> Identity:
    """What a load returns: addresses by (created_at, id), identifiers sorted."""
    return replace(
        identity,
        credentials={
            t: replace(c, identifiers=tuple(sorted(c.identifiers))) for t, c in identity.credentials.items()
        },
        verifiable_addresses=tuple(sorted(identity.verifiable_addresses, key=lambda a: (a.created_at, a.id))),
        recovery_addresses=tuple(sorted(identity.recovery_addresses, key=lambda a: (a.created_at, a.id))),
    )


async def test_rich_identities_round_trip_without_mixing_children(store: IdentityStore) -> None:
    a, b = rich_identity("a@example.com"), rich_identity("b@example.com")
    bare = Identity(schema_id="default", traits={"email": "bare@example.com"})
    for identity in (a, b, bare):
        await store.create(identity)
    for identity in (a, b, bare):
        assert await store.get(identity.id) == in_load_order(identity)
    listed = await store.list(page_size=10)
    assert sorted(listed, key=lambda i: i.id) == sorted(map(in_load_order, (a, b, bare)), key=lambda i: i.id)
    found = await store.find_verifiable_address("email", "second-b@example.com")
    assert found is not None and found == (in_load_order(b), b.verifiable_addresses[1].id)
    stored = await store.get(a.id)
    assert stored is not None
    assert [c.type for c in stored.credentials.values()] == ["password", "totp", "webauthn"]


@pytest.fixture
def statements(database: SqlDatabase, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SQL statements sent to the database, transaction control left out: through the engine,
    on a SQLite file through the session check's own reader (``sqlite_reads``), and on
    PostgreSQL through its asyncpg read (``Connector._fetch_raw_pg``)."""
    sent: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE"):
            sent.append(statement)

    reader = database._connector._reader
    if reader is not None:
        fetch_one = reader.fetch_one

        async def recorded(read: Read, values: Mapping[str, Any]) -> Any:
            sent.append(read.sql)
            return await fetch_one(read, values)

        monkeypatch.setattr(reader, "fetch_one", recorded)
    connector = database._connector
    fetch_raw_pg = connector._fetch_raw_pg

    async def recorded_pg(read: Read, values: Mapping[str, Any]) -> Any:
        sent.append(read.sql)
        return await fetch_raw_pg(read, values)

    monkeypatch.setattr(connector, "_fetch_raw_pg", recorded_pg)
    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield sent
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_every_identity_load_is_one_statement(store: IdentityStore, statements: list[str]) -> None:
    identity = replace(rich_identity("ada@example.com"), external_id="ext-ada")
    await store.create(identity)
    loads: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: store.get(identity.id),
        "get_by_external_id": lambda: store.get_by_external_id("ext-ada"),
        "find_by_identifier": lambda: store.find_by_identifier("password", "ada@example.com"),
        "find_verifiable_address": lambda: store.find_verifiable_address("email", "ada@example.com"),
        "find_recovery_address": lambda: store.find_recovery_address("email", "ada@example.com"),
        "list": lambda: store.list(page_size=10),
        "list by identifier": lambda: store.list(page_size=10, credentials_identifier="ada@example.com"),
    }
    for name, load in loads.items():
        statements.clear()
        assert await load(), name
        assert len(statements) == 1, (name, statements)


async def test_search_traits_matches_part_of_a_trait_ignoring_case(store: IdentityStore) -> None:
    ada = make_identity("ada@example.com", traits={"email": "ada@example.com", "name": {"first": "Ada"}})
    bob = make_identity("bob@example.com", traits={"email": "bob@example.com", "name": {"first": "Bob_1%"}})
    carl = make_identity("carl@example.org", traits={"email": "carl@example.org", "name": {"first": "Carla"}})
    for identity in (ada, bob, carl):
        await store.create(identity)
    assert [i.id for i in await store.search_traits(["name.first"], "CARL", page_size=10)] == [carl.id]
    found = await store.search_traits(["email", "name.first"], "example.com", page_size=10)
    assert {i.id for i in found} == {ada.id, bob.id}
    # LIKE wildcards in the search text are literal characters.
    assert [i.id for i in await store.search_traits(["name.first"], "_1%", page_size=10)] == [bob.id]
    assert await store.search_traits(["name.first"], "%", page_size=10) == [bob]
    assert await store.search_traits(["name.last"], "a", page_size=10) == []
    assert await store.search_traits([], "a", page_size=10) == []
    # Keyset pages by id, like list().
    everyone = sorted((ada.id, bob.id, carl.id))
    first = await store.search_traits(["email"], "@", page_size=2)
    rest = await store.search_traits(["email"], "@", page_size=2, after=first[-1].id)
    assert [i.id for i in first + rest] == everyone
