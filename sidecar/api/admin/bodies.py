"""Shape checks for admin request bodies (createIdentityBody, updateIdentityBody, batch patch).

Types are checked here, at the JSON boundary, so the domain receives plain typed values and a
wrong type is a 400 naming the field, never a 500 deep inside.
"""

from __future__ import annotations

import uuid
from typing import Any

from sidecar import errors
from sidecar.identity.manager import IdentitySpec

_CREATE_FIELDS = {
    "schema_id",
    "traits",
    "state",
    "metadata_public",
    "metadata_admin",
    "credentials",
    "verifiable_addresses",
    "recovery_addresses",
    "external_id",
    "organization_id",
}
_STATES = ("active", "inactive")
_CREDENTIAL_IMPORTS = ("password", "oidc", "saml")


def _fail(field: str, reason: str) -> errors.ValidationError:
    return errors.ValidationError(f"{field}: {reason}", messages={field: [reason]})


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise errors.BadRequest(f"the request body must be a JSON object ({what})")
    return body


def _optional_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _fail(key, "must be a string")
    return value


def _addresses(body: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise _fail(key, "must be an array of objects")
    for i, addr in enumerate(value):
        if not isinstance(addr.get("value"), str):
            raise _fail(f"{key}[{i}].value", "must be a string")
        if "via" in addr and addr["via"] not in ("email", "sms"):
            raise _fail(f"{key}[{i}].via", "must be email or sms")
        if "verified" in addr and not isinstance(addr["verified"], bool):
            raise _fail(f"{key}[{i}].verified", "must be a boolean")
    return value


def _credentials(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("credentials")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail("credentials", "must be an object")
    for kind, cred in value.items():
        if kind not in _CREDENTIAL_IMPORTS:
            raise _fail(f"credentials.{kind}", f"importing {kind!r} credentials is not supported")
        if not isinstance(cred, dict) or not isinstance(cred.get("config", {}), dict):
            raise _fail(f"credentials.{kind}", "must be an object with a config object")
    password = value.get("password", {}).get("config", {})
    for key in ("password", "hashed_password"):
        if key in password and not isinstance(password[key], str):
            raise _fail(f"credentials.password.config.{key}", "must be a string")
    for kind in ("oidc", "saml"):
        providers = value.get(kind, {}).get("config", {}).get("providers", [])
        if not isinstance(providers, list):
            raise _fail(f"credentials.{kind}.config.providers", "must be an array")
        for i, p in enumerate(providers):
            if not (
                isinstance(p, dict)
                and isinstance(p.get("provider"), str)
                and isinstance(p.get("subject"), str)
            ):
                raise _fail(f"credentials.{kind}.config.providers[{i}]", "needs string provider and subject")
    return value


def identity_spec(
    body: Any, *, require_state: bool = False, default_schema_id: str | None = None
) -> IdentitySpec:
    """A createIdentityBody (or updateIdentityBody with ``require_state``) as an ``IdentitySpec``."""
    body = _object(body, "identity")
    unknown = sorted(set(body) - _CREATE_FIELDS)
    if unknown:
        raise _fail(unknown[0], "unknown field")
    schema_id = body.get("schema_id", default_schema_id)
    if not isinstance(schema_id, str) or not schema_id:
        raise _fail("schema_id", "is required and must be a string")
    traits = body.get("traits")
    if not isinstance(traits, dict):
        raise _fail("traits", "is required and must be an object")
    state = body.get("state")
    if state is None:
        if require_state:
            raise _fail("state", "is required")
        state = "active"
    if state not in _STATES:
        raise _fail("state", "must be active or inactive")
    organization_id = _optional_str(body, "organization_id")
    if organization_id is not None:
        try:
            uuid.UUID(organization_id)
        except ValueError:
            raise _fail("organization_id", "must be a UUID") from None
    return IdentitySpec(
        schema_id=schema_id,
        traits=traits,
        state=state,
        metadata_public=body.get("metadata_public"),
        metadata_admin=body.get("metadata_admin"),
        external_id=_optional_str(body, "external_id"),
        organization_id=uuid.UUID(organization_id) if organization_id else None,
        credentials=_credentials(body),
        verifiable_addresses=_addresses(body, "verifiable_addresses") or (),
        recovery_addresses=_addresses(body, "recovery_addresses") or (),
    )


def json_patch(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, list) or not all(isinstance(op, dict) for op in body):
        raise errors.BadRequest("a JSON Patch must be an array of operation objects")
    for i, op in enumerate(body):
        if op.get("op") not in ("add", "remove", "replace", "move", "copy", "test"):
            raise _fail(f"[{i}].op", "must be one of add, remove, replace, move, copy, test")
        if not isinstance(op.get("path"), str):
            raise _fail(f"[{i}].path", "must be a string")
    return body
