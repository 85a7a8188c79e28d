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

    def public_view(self) -> Identity:
        """This identity without its credentials and ``metadata_admin``: all a self-service caller
        is shown of it (whoami), and all a long-lived cache may hold, so that no password hash,
        TOTP secret, recovery code or security key outlives the request that loaded it. The
        identity itself when it has neither."""
        if not self.credentials and self.metadata_admin is None:
            return self
        # Every field but the two, spelled out: ``replace`` costs twice as much on the
        # session-cache miss (tests/identity/test_model.py checks no field is left out).
        return Identity(
            schema_id=self.schema_id,
            traits=self.traits,
            id=self.id,
            state=self.state,
            state_changed_at=self.state_changed_at,
            metadata_public=self.metadata_public,
            external_id=self.external_id,
            organization_id=self.organization_id,
            verifiable_addresses=self.verifiable_addresses,
            recovery_addresses=self.recovery_addresses,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )
