"""Statements for a table used as a leased work queue (the courier's messages, the web hook outbox).

A row is ``queued`` until ``next_attempt_at``; a worker claims a batch (``processing``, ``claimed_by``,
``claimed_until`` = now + lease); it then finishes each row (the attempt counter goes up and the claim is
cleared) or releases it. A claim whose lease ran out is due again.

Claiming is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`` statement. On PostgreSQL the
sub-select takes ``FOR UPDATE SKIP LOCKED`` so concurrent workers split the queue instead of waiting on (or
double-claiming) the same rows; SQLite has no row locks, but it runs the whole statement under its single
database write lock, which gives the same guarantee.

Only statements live here: each store runs them in its own transactions (the courier writes a dispatch row
in the same transaction as a finish).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa


class LeasedQueue:
    """The leased-queue statements over ``table``, whose attempt counter is the column ``attempts``."""

    def __init__(self, table: sa.Table, *, attempts: str) -> None:
        self.table = table
        self._c = table.c
        self._attempts = table.c[attempts]

    def claim(self, worker_id: str, *, now: datetime, limit: int, lease: timedelta) -> sa.Update:
        """Claims up to ``limit`` due rows, oldest due first; returns every column of the claimed rows."""
        c = self._c
        due = sa.or_(
            sa.and_(c.status == "queued", c.next_attempt_at <= now),
            sa.and_(c.status == "processing", c.claimed_until < now),
        )
        candidates = (
            sa.select(c.id)
            .where(due)
            .order_by(c.next_attempt_at, c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # compiled away on SQLite
        )
        return (
            self.table.update()
            .where(c.id.in_(candidates))
            .values(status="processing", claimed_by=worker_id, claimed_until=now + lease, updated_at=now)
            .returning(*c)
        )

    def finish(self, item_id: uuid.UUID, worker_id: str, *, now: datetime, **values: Any) -> sa.Update:
        """Counts an attempt and clears the claim, if ``worker_id`` still holds the row (rowcount 1)."""
        c = self._c
        return (
            self.table.update()
            .where(c.id == item_id, c.status == "processing", c.claimed_by == worker_id)
            .values(
                {
                    self._attempts.name: self._attempts + 1,
                    "claimed_by": None,
                    "claimed_until": None,
                    "updated_at": now,
                    **values,
                }
            )
        )

    def release(self, item_ids: Sequence[uuid.UUID], worker_id: str, *, now: datetime) -> sa.Update:
        """Puts rows that ``worker_id`` claimed back in the queue, without counting an attempt."""
        c = self._c
        return (
            self.table.update()
            .where(c.id.in_(list(item_ids)), c.status == "processing", c.claimed_by == worker_id)
            .values(status="queued", claimed_by=None, claimed_until=None, updated_at=now)
        )

    def release_held(self, worker_id: str, *, now: datetime) -> sa.Update:
        """Puts every row ``worker_id`` claimed back in the queue, without counting an attempt."""
        c = self._c
        return (
            self.table.update()
            .where(c.status == "processing", c.claimed_by == worker_id)
            .values(status="queued", claimed_by=None, claimed_until=None, updated_at=now)
        )

    def release_expired(self, *, now: datetime) -> sa.Update:
        """Puts every row whose lease ran out back in the queue."""
        c = self._c
        return (
            self.table.update()
            .where(c.status == "processing", c.claimed_until < now)
            .values(status="queued", claimed_by=None, claimed_until=None, updated_at=now)
        )

    def retry(self, item_id: uuid.UUID, *, now: datetime, given_up: str, **values: Any) -> sa.Update:
        """Makes a queued or given-up (``given_up`` status) row due now (rowcount 1 when it was either)."""
        c = self._c
        return (
            self.table.update()
            .where(c.id == item_id, c.status.in_(("queued", given_up)))
            .values(
                status="queued",
                next_attempt_at=now,
                claimed_by=None,
                claimed_until=None,
                updated_at=now,
                **values,
            )
        )
