"""What the courier needs from persistence. Backend: ``sidecar.storage.sql.courier_store``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from sidecar.courier.model import Message, MessageStatus

# Keyset position for listing: messages are listed newest first, by (created_at, id).
Cursor = tuple[datetime, uuid.UUID]


class CourierStore(Protocol):
    """A durable queue of outgoing messages shared by any number of workers and replicas.

    Claims are leases: ``claim_batch`` hands each due message to exactly one worker until
    ``claimed_until``; a lease that runs out (its worker died) makes the message claimable again.
    ``mark_sent``/``mark_failed``/``release`` only act while the caller still holds the claim, so a
    worker whose lease was taken over cannot overwrite the new holder's outcome.
    """

    async def enqueue(self, message: Message) -> Message:
        """Store a new ``queued`` message. Raises ``ValueError`` for unsafe recipients/subjects."""
        ...

    async def claim_batch(self, worker_id: str, *, limit: int, lease: timedelta) -> list[Message]:
        """Atomically claim up to ``limit`` due messages (queued and due, or with an expired lease)."""
        ...

    async def mark_sent(self, message_id: uuid.UUID, worker_id: str) -> bool:
        """Record a successful attempt; False if ``worker_id`` no longer holds the claim."""
        ...

    async def mark_failed(
        self, message_id: uuid.UUID, worker_id: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        """Record a failed attempt: requeue for ``retry_at``, or abandon when it is None."""
        ...

    async def release(self, message_ids: Sequence[uuid.UUID], worker_id: str) -> int:
        """Give claims back unsent (no attempt counted), e.g. on shutdown. Returns how many."""
        ...

    async def release_held(self, worker_id: str) -> int:
        """Give back every claim ``worker_id`` holds, unsent (no attempt counted): what a worker that
        lost track of its claims (a release or a claim's answer lost to an outage) does once the
        store answers again, when it has nothing in flight. Returns how many."""
        ...

    async def retry(self, message_id: uuid.UUID) -> bool:
        """An operator's retry: a ``queued`` or ``abandoned`` message becomes due now. Its attempts
        are kept, so a retried message that fails again is abandoned again (one more attempt).
        False when the message is being sent, was sent, or does not exist."""
        ...

    async def abandon(self, message_id: uuid.UUID, reason: str) -> bool:
        """An operator gives up on a ``queued`` message (``last_error`` says why). False otherwise."""
        ...

    async def release_expired(self) -> int:
        """Put messages whose lease ran out back to ``queued``. Returns how many."""
        ...

    async def list(
        self,
        *,
        page_size: int,
        after: Cursor | None = None,
        status: MessageStatus | None = None,
        recipient: str | None = None,
    ) -> list[Message]:
        """Messages newest first (by created_at, then id), those strictly after ``after``."""
        ...

    async def get(self, message_id: uuid.UUID) -> Message | None: ...

    async def count_by_status(self) -> dict[MessageStatus, int]:
        """Every status with its count (zero included), e.g. for metrics."""
        ...
