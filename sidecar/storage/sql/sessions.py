"""``SessionStore`` on the ``sessions`` table, for deployments without Redis.

Queried fields (token digest, identity, active, expiry) are columns; the rest of the session is
the shared JSON codec's document in ``data``. The columns win over ``data`` when they differ, so
``revoke`` only has to touch ``active``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from sidecar.session.model import Session
from sidecar.storage.decoded import Decoded
from sidecar.storage.session_records import session_from_dict, session_to_dict
from sidecar.storage.sql.engine import Connector
from sidecar.storage.sql.kv import Purger
from sidecar.storage.sql.tables import JsonText, sessions

_COLUMNS = (sessions.c.active, sessions.c.expires_at, sessions.c.data)
# The session check's columns: ``data`` selected as its text (``JsonText``), so that asyncpg's row
# is plain values which the row can be remembered by (``sidecar.storage.decoded``), as SQLite's
# is. Decoded from JSON it would be a new dict, and so a new ``Session``, on every read: no
# remembered answer could be vouched for by the same value again (``Access._replay_later``).
_CHECKED = (
    sessions.c.active,
    sessions.c.expires_at,
    sa.type_coerce(sa.cast(sessions.c.data, sa.Text), JsonText).label("data"),
)


def _row_to_session(row: Any) -> Session:
    return session_from_dict(row.data, active=row.active, expires_at=row.expires_at)


def _live(now: datetime) -> sa.ColumnElement[bool]:
    return sessions.c.expires_at > now


class SqlSessionStore:
    def __init__(self, connector: Connector) -> None:
        self._db = connector
        self._purger = Purger(sessions)
        # The session check's read, rendered once (``Connector.fetch_one``).
        self._by_token = connector.prepare(
            sa.select(*_CHECKED).where(
                sessions.c.token_digest == sa.bindparam("token_digest", type_=sessions.c.token_digest.type),
                sessions.c.expires_at > sa.bindparam("now", type_=sessions.c.expires_at.type),
            )
        )
        # Its sessions by the row read (``sidecar.storage.decoded``): the expiry is the query's.
        self._decoded: Decoded[Session] = Decoded()

    async def create(self, session: Session, token_digest: str) -> None:
        values = {
            "id": session.id,
            "token_digest": token_digest,
            "identity_id": session.identity_id,
            "active": session.active,
            "expires_at": session.expires_at,
            "data": session_to_dict(session),
        }
        async with self._db.write("a session with this id or token already exists") as conn:
            await conn.execute(sa.insert(sessions).values(values))
            await self._purger.maybe_purge(conn, datetime.now(UTC))

    async def _one(self, condition: sa.ColumnElement[bool]) -> Session | None:
        query = sa.select(*_COLUMNS).where(condition, _live(datetime.now(UTC)))
        async with self._db.read_one() as conn:  # one SELECT: on SQLite, no BEGIN
            row = (await conn.execute(query)).first()
        return None if row is None else _row_to_session(row)

    async def get(self, session_id: uuid.UUID) -> Session | None:
        return await self._one(sessions.c.id == session_id)

    async def get_by_token(self, token_digest: str) -> Session | None:
        return await self._db.fetch_made(
            self._by_token,
            {"token_digest": token_digest, "now": datetime.now(UTC)},
            _row_to_session,
            self._decoded,
        )

    async def update(self, session: Session) -> None:
        stmt = (
            sa.update(sessions)
            .where(sessions.c.id == session.id)
            .values(active=session.active, expires_at=session.expires_at, data=session_to_dict(session))
        )
        async with self._db.write() as conn:
            await conn.execute(stmt)

    async def list_by_identity(self, identity_id: uuid.UUID, *, active_only: bool = False) -> list[Session]:
        query = (
            sa.select(*_COLUMNS)
            .where(sessions.c.identity_id == identity_id, _live(datetime.now(UTC)))
            .order_by(sessions.c.id)
        )
        if active_only:
            query = query.where(sessions.c.active.is_(True))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_row_to_session(row) for row in rows]

    async def list_all(
        self, *, page_size: int, after: uuid.UUID | None = None, active: bool | None = None
    ) -> list[Session]:
        query = sa.select(*_COLUMNS).where(_live(datetime.now(UTC))).order_by(sessions.c.id).limit(page_size)
        if after is not None:
            query = query.where(sessions.c.id > after)
        if active is not None:
            query = query.where(sessions.c.active.is_(active))
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_row_to_session(row) for row in rows]

    async def revoke(self, session_id: uuid.UUID) -> bool:
        stmt = (
            sa.update(sessions)
            .where(sessions.c.id == session_id, sessions.c.active.is_(True), _live(datetime.now(UTC)))
            .values(active=False)
        )
        async with self._db.write() as conn:
            return (await conn.execute(stmt)).rowcount > 0

    async def revoke_all(self, identity_id: uuid.UUID, *, except_id: uuid.UUID | None = None) -> int:
        stmt = (
            sa.update(sessions)
            .where(
                sessions.c.identity_id == identity_id,
                sessions.c.active.is_(True),
                _live(datetime.now(UTC)),
            )
            .values(active=False)
        )
        if except_id is not None:
            stmt = stmt.where(sessions.c.id != except_id)
        async with self._db.write() as conn:
            return (await conn.execute(stmt)).rowcount

    async def delete_by_identity(self, identity_id: uuid.UUID) -> int:
        stmt = (
            sa.delete(sessions).where(sessions.c.identity_id == identity_id).returning(sessions.c.expires_at)
        )
        async with self._db.write() as conn:
            expiries = (await conn.execute(stmt)).scalars().all()
        # Expired rows are gone for callers already; count only what they could still see.
        now = datetime.now(UTC)
        return sum(1 for expires_at in expiries if expires_at > now)

    async def ping(self) -> None:
        async with self._db.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
