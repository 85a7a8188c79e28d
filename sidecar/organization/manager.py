"""The rules of the organization domain, shared by the admin API, login routing and SCIM.

Input is checked here (label, slug, domains in their canonical form); uniqueness of slugs and
domains is left to the store's constraints, so racing writers cannot both win.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from sidecar import errors
from sidecar.organization import refusals
from sidecar.organization.model import (
    InvalidOrganization,
    Organization,
    canonical_domain,
    check_domains,
    check_label,
    check_slug,
    email_domain,
    slug_from_label,
    utcnow,
)
from sidecar.organization.store import OrganizationStore

_KEYS = frozenset({"id", "label", "slug", "domains", "created_at", "updated_at"})


def _invalid(exc: InvalidOrganization) -> errors.BadRequest:
    text = refusals.FIELD.format(field=exc.field, reason=exc)
    return errors.BadRequest(text, reason=text)


def _fields(body: Any, *, partial: bool) -> dict[str, Any]:
    if not isinstance(body, Mapping):
        raise errors.BadRequest(refusals.NOT_AN_OBJECT)
    unknown = sorted(str(k) for k in body.keys() - _KEYS)
    if unknown:
        raise errors.BadRequest(refusals.UNKNOWN_FIELDS.format(fields=", ".join(unknown)[:200]))
    out: dict[str, Any] = {}
    try:
        if "label" in body or not partial:
            out["label"] = check_label(body.get("label"))
        if body.get("slug") is not None:
            out["slug"] = check_slug(body["slug"])
        if "domains" in body or not partial:
            out["domains"] = check_domains(body.get("domains", []))
    except InvalidOrganization as exc:
        raise _invalid(exc) from None
    return out


class OrganizationManager:
    def __init__(self, store: OrganizationStore) -> None:
        self._store = store

    async def get(self, organization_id: uuid.UUID) -> Organization:
        found = await self._store.get(organization_id)
        if found is None:
            raise errors.NotFound(refusals.NOT_FOUND)
        return found

    async def find(self, reference: str) -> Organization | None:
        """By id or by slug: what access rules and SCIM paths may name."""
        try:
            return await self._store.get(uuid.UUID(reference))
        except ValueError:
            pass
        try:
            return await self._store.get_by_slug(check_slug(reference))
        except InvalidOrganization:
            return None

    async def for_identifier(self, identifier: str) -> Organization | None:
        """The organization owning the email domain of ``identifier`` (None for other shapes)."""
        domain = email_domain(identifier)
        return await self._store.find_by_domain(domain) if domain else None

    async def list(
        self, *, page_size: int, after: uuid.UUID | None = None, domain: str | None = None
    ) -> list[Organization]:
        if domain is not None:
            try:
                domain = canonical_domain(domain)
            except InvalidOrganization as exc:
                raise _invalid(exc) from None
        return await self._store.list(page_size=page_size, after=after, domain=domain)

    async def create(self, body: Any) -> Organization:
        fields = _fields(body, partial=False)
        if "id" in body and body["id"] is not None:
            try:
                fields["id"] = uuid.UUID(str(body["id"]))
            except ValueError:
                raise errors.BadRequest(refusals.ID_NOT_UUID) from None
        fields.setdefault("slug", slug_from_label(fields["label"]))
        return await self._store.create(Organization(**fields))

    async def update(self, organization_id: uuid.UUID, body: Any, *, partial: bool = False) -> Organization:
        """PUT (``partial=False``: label and domains required) or a merge PATCH."""
        current = await self.get(organization_id)
        fields = _fields(body, partial=partial)
        if "id" in body and str(body["id"]) != str(organization_id):
            raise errors.BadRequest(refusals.ID_FIXED)
        return await self._store.update(replace(current, **fields, updated_at=utcnow()))

    async def add_domain(self, organization_id: uuid.UUID, domain: Any) -> Organization:
        current = await self.get(organization_id)
        try:
            canonical = canonical_domain(domain)
        except InvalidOrganization as exc:
            raise _invalid(exc) from None
        if canonical in current.domains:
            return current
        domains: Sequence[str] = (*current.domains, canonical)
        return await self._store.update(replace(current, domains=tuple(domains), updated_at=utcnow()))

    async def remove_domain(self, organization_id: uuid.UUID, domain: str) -> Organization:
        current = await self.get(organization_id)
        try:
            canonical = canonical_domain(domain)
        except InvalidOrganization:
            canonical = domain
        if canonical not in current.domains:
            raise errors.NotFound(refusals.NO_SUCH_DOMAIN)
        remaining = tuple(d for d in current.domains if d != canonical)
        return await self._store.update(replace(current, domains=remaining, updated_at=utcnow()))

    async def delete(self, organization_id: uuid.UUID) -> None:
        if not await self._store.delete(organization_id):
            raise errors.NotFound(refusals.NOT_FOUND)
