"""SCIM 2.0 provisioning records (RFC 7643/7644), per organization, and what they need from
persistence. The SCIM protocol itself lives in ``sidecar.api.scim``; a provisioned User's id is
the id of the identity it made, so the two never drift apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from sidecar.organization.model import utcnow

ResourceKind = Literal["User", "Group"]


class VersionMismatch(Exception):
    """The stored record is not at the version the client expected (HTTP 412, RFC 7644 §3.14)."""


@dataclass(frozen=True, slots=True)
class ScimRecord:
    organization_id: uuid.UUID
    kind: ResourceKind
    body: dict[str, Any]
    """The resource as provisioned, without ``id`` and ``meta``."""
    unique_key: str | None = None
    """``userName`` case-folded (RFC 7643 §4.1.1: unique per service provider, case-insensitive)."""
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    version: int = 1
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


class ScimStore(Protocol):
    """Provisioned resources and the per-organization bearer token (stored as a digest only)."""

    async def get(
        self, organization_id: uuid.UUID, kind: ResourceKind, record_id: uuid.UUID
    ) -> ScimRecord | None: ...

    async def list(self, organization_id: uuid.UUID, kind: ResourceKind) -> list[ScimRecord]: ...

    async def create(self, record: ScimRecord) -> ScimRecord:
        """``Conflict`` when the organization already has this ``unique_key`` for the kind."""
        ...

    async def update(self, record: ScimRecord, *, expected_version: int | None = None) -> ScimRecord:
        """Store ``record`` as the next version; ``NotFound``, ``VersionMismatch``, ``Conflict``."""
        ...

    async def delete(
        self,
        organization_id: uuid.UUID,
        kind: ResourceKind,
        record_id: uuid.UUID,
        *,
        expected_version: int | None = None,
    ) -> bool: ...

    async def set_token(self, organization_id: uuid.UUID, digest: str) -> None:
        """Replace the organization's SCIM token (the old one stops working at once)."""
        ...

    async def delete_token(self, organization_id: uuid.UUID) -> bool: ...

    async def tokens_issued(self, organization_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """When each of these organizations' current token was issued (those without one are absent)."""
        ...

    async def organization_of_token(self, digest: str) -> uuid.UUID | None: ...
