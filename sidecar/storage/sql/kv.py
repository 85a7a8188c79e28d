"""``KeyValueStore`` on the ``kv`` table, for deployments without Redis.

Every operation is one statement, so it is atomic on PostgreSQL (row locks, ``ON CONFLICT``) and
on SQLite (one writer at a time). Expired rows stay invisible to reads until a periodic purge.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from sidecar.storage.sql.engine import Connector
from sidecar.storage.sql.tables import kv

PURGE_INTERVAL_SECONDS = 60.0


def upsert(dialect: str, table: sa.Table) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the running dialect (both spell it the same)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


class Purger:
    """Deletes expired rows at most once per interval, piggybacking on a write."""

    def __init__(self, table: sa.Table, interval: float = PURGE_INTERVAL_SECONDS) -> None:
        self._table = table
        self._interval = interval
        self._due = 0.0

    async def maybe_purge(self, conn: AsyncConnection, now: datetime) -> None:
        if time.monotonic() < self._due:
            return
        self._due = time.monotonic() + self._interval
        await conn.execute(sa.delete(self._table).where(self._table.c.expires_at <= now))


class SqlKeyValueStore:
    def __init__(self, connector: Connector) -> None:
        self._db = connector
        self._purger = Purger(kv)

    async def set(self, key: str, value: bytes, ttl: timedelta) -> None:
        now = datetime.now(UTC)
        stmt = upsert(self._db.dialect, kv).values(key=key, value=value, counter=0, expires_at=now + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=[kv.c.key],
            set_={"value": stmt.excluded.value, "counter": 0, "expires_at": stmt.excluded.expires_at},
        )
        async with self._db.write() as conn:
            await conn.execute(stmt)
            await self._purger.maybe_purge(conn, now)

    async def get(self, key: str) -> bytes | None:
        query = sa.select(kv.c.value).where(kv.c.key == key, kv.c.expires_at > datetime.now(UTC))
        async with self._db.read() as conn:
            value: bytes | None = (await conn.execute(query)).scalar_one_or_none()
        return value

    async def delete(self, key: str) -> bool:
        stmt = sa.delete(kv).where(kv.c.key == key).returning(kv.c.expires_at)
        async with self._db.write() as conn:
            expires_at = (await conn.execute(stmt)).scalar_one_or_none()
        return expires_at is not None and expires_at > datetime.now(UTC)

    async def take(self, key: str) -> bytes | None:
        stmt = sa.delete(kv).where(kv.c.key == key, kv.c.expires_at > datetime.now(UTC)).returning(kv.c.value)
        async with self._db.write() as conn:
            value: bytes | None = (await conn.execute(stmt)).scalar_one_or_none()
        return value

    async def add(self, key: str, value: bytes, ttl: timedelta) -> bool:
        now = datetime.now(UTC)
        stmt = upsert(self._db.dialect, kv).values(key=key, value=value, counter=0, expires_at=now + ttl)
        # An expired row counts as absent: overwrite it, but leave a live one untouched.
        stmt = stmt.on_conflict_do_update(
            index_elements=[kv.c.key],
            set_={"value": stmt.excluded.value, "counter": 0, "expires_at": stmt.excluded.expires_at},
            where=kv.c.expires_at <= now,
        ).returning(kv.c.key)
        async with self._db.write() as conn:
            added = (await conn.execute(stmt)).first() is not None
            await self._purger.maybe_purge(conn, now)
        return added

    async def incr(self, key: str, ttl: timedelta, by: int = 1) -> int:
        now = datetime.now(UTC)
        expired = kv.c.expires_at <= now
        stmt = upsert(self._db.dialect, kv).values(
            key=key, value=str(by).encode(), counter=by, expires_at=now + ttl
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[kv.c.key],
            set_={
                "counter": sa.case((expired, by), else_=kv.c.counter + by),
                "expires_at": sa.case((expired, stmt.excluded.expires_at), else_=kv.c.expires_at),
            },
        ).returning(kv.c.counter)
        async with self._db.write() as conn:
            count = int((await conn.execute(stmt)).scalar_one())
            # Same transaction and row lock: ``get`` sees the count as ASCII digits, as in Redis.
            await conn.execute(sa.update(kv).where(kv.c.key == key).values(value=str(count).encode()))
        return count

    async def ttl(self, key: str) -> timedelta | None:
        now = datetime.now(UTC)
        query = sa.select(kv.c.expires_at).where(kv.c.key == key, kv.c.expires_at > now)
        async with self._db.read() as conn:
            expires_at: datetime | None = (await conn.execute(query)).scalar_one_or_none()
        return None if expires_at is None else expires_at - now

    async def ping(self) -> None:
        async with self._db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
