"""``CourierStore`` over SQLAlchemy Core (async): SQLite and PostgreSQL.

The messages table is a leased queue (claim, finish, release: ``leased_queue.py``).
"""

from __future__ import annotations

import builtins
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.courier.model import MESSAGE_STATUSES, Dispatch, Message, MessageStatus, utcnow
from sidecar.courier.store import Cursor
from sidecar.storage.sql.engine import Connector
from sidecar.storage.sql.leased_queue import LeasedQueue
from sidecar.storage.sql.tables import UtcDateTime

metadata = sa.MetaData()

# Mirrors migrations/versions/0002_courier.py.
messages = sa.Table(
    "courier_messages",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", sa.Text(), nullable=False),
    sa.Column("body", sa.Text(), nullable=False),
    sa.Column("html_body", sa.Text(), nullable=True),
    sa.Column("template_type", sa.String(64), nullable=False),
    sa.Column("template_data", sa.JSON(), nullable=False),
    sa.Column("send_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_until", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

dispatches = sa.Table(
    "courier_message_dispatches",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("message_id", sa.Uuid(), sa.ForeignKey("courier_messages.id", ondelete="CASCADE")),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

queue = LeasedQueue(messages, attempts="send_count")

_MESSAGE_FIELDS = (
    *("id", "type", "status", "recipient", "subject", "body", "html_body", "template_type"),
    *("template_data", "send_count", "last_error", "next_attempt_at", "claimed_by", "claimed_until"),
    *("created_at", "updated_at"),
)


def _message(row: sa.RowMapping, sent: Sequence[Dispatch] = ()) -> Message:
    return Message(**{name: row[name] for name in _MESSAGE_FIELDS}, dispatches=tuple(sent))


class SqlCourierStore:
    def __init__(self, connector: Connector, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._db = connector
        self._clock = clock

    async def enqueue(self, message: Message) -> Message:
        message.validate()
        values = {name: getattr(message, name) for name in _MESSAGE_FIELDS}
        values.update(status="queued", claimed_by=None, claimed_until=None)
        async with self._db.write() as conn:
            await conn.execute(messages.insert().values(**values))
        return dataclasses.replace(message, status="queued", claimed_by=None, claimed_until=None)

    async def claim_batch(self, worker_id: str, *, limit: int, lease: timedelta) -> list[Message]:
        stmt = queue.claim(worker_id, now=self._clock(), limit=limit, lease=lease)
        async with self._db.write() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return sorted((_message(r) for r in rows), key=lambda m: (m.next_attempt_at, m.id))

    async def _finish(self, message_id: uuid.UUID, worker_id: str, dispatch: Dispatch, **values: Any) -> bool:
        now = self._clock()
        async with self._db.write() as conn:
            if (await conn.execute(queue.finish(message_id, worker_id, now=now, **values))).rowcount != 1:
                return False
            await conn.execute(
                dispatches.insert().values(
                    id=dispatch.id,
                    message_id=message_id,
                    status=dispatch.status,
                    error=dispatch.error,
                    created_at=now,
                    updated_at=now,
                )
            )
        return True

    async def mark_sent(self, message_id: uuid.UUID, worker_id: str) -> bool:
        dispatch = Dispatch(message_id=message_id, status="success")
        return await self._finish(message_id, worker_id, dispatch, status="sent", last_error=None)

    async def mark_failed(
        self, message_id: uuid.UUID, worker_id: str, *, error: str, retry_at: datetime | None
    ) -> bool:
        dispatch = Dispatch(message_id=message_id, status="failed", error=error)
        if retry_at is None:
            return await self._finish(message_id, worker_id, dispatch, status="abandoned", last_error=error)
        return await self._finish(
            message_id, worker_id, dispatch, status="queued", last_error=error, next_attempt_at=retry_at
        )

    async def release(self, message_ids: Sequence[uuid.UUID], worker_id: str) -> int:
        if not message_ids:
            return 0
        async with self._db.write() as conn:
            return (await conn.execute(queue.release(message_ids, worker_id, now=self._clock()))).rowcount

    async def release_held(self, worker_id: str) -> int:
        async with self._db.write() as conn:
            return (await conn.execute(queue.release_held(worker_id, now=self._clock()))).rowcount

    async def retry(self, message_id: uuid.UUID) -> bool:
        stmt = queue.retry(message_id, now=self._clock(), given_up="abandoned")
        async with self._db.write() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def abandon(self, message_id: uuid.UUID, reason: str) -> bool:
        stmt = (
            messages.update()
            .where(messages.c.id == message_id, messages.c.status == "queued")
            .values(status="abandoned", last_error=reason, updated_at=self._clock())
        )
        async with self._db.write() as conn:
            return bool((await conn.execute(stmt)).rowcount == 1)

    async def release_expired(self) -> int:
        async with self._db.write() as conn:
            return (await conn.execute(queue.release_expired(now=self._clock()))).rowcount

    async def list(
        self,
        *,
        page_size: int,
        after: Cursor | None = None,
        status: MessageStatus | None = None,
        recipient: str | None = None,
    ) -> list[Message]:
        stmt = (
            sa.select(messages).order_by(messages.c.created_at.desc(), messages.c.id.desc()).limit(page_size)
        )
        if status is not None:
            stmt = stmt.where(messages.c.status == status)
        if recipient is not None:
            stmt = stmt.where(messages.c.recipient == recipient)
        if after is not None:
            created, last_id = after
            stmt = stmt.where(
                sa.or_(
                    messages.c.created_at < created,
                    sa.and_(messages.c.created_at == created, messages.c.id < last_id),
                )
            )
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
            attempts = await self._dispatches(conn, [r["id"] for r in rows])
        return [_message(r, attempts.get(r["id"], [])) for r in rows]

    async def get(self, message_id: uuid.UUID) -> Message | None:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(sa.select(messages).where(messages.c.id == message_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            attempts = await self._dispatches(conn, [message_id])
        return _message(row, attempts.get(message_id, []))

    async def _dispatches(
        self, conn: AsyncConnection, ids: builtins.list[uuid.UUID]
    ) -> dict[uuid.UUID, builtins.list[Dispatch]]:
        found: dict[uuid.UUID, builtins.list[Dispatch]] = {}
        if not ids:
            return found
        stmt = (
            sa.select(dispatches)
            .where(dispatches.c.message_id.in_(ids))
            .order_by(dispatches.c.created_at, dispatches.c.id)
        )
        for r in (await conn.execute(stmt)).mappings():
            found.setdefault(r["message_id"], []).append(
                Dispatch(
                    id=r["id"],
                    message_id=r["message_id"],
                    status=r["status"],
                    error=r["error"],
                    created_at=r["created_at"],
                    updated_at=r["updated_at"],
                )
            )
        return found

    async def count_by_status(self) -> dict[MessageStatus, int]:
        counts: dict[MessageStatus, int] = dict.fromkeys(MESSAGE_STATUSES, 0)
        stmt = sa.select(messages.c.status, sa.func.count()).group_by(messages.c.status)
        async with self._db.read() as conn:
            for status, count in (await conn.execute(stmt)).all():
                if status in counts:
                    counts[status] = int(count)
        return counts
