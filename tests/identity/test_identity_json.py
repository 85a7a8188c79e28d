"""identity_to_json: Kratos' shape, and what each caller may see."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sidecar.identity.identity_json import identity_to_json, rfc3339
from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress

T = datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)
URL = "http://127.0.0.1:4433/.auth/schemas/ZGVmYXVsdA"


def identity() -> Identity:
    return Identity(
        schema_id="default",
        traits={"email": "a@b.c"},
        metadata_public={"p": 1},
        metadata_admin={"secret": True},
        state_changed_at=T,
        verifiable_addresses=(VerifiableAddress(value="a@b.c", created_at=T, updated_at=T),),
        recovery_addresses=(RecoveryAddress(value="a@b.c", created_at=T, updated_at=T),),
        credentials={
            "password": Credential(
                type="password",
                identifiers=("a@b.c",),
                config={"hashed_password": "$argon2id$x", "password": "never-shown"},
            ),
            "totp": Credential(type="totp", identifiers=("x",), config={"totp_url": "otpauth://x"}),
        },
        created_at=T,
        updated_at=T,
    )


def test_public_view() -> None:
    out = identity_to_json(identity(), schema_url=URL, admin=False, include_credentials=["password"])
    assert list(out) == [
        "id", "schema_id", "schema_url", "state", "state_changed_at", "traits",
        "verifiable_addresses", "recovery_addresses", "metadata_public",
        "created_at", "updated_at", "organization_id",
    ]  # fmt: skip
    assert out["created_at"] == "2026-01-02T03:04:05.123000Z"
    assert out["organization_id"] is None and "external_id" not in out
    address = out["verifiable_addresses"][0]
    assert address["status"] == "pending" and address["verified"] is False and "verified_at" not in address
    uuid.UUID(address["id"])


def test_admin_view_credentials_only_when_asked() -> None:
    out = identity_to_json(identity(), schema_url=URL, admin=True)
    assert out["metadata_admin"] == {"secret": True} and "credentials" not in out
    out = identity_to_json(identity(), schema_url=URL, admin=True, include_credentials=["password", "oidc"])
    assert list(out["credentials"]) == ["password"]
    password = out["credentials"]["password"]
    assert password["config"] == {"hashed_password": "$argon2id$x"}
    assert password["identifiers"] == ["a@b.c"] and password["type"] == "password"


def test_naive_datetimes_are_utc() -> None:
    assert rfc3339(datetime(2026, 1, 1)) == "2026-01-01T00:00:00Z"
