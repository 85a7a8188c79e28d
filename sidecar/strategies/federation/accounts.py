"""Federated credentials on identities (``oidc`` and ``saml``): ``provider:subject``
identifiers, linking, unlinking, and finding the existing account an address already belongs to
(Kratos ``strategy/oidc`` + the ``credentials.<type>.config.providers[]`` shape, which Kratos'
SAML credentials share)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from sidecar import errors
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.schema.model import IdentitySchema
from sidecar.security.identifiers import normalize_identifier
from sidecar.strategies.federation.mapper import MappedIdentity

CALLBACK = "federated_callback"
"""Body key under which a provider's way back hands a ``Verified`` to the flow. Only in-process code can
put a Python object there: an HTTP body holds JSON values only, so it cannot be forged."""


class FederatedIdentities(Protocol):
    """The part of ``IdentityManager`` the federated strategies (oidc, saml) use."""

    async def create(self, spec: IdentitySpec) -> Identity: ...

    async def delete(self, identity_id: uuid.UUID) -> None: ...

    async def get(self, identity_id: uuid.UUID) -> Identity: ...

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> Identity: ...

    async def remove_credential(self, identity_id: uuid.UUID, credential_type: str) -> Identity: ...

    async def find_by_credential(self, credential_type: str, identifier: str) -> Identity | None: ...

    async def find_by_address(self, via: str, value: str) -> Identity | None: ...


@dataclass(frozen=True, slots=True)
class Verified:
    """What a provider proved: the subject and claims, checked; tokens already encrypted."""

    provider: str
    subject: str
    claims: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)
    form_traits: dict[str, Any] = field(default_factory=dict)
    mapped: MappedIdentity | None = None

    @property
    def identifier(self) -> str:
        return f"{self.provider}:{self.subject}"

    def require_mapped(self) -> MappedIdentity:
        """The claims as traits and metadata; ``map_claims`` must have run first."""
        if self.mapped is None:
            raise errors.InternalError("the provider's claims were used before they were mapped")
        return self.mapped

    def to_record(self) -> dict[str, Any]:
        mapped = self.mapped
        return {
            "provider": self.provider,
            "subject": self.subject,
            "claims": self.claims,
            "tokens": self.tokens,
            "mapped": None
            if mapped is None
            else {
                "traits": mapped.traits,
                "metadata_public": mapped.metadata_public,
                "metadata_admin": mapped.metadata_admin,
                "verified_addresses": [list(a) for a in mapped.verified_addresses],
            },
        }

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Verified:
        m = data.get("mapped")
        mapped = (
            MappedIdentity(
                traits=dict(m["traits"]),
                metadata_public=m.get("metadata_public"),
                metadata_admin=m.get("metadata_admin"),
                verified_addresses=tuple((str(v), str(a)) for v, a in m.get("verified_addresses") or []),
            )
            if isinstance(m, Mapping)
            else None
        )
        return cls(
            provider=str(data["provider"]),
            subject=str(data["subject"]),
            claims=dict(data.get("claims") or {}),
            tokens=dict(data.get("tokens") or {}),
            mapped=mapped,
        )


def provider_entries(identity: Identity, kind: str) -> list[dict[str, Any]]:
    credential = identity.credentials.get(kind)
    entries = credential.config.get("providers") if credential else None
    return [dict(e) for e in entries if isinstance(e, Mapping)] if isinstance(entries, list) else []


def linked_providers(identity: Identity, kind: str) -> set[str]:
    return {str(e.get("provider")) for e in provider_entries(identity, kind)}


def credential_with(identity: Identity, verified: Verified, kind: str) -> Credential:
    entries = [
        e
        for e in provider_entries(identity, kind)
        if not (e.get("provider") == verified.provider and e.get("subject") == verified.subject)
    ]
    entries.append({"provider": verified.provider, "subject": verified.subject, **verified.tokens})
    return _credential(identity, entries, kind)


def credential_without(identity: Identity, provider: str, kind: str) -> Credential | None:
    entries = [e for e in provider_entries(identity, kind) if e.get("provider") != provider]
    return _credential(identity, entries, kind) if entries else None


def _credential(identity: Identity, entries: list[dict[str, Any]], kind: str) -> Credential:
    identifiers = tuple(f"{e['provider']}:{e['subject']}" for e in entries)
    old = identity.credentials.get(kind)
    if old is None:
        return Credential(type=kind, identifiers=identifiers, config={"providers": entries})
    return replace(old, identifiers=identifiers, config={"providers": entries}, updated_at=utcnow())


def other_first_factors(identity: Identity, kind: str, provider: str, *, code_login: bool) -> int:
    """How many ways to sign in remain once ``provider`` (of credential type ``kind``) is unlinked."""
    count = len([e for e in provider_entries(identity, kind) if e.get("provider") != provider])
    password = identity.credentials.get("password")
    if password is not None and password.config.get("hashed_password"):
        count += 1
    count += sum(
        1 for t in ("passkey", "webauthn", "oidc", "saml") if t != kind and t in identity.credentials
    )
    if code_login and "code" in identity.credentials:
        count += 1
    return count


async def find_existing_owner(
    identities: FederatedIdentities, schema: IdentitySchema, traits: Mapping[str, Any]
) -> tuple[Identity, str] | None:
    """An identity already holding one of these traits' identifiers or addresses, and which one."""
    for value in schema.identifiers(traits, "password"):
        found = await identities.find_by_credential("password", normalize_identifier(value))
        if found is not None:
            return found, value
    for via, value in [*schema.verifiable_addresses(traits), *schema.recovery_addresses(traits)]:
        found = await identities.find_by_address(via, value)
        if found is not None:
            return found, value
    for value, _via in schema.code_identifiers(traits):
        found = await identities.find_by_credential("code", value)
        if found is not None:
            return found, value
    return None


def verified_addresses(
    schema: IdentitySchema, traits: Mapping[str, Any], verified: Verified, *, trust_email_verified: bool
) -> list[dict[str, Any]]:
    """Addresses to create as verified: the mapper's ``verified_addresses`` (Kratos), plus the
    ``email`` claim when the provider is trusted and says ``email_verified: true``."""
    wanted: set[tuple[str, str]] = set()
    if verified.mapped is not None:
        wanted |= {
            (via, normalize_identifier(v, "code", via=via)) for via, v in verified.mapped.verified_addresses
        }
    email = verified.claims.get("email")
    if trust_email_verified and verified.claims.get("email_verified") is True and isinstance(email, str):
        wanted.add(("email", normalize_identifier(email, "code", via="email")))
    return [
        {"via": via, "value": value, "verified": True, "status": "completed"}
        for via, value in schema.verifiable_addresses(traits)
        if (via, value) in wanted
    ]
