"""What a SCIM write does to identities (docs/SSO.md "Provisioning").

A User is an identity of the organization (same id): its primary email is the ``email`` trait
(``userName`` is the ``username`` trait too when the identity schema has one),
``active`` its state, a ``password`` (never stored in the SCIM record) its password credential;
other attributes go where ``scim.attributes`` says (``attributes.py``).
Group membership becomes ``metadata_public.<roles_field>``: the sorted display names of the
groups the user is in. Deprovisioning (``active: false``) disables the identity and revokes its
sessions at once, in every worker; DELETE deletes the identity, and its sessions with it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from scim2_models import InvalidValueException, UniquenessException

from sidecar import errors
from sidecar.api.scim.attributes import AttributeMapping, Fields
from sidecar.identity.manager import IdentityManager, IdentitySpec
from sidecar.identity.model import Identity
from sidecar.organization.model import Organization
from sidecar.organization.provisioning import ScimRecord, ScimStore
from sidecar.security.emails import InvalidEmail, canonical_email


class Revoker(Protocol):
    async def revoke_others(self, identity_id: uuid.UUID, except_id: uuid.UUID | None) -> int: ...


def user_email(body: Mapping[str, Any]) -> str | None:
    """The primary email (else the first, else an email-shaped ``userName``), canonical."""
    emails = [
        e for e in body.get("emails") or [] if isinstance(e, Mapping) and isinstance(e.get("value"), str)
    ]
    emails.sort(key=lambda e: not e.get("primary"))
    candidates = [e["value"] for e in emails]
    user_name = body.get("userName")
    if isinstance(user_name, str) and "@" in user_name:
        candidates.append(user_name)
    for value in candidates:
        try:
            return canonical_email(value)
        except InvalidEmail:
            continue
    return None


def member_ids(body: Mapping[str, Any]) -> set[uuid.UUID]:
    out: set[uuid.UUID] = set()
    for member in body.get("members") or []:
        value = member.get("value") if isinstance(member, Mapping) else None
        try:
            out.add(uuid.UUID(str(value)))
        except ValueError:
            raise InvalidValueException(
                detail=f"member {str(value)[:64]!r} is no user of this organization"
            ) from None
    return out


class Provisioning:
    def __init__(
        self,
        identities: IdentityManager,
        sessions: Revoker,
        store: ScimStore,
        roles_field: str,
        *,
        username_trait: Callable[[], bool] = lambda: False,
        attributes: AttributeMapping,
        organization: Callable[[uuid.UUID], Awaitable[Organization]],
    ) -> None:
        """``username_trait``: whether the default identity schema has a ``username`` trait (asked
        at each write: schemas load when the services start). ``attributes``: the other attributes'
        mapping; ``organization``: an organization by id (its slug picks its own mapping)."""
        self._username = username_trait
        self._attributes = attributes
        self._organization = organization
        self._identities = identities
        self._sessions = sessions
        self._store = store
        self._roles_field = roles_field

    async def create_user(
        self, organization_id: uuid.UUID, body: Mapping[str, Any], password: str | None
    ) -> Identity:
        credentials = {"password": {"config": {"password": password}}} if password else None
        fields = await self._mapped(
            organization_id,
            body,
            # Without an address the identity schema decides: the default one requires it (400).
            {
                "traits": self._traits({}, body),
                "metadata_public": {self._roles_field: []},
                "metadata_admin": {},
            },
        )
        spec = IdentitySpec(
            traits=fields["traits"],
            state="active" if body.get("active", True) is not False else "inactive",
            metadata_public=fields["metadata_public"],
            metadata_admin=fields["metadata_admin"] or None,
            organization_id=organization_id,
            credentials=credentials,
        )
        try:
            return await self._identities.create(spec)
        except errors.Conflict:
            raise UniquenessException(detail="an identity with this email address already exists") from None
        except errors.BadRequest as exc:
            raise InvalidValueException(detail=exc.reason or exc.message) from None

    async def update_user(
        self, identity_id: uuid.UUID, body: Mapping[str, Any], password: str | None
    ) -> None:
        current = await self._identities.get(identity_id)
        active = body.get("active", True) is not False
        before = {
            "traits": self._traits(current.traits, body),
            "metadata_public": _object(current.metadata_public),
            "metadata_admin": _object(current.metadata_admin),
        }
        fields = (
            await self._mapped(current.organization_id, body, before) if current.organization_id else before
        )
        ops: list[dict[str, Any]] = [
            {"op": "replace", "path": "/traits", "value": fields["traits"]},
            {"op": "replace", "path": "/state", "value": "active" if active else "inactive"},
        ]
        for key in ("metadata_public", "metadata_admin"):
            if fields[key] != before[key]:
                # "add" sets an object member whether or not it exists yet (RFC 6902 §4.1).
                ops.append({"op": "add", "path": f"/{key}", "value": fields[key] or None})
        if password:
            ops.append({"op": "add", "path": "/credentials/password/config/password", "value": password})
        try:
            await self._identities.patch(identity_id, ops)
        except errors.Conflict:
            raise UniquenessException(detail="an identity with this email address already exists") from None
        except errors.BadRequest as exc:
            raise InvalidValueException(detail=exc.reason or exc.message) from None
        if not active:
            await self._sessions.revoke_others(identity_id, except_id=None)

    async def _mapped(self, organization_id: uuid.UUID, body: Mapping[str, Any], fields: Fields) -> Fields:
        organization = await self._organization(organization_id)
        mapping = self._attributes.for_organization(str(organization.id), organization.slug)
        return self._attributes.apply(mapping, body, fields)

    def _traits(self, current: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        traits = {k: v for k, v in current.items() if k not in ("email", "username")}
        email = user_email(body)
        if email:
            traits["email"] = email
        if self._username() and isinstance(body.get("userName"), str):
            traits["username"] = body["userName"]
        return traits

    async def delete_user(self, organization_id: uuid.UUID, identity_id: uuid.UUID) -> None:
        with contextlib.suppress(errors.NotFound):
            await self._identities.delete(identity_id)
        for group in await self._store.list(organization_id, "Group"):
            if identity_id in member_ids(group.body):
                members = [
                    m for m in group.body.get("members") or [] if str(m.get("value")) != str(identity_id)
                ]
                await self._store.update(
                    ScimRecord(**{**_fields(group), "body": {**group.body, "members": members}})
                )

    async def sync_roles(self, organization_id: uuid.UUID, users: Iterable[uuid.UUID]) -> None:
        """Recompute the roles of ``users`` from every group of the organization."""
        groups = await self._store.list(organization_id, "Group")
        for user in set(users):
            roles = sorted(
                {
                    str(g.body.get("displayName"))
                    for g in groups
                    if user in member_ids(g.body) and g.body.get("displayName")
                }
            )
            try:
                current = await self._identities.get(user)
            except errors.NotFound:
                continue
            if current.organization_id != organization_id:
                continue
            public = dict(current.metadata_public) if isinstance(current.metadata_public, Mapping) else {}
            if public.get(self._roles_field) == roles:
                continue
            public[self._roles_field] = roles
            await self._identities.patch(user, [{"op": "add", "path": "/metadata_public", "value": public}])


def _object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _fields(record: ScimRecord) -> dict[str, Any]:
    return {
        "organization_id": record.organization_id,
        "kind": record.kind,
        "body": record.body,
        "unique_key": record.unique_key,
        "id": record.id,
        "version": record.version,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
