"""Identity, credential and address values (Kratos shapes, see kratos-api.md §3.1)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

IdentityState = Literal["active", "inactive"]

# Credential types Kratos knows; a credential type outside this set is refused at the API boundary.
CREDENTIAL_TYPES = ("password", "oidc", "totp", "lookup_secret", "webauthn", "passkey", "code", "saml")
FIRST_FACTOR_TYPES = ("password", "oidc", "saml", "passkey", "code", "webauthn")


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


@dataclass(frozen=True, slots=True)
class Credential:
    type: str
    identifiers: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)
    version: int = 0
    id: uuid.UUID = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class VerifiableAddress:
    value: str
    via: str = "email"
    verified: bool = False
    status: str = "pending"  # pending | sent | completed
    verified_at: datetime | None = None
    id: uuid.UUID = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class RecoveryAddress:
    value: str
    via: str = "email"
    id: uuid.UUID = field(default_factory=new_id)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Identity:
    schema_id: str
    traits: dict[str, Any]
    id: uuid.UUID = field(default_factory=new_id)
    state: IdentityState = "active"
    state_changed_at: datetime | None = None
    metadata_public: Any = None
    metadata_admin: Any = None
    external_id: str | None = None
    organization_id: uuid.UUID | None = None
    verifiable_addresses: tuple[VerifiableAddress, ...] = ()
    recovery_addresses: tuple[RecoveryAddress, ...] = ()
    credentials: dict[str, Credential] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    def with_credential(self, credential: Credential) -> Identity:
        return replace(self, credentials={**self.credentials, credential.type: credential})

    def without_credential(self, type_: str) -> Identity:
        return replace(self, credentials={k: v for k, v in self.credentials.items() if k != type_})
