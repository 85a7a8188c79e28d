"""Identity ↔ Kratos JSON (kratos-api.md §3.1, ``identity`` in kratos-openapi.json).

One function serves the admin API, whoami and the flows, so the rules of what is visible live in
one place: ``metadata_admin`` only for admin, ``credentials`` only for admin and only the types asked
for, a password's ``hashed_password`` only when ``password`` is asked for, a plain password never.
Decoding goes the other way for the parts of ``createIdentityBody`` that are not plain values.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sidecar import errors
from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress, utcnow
from sidecar.security.identifiers import normalize_identifier

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


# --- decoding request bodies (createIdentityBody / updateIdentityBody) --------------------------

_IMPORTABLE = ("password", "oidc", "saml")
_PROVIDER_KEYS = ("provider", "subject", "organization")


def _bad(reason: str, path: str) -> errors.ValidationError:
    return errors.ValidationError(reason, messages={path: [reason]})


def parse_uuid(value: Any, name: str) -> uuid.UUID | None:
    if value is None or value == "":
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise _bad(f"{name} must be a UUID", name) from exc


def address_list(value: Any) -> tuple[Mapping[str, Any], ...]:
    """Admin-given ``verifiable_addresses`` / ``recovery_addresses`` (objects with ``value``/``via``)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(
        isinstance(a, dict) and isinstance(a.get("value"), str) for a in value
    ):
        raise _bad("addresses must be a list of objects with a string value", "verifiable_addresses")
    return tuple(value)


def given_addresses(addresses: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """Admin-given addresses keyed by ``(via, normalised value)`` to match schema-derived ones."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for address in addresses:
        via = str(address.get("via") or "email")
        out[(via, normalize_identifier(str(address["value"]), "code", via=via))] = address
    return out


def _section(body: Mapping[str, Any], kind: str) -> dict[str, Any]:
    section = body.get(kind)
    config = section.get("config") if isinstance(section, dict) else None
    if not isinstance(config, dict):
        raise _bad(f"credentials.{kind}.config must be an object", f"credentials.{kind}.config")
    return config


def plain_password(body: Mapping[str, Any] | None) -> str | None:
    if not body or "password" not in body:
        return None
    value = _section(body, "password").get("password")
    if value is not None and not isinstance(value, str):
        raise _bad("the password must be a string", "credentials.password.config.password")
    return value


def parse_import(body: Mapping[str, Any] | None, existing: Mapping[str, Credential]) -> dict[str, Credential]:
    """Credentials an admin imports, except a plain password (the manager hashes that).

    ``hashed_password`` is kept as is (checked by the hasher); ``oidc`` / ``saml`` providers become
    ``provider:subject`` identifiers, Kratos' unique key for a social login.
    """
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise _bad("credentials must be an object", "credentials")
    unknown = sorted(set(body) - set(_IMPORTABLE))
    if unknown:
        raise _bad(f"importing credentials of type {', '.join(unknown)} is not supported", "credentials")
    out: dict[str, Credential] = {}
    if "password" in body:
        config = _section(body, "password")
        hashed = config.get("hashed_password")
        hook = config.get("use_password_migration_hook") is True
        if hashed is not None and (not isinstance(hashed, str) or not hashed):
            raise _bad("hashed_password must be a non-empty string", "credentials.password.config")
        if hashed and config.get("password") is not None:
            raise _bad("set either password or hashed_password, not both", "credentials.password.config")
        if hashed or (hook and config.get("password") is None):
            new_config: dict[str, Any] = {"hashed_password": hashed} if hashed else {}
            if hook and not hashed:
                new_config["use_password_migration_hook"] = True
            old = existing.get("password")
            out["password"] = (
                replace(old, config=new_config, updated_at=utcnow())
                if old
                else Credential(type="password", config=new_config)
            )
    for kind in ("oidc", "saml"):
        if kind in body:
            providers = _section(body, kind).get("providers")
            if not isinstance(providers, list) or not all(
                isinstance(p, dict)
                and isinstance(p.get("provider"), str)
                and isinstance(p.get("subject"), str)
                for p in providers
            ):
                raise _bad(
                    f"credentials.{kind}.config.providers must list provider and subject",
                    f"credentials.{kind}.config.providers",
                )
            kept = [
                {k: v for k, v in p.items() if k in ("provider", "subject", "organization")}
                for p in providers
            ]
            out[kind] = Credential(
                type=kind,
                identifiers=tuple(f"{p['provider']}:{p['subject']}" for p in kept),
                config={"providers": kept},
            )
    return out
