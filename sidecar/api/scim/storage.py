"""scim2-server's ``AsyncScimStorage`` over one organization's provisioned records.

scim2-server speaks the protocol (routing, PATCH, filter parsing, ETags, errors); this class
keeps the records in the SQL database and applies each write to the identities
(``provisioning.py``). Filters are evaluated over the organization's records of one kind, so a
search costs one query plus a pass in memory: fine for the thousands of users a company has.
"""

from __future__ import annotations

import uuid
from typing import Any, Union, cast

from scim2_models import (
    InvalidValueException,
    Meta,
    NotFoundException,
    PreconditionFailedException,
    Resource,
    ResourceType,
    ResponseParameters,
    ScimFilter,
    ScimProvider,
    SearchRequest,
    UniquenessException,
)
from scim2_server.storage import AsyncScimStorage, SearchPage
from scim2_server.utils import parametrize

from sidecar import errors
from sidecar.api.scim.provisioning import Provisioning, member_ids
from sidecar.organization.provisioning import ResourceKind, ScimRecord, ScimStore, VersionMismatch

_NOT_STORED = ("id", "meta", "password", "groups")


def _version(record: ScimRecord) -> str:
    return f'W/"{record.version}"'


def _expected(version: str | None) -> int | None:
    if version is None:
        return None
    text = version.removeprefix("W/").strip('"')
    if not text.isdigit():
        raise PreconditionFailedException()
    return int(text)


def _kind(resource_type: ResourceType) -> ResourceKind:
    if resource_type.name not in ("User", "Group"):
        raise NotFoundException(detail=f"no resource type {resource_type.name!r}")
    return cast(ResourceKind, resource_type.name)


def _record_id(resource_id: str | None) -> uuid.UUID:
    try:
        return uuid.UUID(str(resource_id))
    except ValueError:
        raise NotFoundException(detail=f"no resource {str(resource_id)[:64]!r}") from None


