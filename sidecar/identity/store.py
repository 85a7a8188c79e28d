"""What the identity domain needs from persistence. Backends: ``sidecar.storage.sql``."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Collection, Sequence
from typing import Protocol

from sidecar.identity.model import Credential, Identity


class IdentityStore(Protocol):
    """Durable identities with their credentials and addresses.

    Every write is one transaction: an identity is stored whole or not at all. Credential
    identifiers are unique per credential type (the database enforces it), so a duplicate raises
    ``sidecar.errors.Conflict`` even when two writers race.
    """

    async def create(self, identity: Identity) -> Identity: ...

    async def create_many(self, identities: Sequence[Identity]) -> list[Identity | Exception]:
        """New identities in one transaction; per item the stored identity or its error
        (``Conflict``, ``BadRequest``): a bad item is left out, the others are stored."""
        ...

    async def update(self, identity: Identity) -> Identity:
        """Replace traits, state, metadata, addresses and credentials of an existing identity."""
        ...

    async def get(self, identity_id: uuid.UUID) -> Identity | None: ...

    async def get_for_session(
        self, identity_id: uuid.UUID, credential_types: Collection[str]
    ) -> Identity | None:
        """``get`` for the access path (``SessionResolver``): without ``metadata_admin`` and with
        only the credentials of ``credential_types`` (those the reachable AAL is computed from), so
        what a session never needs, a password hash above all, is not even read."""
        ...

    async def get_by_external_id(self, external_id: str) -> Identity | None: ...

    async def find_by_identifier(self, credential_type: str, identifier: str) -> Identity | None:
        """The identity owning ``identifier`` (already normalised) for ``credential_type``."""
        ...

    async def list(
        self,
        *,
        page_size: int,
        after: uuid.UUID | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        credentials_identifier: str | None = None,
        organization_id: uuid.UUID | None = None,
    ) -> list[Identity]:
        """Identities ordered by id (keyset pagination: those with id > ``after``)."""
        ...

    async def search_traits(
        self, paths: Sequence[str], text: str, *, page_size: int, after: uuid.UUID | None = None
    ) -> builtins.list[Identity]:
        """Identities (ordered by id, keyset after ``after``) where the trait at any of ``paths``
        (dotted, e.g. ``name.first``) is a string containing ``text``, ignoring case."""
        ...

    async def delete(self, identity_id: uuid.UUID) -> bool: ...

    async def count(self) -> int: ...

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> None:
        """Insert or replace the identity's credential of ``credential.type``."""
        ...

    async def delete_credential(self, identity_id: uuid.UUID, credential_type: str) -> bool: ...

    async def find_verifiable_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None: ...

    async def find_recovery_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None: ...

    async def mark_address_verified(self, address_id: uuid.UUID) -> uuid.UUID | None:
        """Idempotent; the owning identity's id when this call verified the address, else None."""
        ...

    async def ping(self) -> None:
        """Raise ``ServiceUnavailable`` when the database cannot be reached."""
        ...
