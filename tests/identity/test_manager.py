"""IdentityManager against the real SQL store (SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import bcrypt
import pytest

from sidecar import errors
from sidecar.config.model import Hashers, IdentityConfig
from sidecar.hashing.hasher import PasswordHasher
from sidecar.identity.manager import IdentityManager, IdentitySpec
from sidecar.schema.registry import SchemaRegistry
from sidecar.storage.sql.database import SqlDatabase

FAST = {"memory": "8MB", "iterations": 1, "parallelism": 1}
PASSWORD = "a long and unusual passphrase"


@dataclass
class Env:
    manager: IdentityManager
    db: SqlDatabase
    hasher: PasswordHasher


@pytest.fixture
async def env(dsn: str) -> AsyncIterator[Env]:
    db = SqlDatabase(dsn)
    await db.migrate()
    hasher = PasswordHasher(Hashers.model_validate({"argon2": FAST}))
    schemas = SchemaRegistry(IdentityConfig(), base_url="http://127.0.0.1:4433/.auth")
    await schemas.load()
    yield Env(IdentityManager(db.identities, schemas, hasher), db, hasher)
    await hasher.close()
    await db.close()


def with_password(password: str = PASSWORD) -> dict[str, object]:
    return {"password": {"config": {"password": password}}}


def with_hash(encoded: str) -> dict[str, object]:
    return {"password": {"config": {"hashed_password": encoded}}}


def person(email: str = "Alice@Example.com", **kw: object) -> IdentitySpec:
    return IdentitySpec(traits={"email": email, "name": {"first": "Alice"}}, **kw)  # type: ignore[arg-type]


async def test_create_with_plain_password_and_login(env: Env) -> None:
    created = await env.manager.create(person(credentials=with_password()))
    stored = await env.manager.get(created.id)
    password = stored.credentials["password"]
    assert password.identifiers == ("alice@example.com",)
    assert password.config["hashed_password"].startswith("$argon2id$")
    assert "password" not in password.config
    assert stored.credentials["code"].identifiers == ("alice@example.com",)
    assert [(a.via, a.value, a.verified) for a in stored.verifiable_addresses] == [
        ("email", "alice@example.com", False)
    ]
    assert [(a.via, a.value) for a in stored.recovery_addresses] == [("email", "alice@example.com")]
    assert stored.state == "active" and stored.state_changed_at is not None

    found = await env.manager.authenticate_password("  ALICE@example.COM", PASSWORD)
    assert found is not None and found.id == created.id
    assert await env.manager.authenticate_password("alice@example.com", PASSWORD + "x") is None
    assert await env.manager.authenticate_password("nobody@example.com", PASSWORD) is None


async def test_no_password_credential_without_password(env: Env) -> None:
    created = await env.manager.create(person())
    assert "password" not in created.credentials
    assert await env.manager.authenticate_password("alice@example.com", "") is None


async def test_imported_hash_is_rehashed_after_login(env: Env) -> None:
    legacy = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    created = await env.manager.create(person(credentials=with_hash(legacy)))
    assert (await env.manager.get(created.id)).credentials["password"].config["hashed_password"] == legacy
    assert await env.manager.authenticate_password("alice@example.com", PASSWORD) is not None
    rehashed = (await env.manager.get(created.id)).credentials["password"].config["hashed_password"]
    assert rehashed.startswith("$argon2id$") and await env.hasher.verify(PASSWORD, rehashed)


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(person("not-an-email"), id="bad-traits"),
        pytest.param(person(state="frozen"), id="bad-state"),
        pytest.param(person(credentials=with_hash("$md6$x")), id="bad-hash"),
        pytest.param(person(credentials={"totp": {"config": {}}}), id="unsupported-type"),
        pytest.param(
            person(credentials={"oidc": {"config": {"providers": [{"provider": 1}]}}}), id="bad-oidc"
        ),
        pytest.param(person(schema_id="nope"), id="unknown-schema"),
    ],
)
async def test_create_rejects_bad_input(env: Env, spec: IdentitySpec) -> None:
    with pytest.raises(errors.BadRequest):
        await env.manager.create(spec)


async def test_duplicate_identifier_conflicts(env: Env) -> None:
    pw = with_password()
    await env.manager.create(person("bob@example.com", credentials=pw))
    with pytest.raises(errors.Conflict):
        await env.manager.create(person("BOB@example.com", credentials=pw))


async def test_oidc_and_admin_verified_addresses(env: Env) -> None:
    created = await env.manager.create(
        person(
            credentials={"oidc": {"config": {"providers": [{"provider": "github", "subject": "123"}]}}},
            verifiable_addresses=[{"value": "ALICE@example.com", "via": "email", "verified": True}],
        )
    )
    assert created.credentials["oidc"].identifiers == ("github:123",)
    [address] = created.verifiable_addresses
    assert address.verified and address.status == "completed" and address.verified_at is not None


async def test_update_rederives_and_keeps_verified_status(env: Env) -> None:
    created = await env.manager.create(
        person(
            credentials=with_password(),
            verifiable_addresses=[{"value": "alice@example.com", "via": "email", "verified": True}],
        )
    )
    same = await env.manager.update(created.id, person(metadata_public={"plan": "pro"}))
    assert (
        same.verifiable_addresses[0].verified
        and same.verifiable_addresses[0].id == created.verifiable_addresses[0].id
    )
    assert same.credentials["password"] == created.credentials["password"]
    moved = await env.manager.update(created.id, person("new@example.com", state="inactive"))
    stored = await env.manager.get(created.id)
    assert stored.credentials["password"].identifiers == ("new@example.com",)
    assert [(a.value, a.verified) for a in stored.verifiable_addresses] == [("new@example.com", False)]
    assert stored.state == "inactive" and moved.state_changed_at != created.state_changed_at
    assert stored.metadata_public is None
    replaced = await env.manager.update(
        created.id,
        person("new@example.com", credentials=with_password("other pass 123")),
    )
    assert await env.hasher.verify(
        "other pass 123", replaced.credentials["password"].config["hashed_password"]
    )


async def test_patch(env: Env) -> None:
    created = await env.manager.create(person(credentials=with_password()))
    patched = await env.manager.patch(
        created.id,
        [
            {"op": "replace", "path": "/traits/email", "value": "carol@example.com"},
            {"op": "add", "path": "/metadata_public", "value": {"a": 1}},
            {"op": "replace", "path": "/credentials/password/config/password", "value": "brand new secret"},
        ],
    )
    assert patched.traits["email"] == "carol@example.com" and patched.metadata_public == {"a": 1}
    assert await env.manager.authenticate_password("carol@example.com", "brand new secret") is not None
    assert await env.manager.authenticate_password("carol@example.com", PASSWORD) is None


@pytest.mark.parametrize(
    "ops",
    [
        pytest.param([{"op": "replace", "path": "/id", "value": str(uuid.uuid4())}], id="id"),
        pytest.param([{"op": "replace", "path": "/state_changed_at", "value": "x"}], id="state_changed_at"),
        pytest.param([{"op": "remove", "path": "/credentials/oidc"}], id="credentials"),
        pytest.param([{"op": "replace", "path": "/traits/email", "value": "x"}], id="invalid-result"),
        pytest.param([{"op": "remove", "path": "/traits/missing"}], id="bad-pointer"),
        pytest.param([{"op": "test", "path": "/state", "value": "inactive"}], id="test-fails"),
        pytest.param([{"op": "frobnicate", "path": "/state"}], id="bad-op"),
        pytest.param({"op": "replace"}, id="not-a-list"),
    ],
)
async def test_patch_rejects(env: Env, ops: object) -> None:
    created = await env.manager.create(person())
    with pytest.raises(errors.BadRequest):
        await env.manager.patch(created.id, ops)


async def test_set_password_get_delete(env: Env) -> None:
    created = await env.manager.create(person())
    await env.manager.set_password(created.id, PASSWORD)
    assert await env.manager.authenticate_password("alice@example.com", PASSWORD) is not None
    await env.manager.delete(created.id)
    with pytest.raises(errors.NotFound):
        await env.manager.get(created.id)
    with pytest.raises(errors.NotFound):
        await env.manager.delete(created.id)


class Observer:
    def __init__(self) -> None:
        self.events: list[tuple[str, uuid.UUID]] = []

    async def identity_changed(self, identity_id: uuid.UUID) -> None:
        self.events.append(("changed", identity_id))

    async def identity_deleted(self, identity_id: uuid.UUID) -> None:
        self.events.append(("deleted", identity_id))


async def test_observer_hears_changes_and_deletion(env: Env) -> None:
    """Sessions follow their identity: the manager tells its observer after each stored change."""
    observer = Observer()
    schemas = SchemaRegistry(IdentityConfig(), base_url="http://127.0.0.1:4433/.auth")
    await schemas.load()
    manager = IdentityManager(env.db.identities, schemas, env.hasher, observer=observer)
    created = await manager.create(person(credentials=with_password()))
    assert observer.events == []  # a new identity has no sessions to follow it
    await manager.update(created.id, person(state="inactive"))
    await manager.patch(created.id, [{"op": "replace", "path": "/state", "value": "active"}])
    await manager.delete(created.id)
    assert observer.events == [("changed", created.id), ("changed", created.id), ("deleted", created.id)]


async def test_admin_credential_deletion_keeps_a_way_in(env: Env) -> None:
    created = await env.manager.create(person(credentials=with_password()))
    with pytest.raises(errors.BadRequest):  # the only first factor
        await env.manager.delete_credential(created.id, "password")
    with pytest.raises(errors.NotFound):
        await env.manager.delete_credential(created.id, "totp")
    with pytest.raises(errors.BadRequest):
        await env.manager.delete_credential(created.id, "nonsense")
