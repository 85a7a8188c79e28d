"""The rules of the identity domain, shared by the admin API and the self-service flows.

Every write goes through ``_build``: traits are validated against the identity's schema, then
credential identifiers and addresses are derived from the ``ory.sh/kratos`` extension (Kratos'
``identity/extension_*.go``), so an identity can never be stored with identifiers that disagree
with its traits. Every change to a stored identity is told to the ``IdentityObserver`` (the
session manager: sessions follow their identity).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, cast

import jsonpatch
import jsonpointer

from sidecar import errors
from sidecar.hashing.hasher import PasswordHasher
from sidecar.identity import identity_json, refusals
from sidecar.identity.login_hints import LoginHints, hints_for
from sidecar.identity.model import (
    CREDENTIAL_TYPES,
    FIRST_FACTOR_TYPES,
    Credential,
    Identity,
    IdentityState,
    RecoveryAddress,
    VerifiableAddress,
    utcnow,
)
from sidecar.identity.store import IdentityStore
from sidecar.organization.model import Organization
from sidecar.schema.registry import IdentitySchema, SchemaRegistry
from sidecar.security.identifiers import normalize_identifier
from sidecar.tracing import Tracing

log = logging.getLogger("sidecar.identity")

_FORBIDDEN_PATCH = ("/id", "/stateChangedAt", "/state_changed_at", "/credentials")
_PASSWORD_PATCH = "/credentials/password/config/password"
# Second factors and keys: an admin may always remove them (a first factor only if another is left).
_ALWAYS_DELETABLE = ("totp", "lookup_secret", "webauthn", "passkey")


@dataclass(frozen=True, slots=True)
class IdentitySpec:
    """What a caller may set on an identity (Kratos' ``createIdentityBody`` / ``updateIdentityBody``).

    ``credentials`` is the Kratos import object (``{"password": {"config": {...}}, "oidc": ...}``);
    ``password_plain`` is the password typed in a self-service registration.
    """

    traits: Mapping[str, Any]
    schema_id: str | None = None
    state: str = "active"
    metadata_public: Any = None
    metadata_admin: Any = None
    external_id: str | None = None
    organization_id: uuid.UUID | None = None
    credentials: Mapping[str, Any] | None = None
    verifiable_addresses: Sequence[Mapping[str, Any]] = ()
    recovery_addresses: Sequence[Mapping[str, Any]] = ()
    password_plain: str | None = None


class IdentityObserver(Protocol):
    """Told after a stored identity changed or was deleted (``SessionManager`` implements it)."""

    async def identity_changed(self, identity_id: uuid.UUID) -> None: ...

    async def identity_deleted(self, identity_id: uuid.UUID) -> None: ...


class _Unobserved:
    async def identity_changed(self, identity_id: uuid.UUID) -> None:
        return None

    async def identity_deleted(self, identity_id: uuid.UUID) -> None:
        return None


class OrganizationLookup(Protocol):
    """Whether an organization exists (``OrganizationStore`` is one)."""

    async def get(self, organization_id: uuid.UUID) -> Organization | None: ...


class IdentityManager:
    def __init__(
        self,
        store: IdentityStore,
        schemas: SchemaRegistry,
        hasher: PasswordHasher,
        observer: IdentityObserver | None = None,
        failed_check_delay: tuple[float, float] | None = None,
        login_hints: bool = False,
        *,
        tracing: Tracing | None = None,
        organizations: OrganizationLookup | None = None,
    ) -> None:
        """``organizations``: without it, ``organization_id`` is stored unchecked (tests)."""
        self._organizations = organizations
        self._login_hints = login_hints
        self._store = store
        self._tracing = tracing or Tracing.off()
        self._schemas = schemas
        self._hasher = hasher
        self._observer = observer or _Unobserved()
        self._failed_check_delay = failed_check_delay

    # --- reads --------------------------------------------------------------------------------

    async def get(self, identity_id: uuid.UUID) -> Identity:
        with self._tracing.span("sidecar.identity.load") as span:
            identity = await self._store.get(identity_id)
            if span is not None:
                span.set_attribute("sidecar.identity.found", identity is not None)
        if identity is None:
            raise errors.NotFound(refusals.NOT_FOUND)
        return identity

    async def get_by_external_id(self, external_id: str) -> Identity:
        identity = await self._store.get_by_external_id(external_id)
        if identity is None:
            raise errors.NotFound(refusals.NOT_FOUND)
        return identity

    async def find_by_credential(self, credential_type: str, identifier: str) -> Identity | None:
        """The identity owning ``identifier`` as it is stored (e.g. oidc ``provider:subject``)."""
        return await self._store.find_by_identifier(credential_type, identifier)

    async def find_by_address(self, via: str, value: str) -> Identity | None:
        """The identity with ``value`` as a verifiable or recovery address."""
        found = await self._store.find_verifiable_address(via, value)
        if found is None:
            found = await self._store.find_recovery_address(via, value)
        return found[0] if found else None

    # --- writes -------------------------------------------------------------------------------

    async def create(self, spec: IdentitySpec) -> Identity:
        built = await self._build(spec, None)
        try:
            return await self._store.create(built)
        except errors.Conflict as exc:
            if not self._login_hints:
                raise
            hints = await self._hints(built)
            if hints is None or not hints.any():
                raise
            raise errors.DuplicateCredentials(
                exc.message,
                hints={
                    "available_credential_types": hints.available_credential_types,
                    "available_oidc_providers": hints.available_oidc_providers,
                    "credential_identifier_hint": hints.credential_identifier_hint,
                },
            ) from exc

    async def create_many(self, specs: Sequence[IdentitySpec]) -> list[Identity | errors.SidecarError]:
        """Kratos' batch create: per spec the stored identity or why it was refused.

        Each spec is built (and checked) on its own; a plaintext password is hashed in the
        hasher's pool, at most ``hasher.concurrency`` of this batch at a time so a batch waits
        for slots instead of overflowing ``hashers.max_queue``; a pre-hashed one is only
        parsed. The valid identities are then stored in one transaction. ``ServiceUnavailable``
        (a store or the hasher overloaded) fails the whole batch.
        """
        slots = asyncio.Semaphore(self._hasher.concurrency)

        async def build(spec: IdentitySpec) -> Identity | errors.SidecarError:
            try:
                if spec.password_plain is None and identity_json.plain_password(spec.credentials) is None:
                    return await self._build(spec, None)
                async with slots:
                    return await self._build(spec, None)
            except errors.ServiceUnavailable:
                raise
            except errors.SidecarError as exc:
                return exc

        built = await asyncio.gather(*(build(spec) for spec in specs))
        valid = [b for b in built if isinstance(b, Identity)]
        stored = iter(await self._store.create_many(valid) if valid else [])
        results: list[Identity | errors.SidecarError] = []
        for item in built:
            if isinstance(item, Identity):
                outcome = next(stored)
                if isinstance(outcome, Exception) and not isinstance(outcome, errors.SidecarError):
                    raise outcome
                results.append(outcome)
            else:
                results.append(item)
        return results

    async def _hints(self, new: Identity) -> LoginHints | None:
        """Kratos ``ConflictingIdentity``: the account owning one of ``new``'s credential
        identifiers, else one of its verifiable, else recovery addresses."""
        for credential in new.credentials.values():
            for identifier in credential.identifiers:
                found = await self._store.find_by_identifier(credential.type, identifier)
                if found is not None:
                    return hints_for(found, identifier, credential.type)
        for address in new.verifiable_addresses:
            hit = await self._store.find_verifiable_address(address.via, address.value)
            if hit is not None:
                return hints_for(hit[0], address.value, address.via)
        for recovery in new.recovery_addresses:
            hit = await self._store.find_recovery_address(recovery.via, recovery.value)
            if hit is not None:
                return hints_for(hit[0], recovery.value, recovery.via)
        return None

    async def update(self, identity_id: uuid.UUID, spec: IdentitySpec) -> Identity:
        """PUT semantics: traits, state and metadata replaced; credentials merged as Kratos does."""
        current = await self.get(identity_id)
        updated = await self._store.update(await self._build(spec, current))
        await self._observer.identity_changed(identity_id)
        return updated

    async def patch(self, identity_id: uuid.UUID, operations: Any) -> Identity:
        """RFC 6902 over the admin JSON view; ``/credentials/password/config/password`` sets a password."""
        current = await self.get(identity_id)
        if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
            raise errors.ValidationError("the body must be a JSON Patch array of operations")
        password: str | None = None
        remaining: list[dict[str, Any]] = []
        for op in operations:
            path = op.get("path")
            if path == _PASSWORD_PATCH and op.get("op") in ("add", "replace"):
                if not isinstance(op.get("value"), str):
                    raise errors.ValidationError("the new password must be a string")
                password = op["value"]
                continue
            for pointer in (path, op.get("from")):
                if isinstance(pointer, str) and _forbidden(pointer):
                    raise errors.ValidationError(f"patching {pointer} is not allowed")
            remaining.append(op)
        view = identity_json.identity_to_json(current, schema_url="", admin=True)
        try:
            patched = jsonpatch.JsonPatch(remaining).apply(view)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError) as exc:
            raise errors.ValidationError(f"invalid JSON Patch: {exc}") from exc
        if not isinstance(patched, dict):
            raise errors.ValidationError("the patch must leave an identity object")
        spec = IdentitySpec(
            traits=patched.get("traits"),  # type: ignore[arg-type]  # _build validates it
            schema_id=patched.get("schema_id"),
            state=patched.get("state", current.state),
            metadata_public=patched.get("metadata_public"),
            metadata_admin=patched.get("metadata_admin"),
            external_id=patched.get("external_id"),
            organization_id=identity_json.parse_uuid(patched.get("organization_id"), "organization_id"),
            verifiable_addresses=identity_json.address_list(patched.get("verifiable_addresses")),
            recovery_addresses=identity_json.address_list(patched.get("recovery_addresses")),
            credentials={"password": {"config": {"password": password}}} if password is not None else None,
        )
        updated = await self._store.update(await self._build(spec, current))
        await self._observer.identity_changed(identity_id)
        return updated

    async def delete(self, identity_id: uuid.UUID) -> None:
        """The identity and, through the observer, its sessions."""
        if not await self._store.delete(identity_id):
            raise errors.NotFound(refusals.NOT_FOUND)
        await self._observer.identity_deleted(identity_id)

    async def delete_credential(self, identity_id: uuid.UUID, credential_type: str) -> None:
        """Kratos' admin ``DELETE /identities/{id}/credentials/{type}``: second factors and keys
        always go; a first factor only while another way to sign in is left."""
        if credential_type not in CREDENTIAL_TYPES:
            raise errors.BadRequest(refusals.UNKNOWN_CREDENTIAL.format(type=repr(credential_type[:32])))
        identity = await self.get(identity_id)
        if credential_type not in identity.credentials:
            raise errors.NotFound(refusals.NO_CREDENTIAL.format(type=credential_type))
        if credential_type in FIRST_FACTOR_TYPES and credential_type != "webauthn":
            others = [
                t
                for t in identity.credentials
                if t != credential_type and t in FIRST_FACTOR_TYPES and t != "code"
            ]
            if not others:
                raise errors.BadRequest(refusals.LAST_FIRST_FACTOR.format(type=credential_type))
        elif credential_type not in _ALWAYS_DELETABLE:
            raise errors.BadRequest(refusals.NOT_DELETABLE.format(type=credential_type))
        await self._store.delete_credential(identity_id, credential_type)
        await self._observer.identity_changed(identity_id)

    async def set_password(self, identity_id: uuid.UUID, password: str) -> Identity:
        """Store a new password (settings and recovery flows); the identity needs an identifier."""
        identity = await self.get(identity_id)
        schema = self._schemas.get(identity.schema_id)
        identifiers = schema.identifiers(identity.traits, "password")
        if not identifiers:
            raise _missing_identifier()
        encoded = await _hash_plain(self._hasher, password)
        credential = _password_credential(identity.credentials.get("password"), identifiers, encoded)
        await self._store.save_credential(identity.id, credential)
        await self._observer.identity_changed(identity.id)
        return identity.with_credential(credential)

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> Identity:
        """Insert or replace one credential (TOTP, backup codes) of an existing identity.

        Observed like every other change: a second factor set up or removed moves the level the
        identity can reach, which the proxy and whoami enforce (``required_aal``)."""
        identity = await self.get(identity_id)
        await self._store.save_credential(identity.id, credential)
        await self._observer.identity_changed(identity.id)
        return identity.with_credential(credential)

    async def remove_credential(self, identity_id: uuid.UUID, credential_type: str) -> Identity:
        identity = await self.get(identity_id)
        await self._store.delete_credential(identity.id, credential_type)
        await self._observer.identity_changed(identity.id)
        return identity.without_credential(credential_type)

    # --- login --------------------------------------------------------------------------------

    async def authenticate_password(self, identifier: str, password: str) -> Identity | None:
        """The identity when ``password`` is right; None otherwise, in the same time either way.

        The caller checks ``state`` (an inactive identity is refused with ``identity_disabled``).
        """
        started = time.monotonic()
        identity = await self._store.find_by_identifier("password", normalize_identifier(identifier))
        credential = identity.credentials.get("password") if identity else None
        encoded = credential.config.get("hashed_password") if credential else None
        if identity is None or credential is None or not isinstance(encoded, str) or not encoded:
            await self._hasher.verify_dummy(password)
            await self._delay_failure(started)
            return None
        if not await self._hasher.verify(password, encoded):
            await self._delay_failure(started)
            return None
        if self._hasher.needs_rehash(encoded):
            # Kratos re-hashes imported or outdated hashes after a good login; failing here must
            # not fail the login, so it is only logged.
            try:
                new = await self._hasher.hash(password)
                updated = _password_credential(credential, credential.identifiers, new)
                await self._store.save_credential(identity.id, updated)
                identity = identity.with_credential(updated)
            except Exception:
                log.exception("could not re-hash the password of identity %s", identity.id)
        return identity

    async def _delay_failure(self, started: float) -> None:
        """``hashers.argon2.expected_duration`` ± ``expected_deviation``: a failed check answers no
        sooner than a random time in that window (Kratos' ``x.RandomDelay``: a normal sample around
        the duration, clamped to the window). Applied to unknown identifiers and wrong passwords
        alike, so the delay itself tells nothing."""
        if self._failed_check_delay is None:
            return
        base, deviation = self._failed_check_delay
        target = min(max(random.gauss(base, deviation / 3), base - deviation), base + deviation)
        remaining = target - (time.monotonic() - started)
        if remaining > 0:
            await asyncio.sleep(remaining)

    # --- building -----------------------------------------------------------------------------

    async def _build(self, spec: IdentitySpec, current: Identity | None) -> Identity:
        schema_id = spec.schema_id or (current.schema_id if current else self._schemas.default().id)
        schema = self._schemas.get(schema_id)
        schema.validate_traits(spec.traits)
        traits = dict(spec.traits)
        if spec.state not in ("active", "inactive"):
            raise errors.ValidationError(refusals.BAD_STATE.format(state=repr(spec.state)))
        if (
            spec.organization_id is not None
            and self._organizations is not None
            and (current is None or current.organization_id != spec.organization_id)
            and await self._organizations.get(spec.organization_id) is None
        ):
            raise errors.BadRequest(refusals.NO_ORGANIZATION, reason=refusals.NO_ORGANIZATION)
        now = utcnow()
        credentials = dict(current.credentials) if current else {}
        credentials.update(await self._imported_credentials(spec, credentials, schema, traits))
        credentials = _rederive(credentials, schema, traits, now)
        verifiable, recovery = _addresses(schema, traits, spec, current, now)
        base = current or Identity(schema_id=schema_id, traits=traits, created_at=now, state_changed_at=now)
        changed_state = current is not None and current.state != spec.state
        return replace(
            base,
            schema_id=schema_id,
            traits=traits,
            state=cast(IdentityState, spec.state),
            state_changed_at=now if changed_state else base.state_changed_at,
            metadata_public=spec.metadata_public,
            metadata_admin=spec.metadata_admin,
            external_id=spec.external_id or None,
            organization_id=spec.organization_id,
            verifiable_addresses=verifiable,
            recovery_addresses=recovery,
            credentials=credentials,
            updated_at=now,
        )

    async def _imported_credentials(
        self, spec: IdentitySpec, existing: Mapping[str, Credential], schema: IdentitySchema, traits: Any
    ) -> dict[str, Credential]:
        out = identity_json.parse_import(spec.credentials, existing)
        password = identity_json.plain_password(spec.credentials)
        if spec.password_plain is not None:
            password = spec.password_plain
        if password is not None:
            out["password"] = _password_credential(
                existing.get("password"), (), await _hash_plain(self._hasher, password)
            )
        hashed = out.get("password")
        if hashed is not None and isinstance(hashed.config.get("hashed_password"), str):
            try:
                self._hasher.validate_import(hashed.config["hashed_password"])
            except ValueError as exc:
                raise errors.ValidationError(
                    refusals.UNSUPPORTED_HASH.format(error=exc),
                    messages={"credentials.password.config.hashed_password": [str(exc)]},
                ) from exc
        if "password" in out and not schema.identifiers(traits, "password"):
            raise _missing_identifier()
        return out


def _forbidden(pointer: str) -> bool:
    return any(pointer == p or pointer.startswith(p + "/") for p in _FORBIDDEN_PATCH)


def _rederive(
    credentials: dict[str, Credential], schema: IdentitySchema, traits: Any, now: datetime
) -> dict[str, Credential]:
    """Identifiers follow the traits: password always, webauthn when the schema names one, code always.

    Passkeys are keyed by their user handle, not by a trait, so they are left alone.
    """
    for kind in ("password", "webauthn"):
        if kind in credentials:
            ids = tuple(schema.identifiers(traits, kind))
            if kind == "webauthn" and not ids:
                continue
            if kind == "webauthn":
                # Key ids are identifiers too (``key:<id>``, unique per type); they outlive trait edits.
                ids += tuple(i for i in credentials[kind].identifiers if i.startswith("key:"))
            if ids != credentials[kind].identifiers:
                credentials[kind] = replace(credentials[kind], identifiers=ids, updated_at=now)
    code = _code_credential(credentials.get("code"), schema.code_identifiers(traits), now)
    if code is None:
        credentials.pop("code", None)
    else:
        credentials["code"] = code
    return credentials


def _addresses(
    schema: IdentitySchema, traits: Any, spec: IdentitySpec, current: Identity | None, now: datetime
) -> tuple[tuple[VerifiableAddress, ...], tuple[RecoveryAddress, ...]]:
    """Schema-derived addresses; kept records (ids, verified status) when the value is unchanged."""
    given_v = identity_json.given_addresses(spec.verifiable_addresses)
    old_v = {(a.via, a.value): a for a in (current.verifiable_addresses if current else ())}
    verifiable = []
    for via, value in schema.verifiable_addresses(traits):
        address = old_v.get((via, value)) or VerifiableAddress(
            value=value, via=via, created_at=now, updated_at=now
        )
        override = given_v.get((via, value))
        if override is not None:
            address = _apply_address_override(address, override, now)
        verifiable.append(address)
    old_r = {(a.via, a.value): a for a in (current.recovery_addresses if current else ())}
    recovery = tuple(
        old_r.get((via, value)) or RecoveryAddress(value=value, via=via, created_at=now, updated_at=now)
        for via, value in schema.recovery_addresses(traits)
    )
    return tuple(verifiable), recovery


def _missing_identifier() -> errors.ValidationError:
    # Kratos 4000009: a password nobody can log in with is refused.
    return errors.ValidationError(refusals.NO_IDENTIFIERS, messages={"traits": [refusals.NO_IDENTIFIERS]})


async def _hash_plain(hasher: PasswordHasher, password: str) -> str:
    if not password:
        raise errors.ValidationError(refusals.EMPTY_PASSWORD)
    try:
        return await hasher.hash(password)
    except ValueError as exc:  # bcrypt refuses more than 72 bytes (Kratos 4000033)
        raise errors.ValidationError(str(exc), messages={"password": [str(exc)]}) from exc


def _password_credential(existing: Credential | None, identifiers: Sequence[str], encoded: str) -> Credential:
    now = utcnow()
    config = {"hashed_password": encoded}
    if existing is None:
        return Credential(type="password", identifiers=tuple(identifiers), config=config, created_at=now)
    return replace(
        existing, identifiers=tuple(identifiers) or existing.identifiers, config=config, updated_at=now
    )


def _code_credential(
    existing: Credential | None, identifiers: Sequence[tuple[str, str]], now: datetime
) -> Credential | None:
    """Kratos keeps a ``code`` credential in step with the schema's code identifiers."""
    if not identifiers:
        return None
    ids = tuple(value for value, _ in identifiers)
    config = {"addresses": [{"channel": via, "address": value} for value, via in identifiers]}
    if existing is None:
        return Credential(type="code", identifiers=ids, config=config, created_at=now, updated_at=now)
    if existing.identifiers == ids and existing.config == config:
        return existing
    return replace(existing, identifiers=ids, config=config, updated_at=now)


def _apply_address_override(
    address: VerifiableAddress, given: Mapping[str, Any], now: datetime
) -> VerifiableAddress:
    """An admin may mark an address verified (or not) when creating or updating an identity."""
    verified = given.get("verified")
    if not isinstance(verified, bool) or verified == address.verified:
        return address
    status = given.get("status") if given.get("status") in ("pending", "sent", "completed") else None
    return replace(
        address,
        verified=verified,
        status=status or ("completed" if verified else "pending"),
        verified_at=now if verified else None,
        updated_at=now,
    )
