"""What the organization domain needs from persistence. Backends: ``sidecar.storage.sql``."""

from __future__ import annotations

import uuid
from typing import Protocol

from sidecar.organization.model import Organization


class OrganizationStore(Protocol):
    """Durable organizations and their domains.

    A domain belongs to one organization at most and a slug names one: both are unique
    constraints, so two racing writers end in one success and one ``Conflict``.
    """

    async def create(self, organization: Organization) -> Organization: ...

    async def update(self, organization: Organization) -> Organization:
        """Replace label, slug and the set of domains; ``NotFound`` when it is gone."""
        ...

    async def get(self, organization_id: uuid.UUID) -> Organization | None: ...

    async def get_by_slug(self, slug: str) -> Organization | None: ...

    async def find_by_domain(self, domain: str) -> Organization | None:
        """The organization owning ``domain`` (canonical, lower-case ASCII)."""
        ...

    async def list(
        self, *, page_size: int, after: uuid.UUID | None = None, domain: str | None = None
    ) -> list[Organization]:
        """Ordered by id (keyset pagination: those with id > ``after``)."""
        ...

    async def delete(self, organization_id: uuid.UUID) -> bool:
        """Delete it unless an identity still belongs to it (``Conflict``), in one statement."""
        ...