class OrganizationScimStorage(AsyncScimStorage):
    def __init__(
        self, organization_id: uuid.UUID, store: ScimStore, provisioning: Provisioning, provider: ScimProvider
    ) -> None:
        self._org = organization_id
        self._store = store
        self._provisioning = provisioning
        self._provider = provider

    # --- records <-> resources -----------------------------------------------------------------

    def _resource(
        self, resource_type: ResourceType, record: ScimRecord, groups: list[ScimRecord]
    ) -> Resource[Any]:
        model = cast(type[Resource[Any]], self._provider.model_for(resource_type))
        body = dict(record.body)
        if record.kind == "User":
            body["groups"] = [
                {
                    "value": str(g.id),
                    "display": g.body.get("displayName"),
                    "$ref": f"Groups/{g.id}",
                    "type": "direct",
                }
                for g in groups
                if record.id in member_ids(g.body)
            ] or None
        resource = model.model_validate({k: v for k, v in body.items() if v is not None})
        resource.id = str(record.id)
        resource.meta = Meta(
            resource_type=resource_type.name,
            created=record.created_at,
            last_modified=record.updated_at,
            version=_version(record),
        )
        return resource

    @staticmethod
    def _body(resource: Resource[Any]) -> tuple[dict[str, Any], str | None]:
        dumped = resource.model_dump()
        password = dumped.get("password")
        return {k: v for k, v in dumped.items() if k not in _NOT_STORED}, password if isinstance(
            password, str
        ) else None

    @staticmethod
    def _unique_key(kind: ResourceKind, body: dict[str, Any]) -> str | None:
        user_name = body.get("userName")
        return user_name.casefold() if kind == "User" and isinstance(user_name, str) else None

    async def _groups(self, kind: ResourceKind) -> list[ScimRecord]:
        return await self._store.list(self._org, "Group") if kind == "User" else []

    # --- AsyncScimStorage -------------------------------------------------------------------------

    async def get(
        self,
        resource_type: ResourceType,
        resource_id: str,
        *,
        response_parameters: ResponseParameters[Any] | None = None,
    ) -> Resource[Any]:
        kind = _kind(resource_type)
        record = await self._store.get(self._org, kind, _record_id(resource_id))
        if record is None:
            raise NotFoundException(detail=f"{kind} {resource_id[:64]!r} not found")
        return self._resource(resource_type, record, await self._groups(kind))

    async def search(
        self,
        resource_types: list[ResourceType],
        search_request: SearchRequest[Any],
        *,
        position: Any = None,
    ) -> SearchPage:
        found: list[Resource[Any]] = []
        for resource_type in resource_types:
            kind = _kind(resource_type)
            groups = await self._groups(kind)
            found += [
                self._resource(resource_type, r, groups) for r in await self._store.list(self._org, kind)
            ]
        scim_filter = search_request.filter
        if scim_filter is not None and not scim_filter.models and found:
            models = tuple(dict.fromkeys(type(r) for r in found))
            scim_filter = parametrize(ScimFilter, Union[models])(str(scim_filter))  # noqa: UP007
        matched = [r for r in found if scim_filter is None or scim_filter.match(r)]
        start = search_request.start_index_0 or 0
        stop = None if search_request.count is None else start + search_request.count
        return SearchPage(len(matched), matched[start:stop])

    async def create(self, resource_type: ResourceType, resource: Resource[Any]) -> Resource[Any]:
        kind = _kind(resource_type)
        body, password = self._body(resource)
        if kind == "User":
            identity = await self._provisioning.create_user(self._org, body, password)
            record = ScimRecord(self._org, kind, body, self._unique_key(kind, body), id=identity.id)
            try:
                stored = await self._store.create(record)
            except errors.Conflict:
                await self._provisioning.delete_user(self._org, identity.id)  # all or nothing
                raise UniquenessException(detail="userName is already taken in this organization") from None
            return self._resource(resource_type, stored, [])
        await self._check_members(body)
        stored = await self._store.create(ScimRecord(self._org, kind, body))
        await self._provisioning.sync_roles(self._org, member_ids(body))
        return self._resource(resource_type, stored, [])

    async def update(
        self, resource_type: ResourceType, resource: Resource[Any], *, expected_version: str | None = None
    ) -> Resource[Any]:
        kind = _kind(resource_type)
        record_id = _record_id(resource.id)
        current = await self._store.get(self._org, kind, record_id)
        if current is None:
            raise NotFoundException(detail=f"{kind} {str(resource.id)[:64]!r} not found")
        expected = _expected(expected_version)
        if expected is not None and expected != current.version:
            raise PreconditionFailedException()
        body, password = self._body(resource)
        if kind == "Group":
            await self._check_members(body)
        record = ScimRecord(
            self._org, kind, body, self._unique_key(kind, body), id=record_id, created_at=current.created_at
        )
        try:
            stored = await self._store.update(record, expected_version=expected)
        except VersionMismatch:
            raise PreconditionFailedException() from None
        except errors.Conflict:
            raise UniquenessException(detail="userName is already taken in this organization") from None
        if kind == "User":
            try:
                await self._provisioning.update_user(record_id, body, password)
            except (InvalidValueException, UniquenessException):
                # The identity refused the change: the User stays as the identity still is.
                previous = ScimRecord(
                    self._org,
                    kind,
                    current.body,
                    current.unique_key,
                    id=record_id,
                    created_at=current.created_at,
                )
                await self._store.update(previous, expected_version=stored.version)
                raise
        else:
            await self._provisioning.sync_roles(self._org, member_ids(current.body) | member_ids(body))
        return self._resource(resource_type, stored, await self._groups(kind))

    async def delete(
        self, resource_type: ResourceType, resource_id: str, *, expected_version: str | None = None
    ) -> None:
        kind = _kind(resource_type)
        record_id = _record_id(resource_id)
        current = await self._store.get(self._org, kind, record_id)
        if current is None:
            raise NotFoundException(detail=f"{kind} {resource_id[:64]!r} not found")
        try:
            deleted = await self._store.delete(
                self._org, kind, record_id, expected_version=_expected(expected_version)
            )
        except VersionMismatch:
            raise PreconditionFailedException() from None
        if not deleted:
            raise NotFoundException(detail=f"{kind} {resource_id[:64]!r} not found")
        if kind == "User":
            await self._provisioning.delete_user(self._org, record_id)
        else:
            await self._provisioning.sync_roles(self._org, member_ids(current.body))

    async def _check_members(self, body: dict[str, Any]) -> None:
        users = {r.id for r in await self._store.list(self._org, "User")}
        unknown = member_ids(body) - users
        if unknown:
            raise InvalidValueException(
                detail=f"members {sorted(map(str, unknown))[:5]} are no users of this organization"
            )
