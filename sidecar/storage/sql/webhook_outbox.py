"""``OutboxStore`` over SQLAlchemy Core (async): SQLite and PostgreSQL.

The deliveries table is a leased queue, as the courier's messages (``leased_queue.py``): concurrent
sidecars split the outbox.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from sidecar.storage.sql.engine import Connector
from sidecar.storage.sql.leased_queue import LeasedQueue
from sidecar.storage.sql.tables import UtcDateTime
from sidecar.webhooks.outbox import Delivery, DeliveryStatus, utcnow

metadata = sa.MetaData()

# Mirrors migrations/versions/0003_webhook_outbox.py.
deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("hook_id", sa.String(128), nullable=True),
    sa.Column("flow_id", sa.String(64), nullable=True),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("headers", sa.JSON(), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=True),
    sa.Column("timeout_seconds", sa.Float(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_status_code", sa.Integer(), nullable=True),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_until", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("delivered_at", UtcDateTime, nullable=True),
)

queue = LeasedQueue(deliveries, attempts="attempts")

_FIELDS = [c.name for c in deliveries.columns]


def _delivery(row: sa.RowMapping) -> Delivery:
    values = {name: row[name] for name in _FIELDS}
    values["headers"] = [(str(k), str(v)) for k, v in values["headers"] or []]
    return Delivery(**values)


class SqlOutboxStore:
    def __init__(self, connector: Connector, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = connector
        self._clock = clock

    async def enqueue(self, delivery: Delivery) -> None:
        values: dict[str, Any] = {name: getattr(delivery, name) for name in _FIELDS}
        values.update(
            status="queued", claimed_by=None, claimed_until=None, headers=[list(h) for h in delivery.headers]
        )
        async with self._db.write() as conn:
            await conn.execute(deliveries.insert().values(**values))

    async def claim_batch(self, worker_id: str, *, limit: int, lease: timedelta) -> list[Delivery]:
        stmt = queue.claim(worker_id, now=self._clock(), limit=limit, lease=lease)
        async with self._db.write() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return sorted((_delivery(r) for r in rows), key=lambda d: (d.next_attempt_at, d.id))

    async def _finish(self, delivery_id: uuid.UUID, worker_id: str, **values: Any) -> bool:
        stmt = queue.finish(delivery_id, worker_id, now=self._clock(), **values)
        async with self._db.write() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def mark_delivered(self, delivery_id: uuid.UUID, worker_id: str, *, status_code: int) -> bool:
        return await self._finish(
            delivery_id,
            worker_id,
            status="delivered",
            last_status_code=status_code,
            last_error=None,
            delivered_at=self._clock(),
        )

    async def mark_failed(
        self,
        delivery_id: uuid.UUID,
        worker_id: str,
        *,
        error: str,
        status_code: int | None,
        retry_at: datetime | None,
    ) -> bool:
        if retry_at is None:
            return await self._finish(
                delivery_id, worker_id, status="dead", last_error=error, last_status_code=status_code
            )
        return await self._finish(
            delivery_id,
            worker_id,
            status="queued",
            last_error=error,
            last_status_code=status_code,
            next_attempt_at=retry_at,
        )

    async def release(self, delivery_ids: Sequence[uuid.UUID], worker_id: str) -> int:
        if not delivery_ids:
            return 0
        async with self._db.write() as conn:
            return int(
                (await conn.execute(queue.release(delivery_ids, worker_id, now=self._clock()))).rowcount
            )

    async def release_held(self, worker_id: str) -> int:
        async with self._db.write() as conn:
            return int((await conn.execute(queue.release_held(worker_id, now=self._clock()))).rowcount)

    async def retry(self, delivery_id: uuid.UUID) -> bool:
        stmt = queue.retry(delivery_id, now=self._clock(), given_up="dead", attempts=0)
        async with self._db.write() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def list(self, *, status: DeliveryStatus | None, limit: int) -> builtins.list[Delivery]:
        stmt = (
            sa.select(deliveries)
            .order_by(deliveries.c.created_at.desc(), deliveries.c.id.desc())
            .limit(limit)
        )
        if status is not None:
            stmt = stmt.where(deliveries.c.status == status)
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_delivery(r) for r in rows]

    async def get(self, delivery_id: uuid.UUID) -> Delivery | None:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)))
                .mappings()
                .first()
            )
        return _delivery(row) if row is not None else None

    async def count_by_status(self) -> dict[str, int]:
        stmt = sa.select(deliveries.c.status, sa.func.count()).group_by(deliveries.c.status)
        async with self._db.read() as conn:
            return {str(s): int(n) for s, n in (await conn.execute(stmt)).all()}
