"""``IdentityStore.get_for_session``: ``get`` without ``metadata_admin`` and with only the asked
credential types (the access path's load), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress, utcnow
from sidecar.storage.sql.database import SqlDatabase

SECOND_FACTORS = ("totp", "lookup_secret", "webauthn")


@pytest.fixture(params=["sqlite", "postgresql"])
def dsn(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_dsn" if request.param == "sqlite" else "postgres_dsn"))


def someone(*kinds: str) -> Identity:
    every = {
        "password": Credential(
            type="password", identifiers=("a@example.com",), config={"hashed_password": "h"}
        ),
        "oidc": Credential(type="oidc", identifiers=("google:1",), config={"providers": [{"subject": "1"}]}),
        "totp": Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=S"}),
        "lookup_secret": Credential(type="lookup_secret", config={"recovery_codes": [{"code": "c"}]}),
        "webauthn": Credential(type="webauthn", config={"credentials": [{"id": "k"}]}),
    }
    return Identity(
        schema_id="default",
        traits={"email": "a@example.com"},
        state_changed_at=utcnow(),
        metadata_public={"roles": ["x"]},
        metadata_admin={"note": "admin only"},
        external_id="ext-1",
        verifiable_addresses=(VerifiableAddress(value="a@example.com", verified=True),),
        recovery_addresses=(RecoveryAddress(value="a@example.com"),),
        credentials={k: every[k] for k in kinds},
    )


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        (("password", "oidc", "totp", "lookup_secret", "webauthn"), SECOND_FACTORS),
        (("password", "totp"), SECOND_FACTORS),
        (("password",), SECOND_FACTORS),
        (("password", "totp"), ()),
        ((), SECOND_FACTORS),
        (("password", "oidc"), ("oidc",)),
    ],
)
async def test_it_is_get_without_admin_metadata_and_other_credentials(
    database: SqlDatabase, stored: tuple[str, ...], asked: tuple[str, ...]
) -> None:
    identity = await database.identities.create(someone(*stored))
    full = await database.identities.get(identity.id)
    assert full is not None and set(full.credentials) == set(stored)
    got = await database.identities.get_for_session(identity.id, asked)
    wanted = {t: c for t, c in full.credentials.items() if t in asked}
    assert got == replace(full, credentials=wanted, metadata_admin=None)


async def test_an_unknown_identity_is_none(database: SqlDatabase) -> None:
    assert await database.identities.get_for_session(uuid.uuid4(), SECOND_FACTORS) is None


async def test_a_type_that_is_no_name_is_refused(database: SqlDatabase) -> None:
    identity = await database.identities.create(someone("password"))
    with pytest.raises(ValueError, match="not a credential type"):
        await database.identities.get_for_session(identity.id, ("totp') OR ('1'='1",))
