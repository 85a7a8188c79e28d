"""Identity → Kratos JSON (kratos-api.md §3.1, ``identity`` in kratos-openapi.json).

One function serves the admin API, whoami and the flows, so the rules of what is visible live in
one place: ``metadata_admin`` only for admin, ``credentials`` only for admin and only the types asked
for, a password's ``hashed_password`` only when ``password`` is asked for, a plain password never.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress

# Config keys that may hold secrets a caller must never see, even an admin (Kratos never emits them).
_NEVER_EMITTED = frozenset({"password"})


def rfc3339(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix, as Go's ``time.Time`` marshals."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def verifiable_address_to_json(address: VerifiableAddress) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(address.id),
        "value": address.value,
        "verified": address.verified,
        "via": address.via,
        "status": address.status,
    }
    if address.verified_at is not None:
        out["verified_at"] = rfc3339(address.verified_at)
    out["created_at"] = rfc3339(address.created_at)
    out["updated_at"] = rfc3339(address.updated_at)
    return out


def recovery_address_to_json(address: RecoveryAddress) -> dict[str, Any]:
    return {
        "id": str(address.id),
        "value": address.value,
        "via": address.via,
        "created_at": rfc3339(address.created_at),
        "updated_at": rfc3339(address.updated_at),
    }


def credential_to_json(credential: Credential) -> dict[str, Any]:
    config = {k: v for k, v in credential.config.items() if k not in _NEVER_EMITTED}
    return {
        "type": credential.type,
        "identifiers": list(credential.identifiers),
        "config": config,
        "version": credential.version,
        "created_at": rfc3339(credential.created_at),
        "updated_at": rfc3339(credential.updated_at),
    }


def identity_to_json(
    identity: Identity, *, schema_url: str, admin: bool, include_credentials: Sequence[str] = ()
) -> dict[str, Any]:
    """The identity as Kratos renders it; public callers (``admin=False``) get no admin-only field."""
    out: dict[str, Any] = {
        "id": str(identity.id),
        "schema_id": identity.schema_id,
        "schema_url": schema_url,
        "state": identity.state,
    }
    if identity.state_changed_at is not None:
        out["state_changed_at"] = rfc3339(identity.state_changed_at)
    out["traits"] = identity.traits
    out["verifiable_addresses"] = [verifiable_address_to_json(a) for a in identity.verifiable_addresses]
    out["recovery_addresses"] = [recovery_address_to_json(a) for a in identity.recovery_addresses]
    out["metadata_public"] = identity.metadata_public
    if admin:
        out["metadata_admin"] = identity.metadata_admin
        wanted = [t for t in include_credentials if t in identity.credentials]
        if wanted:
            out["credentials"] = {t: credential_to_json(identity.credentials[t]) for t in wanted}
    out["created_at"] = rfc3339(identity.created_at)
    out["updated_at"] = rfc3339(identity.updated_at)
    out["organization_id"] = str(identity.organization_id) if identity.organization_id else None
    if identity.external_id:
        out["external_id"] = identity.external_id
    return out
