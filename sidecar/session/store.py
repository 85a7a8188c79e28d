"""What sessions need from persistence. Backends: ``sidecar.storage.redis`` and ``sidecar.storage.sql``."""

from __future__ import annotations

import uuid
from typing import Protocol

from sidecar.session.model import Session


class SessionStore(Protocol):
    """Sessions keyed by id, findable by the SHA-256 digest of their token (never the token).

    Backends expire entries at ``expires_at`` (Redis key TTLs; SQL filters and purges). A store
    that cannot be reached raises ``sidecar.errors.ServiceUnavailable``: callers fail closed.
    """

    async def create(self, session: Session, token_digest: str) -> None: ...

    async def get(self, session_id: uuid.UUID) -> Session | None: ...

    async def get_by_token(self, token_digest: str) -> Session | None:
        """The session for a token digest, active or not, unless it has expired."""
        ...

    async def update(self, session: Session) -> None:
        """Replace a stored session (AAL upgrade, refresh, extend); the token stays the same."""
        ...

    async def list_by_identity(
        self, identity_id: uuid.UUID, *, active_only: bool = False
    ) -> list[Session]: ...

    async def list_all(
        self, *, page_size: int, after: uuid.UUID | None = None, active: bool | None = None
    ) -> list[Session]:
        """All sessions ordered by id (keyset pagination)."""
        ...

    async def revoke(self, session_id: uuid.UUID) -> bool:
        """Mark inactive; returns whether a session was changed."""
        ...

    async def revoke_all(self, identity_id: uuid.UUID, *, except_id: uuid.UUID | None = None) -> int: ...

    async def delete_by_identity(self, identity_id: uuid.UUID) -> int: ...

    async def ping(self) -> None: ...
