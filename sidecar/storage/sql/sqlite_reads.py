"""The session check's two reads on SQLite (session by token digest, identity by id) without
SQLAlchemy's execution machinery or aiosqlite's per-call thread hops.

On a session-cache miss (``session.cache_ttl: 0s``, or a new token) these two SELECTs are the
store's whole share of the request. Through SQLAlchemy's async engine each cost about 1.1-1.4
million instructions (callgrind, issue 15): the statement's execution context and result
machinery, a greenlet switch per await, and five trips through aiosqlite's thread (cursor,
execute, fetch, close, connection return), each a wake-up of the event loop. Here a statement
is rendered to SQL once (``Read``), and a read is one trip to a thread of its own that holds a
plain ``sqlite3`` connection: execute and fetch in C, one wake-up back. Values go in and come
out through the very type processors SQLAlchemy applies to those columns (UUIDs, UTC
timestamps, JSON), so rows are what ``conn.execute(statement)`` would give.

Reads only: the connection is ``query_only``, each SELECT is its own transaction (autocommit,
as ``Connector.read_one``: no BEGIN), WAL readers never wait for a writer, and ``busy_timeout``
is the engine's. A failure is an outage (``ServiceUnavailable``), as ``translate_errors`` says.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from sidecar.errors import ServiceUnavailable
from sidecar.storage.sql.tables import JsonText, UtcDateTime
from sidecar.storage.values import json_value, parse_uuid


def _utc_reader(general: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLAlchemy's SQLite text timestamp (``2026-12-07 05:38:51.525731``, UTC without offset)
    as ``UtcDateTime`` reads it, in one call instead of the regex parser plus the decorator's
    step; anything else goes through ``general``, SQLAlchemy's own processor."""

    def process(value: Any) -> Any:
        try:
            if len(value) in (19, 26):  # SQLite's shapes: parsed with the offset, no replace
                moment = _fromisoformat(value + "+00:00")
                if moment.tzinfo is UTC:  # (a date alone would parse naive)
                    return moment
        except (TypeError, ValueError):
            pass
        try:
            return _fromisoformat(value).replace(tzinfo=UTC)
        except (TypeError, ValueError):
            return general(value)

    return process


_fromisoformat = datetime.fromisoformat

_json_reader = json_value  # JSON's processor (json.loads) less its wrapping; SQLite gives text


def _result_processor(column: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column's result processor, or one that gives the same values for what SQLite holds
    with fewer Python frames (a session-cache miss reads 10-14 columns: issue 15)."""
    if isinstance(column.type, JsonText):
        return _json_reader  # JSON selected as text, on any backend
    general: Callable[[Any], Any] | None = column.type.dialect_impl(dialect).result_processor(dialect, None)
    if general is None or dialect.name != "sqlite":
        return general  # PostgreSQL (asyncpg) gives values, not text: SQLAlchemy's processors
    if isinstance(column.type, UtcDateTime):
        return _utc_reader(general)
    if type(column.type) is sa.Uuid and column.type.as_uuid:
        return parse_uuid  # uuid.UUID, what Uuid's processor calls on SQLite's 32 hex digits
    if isinstance(column.type, sa.JSON) and not getattr(dialect, "_json_deserializer", None):
        return _json_reader  # JSON's processor (json.loads) less its wrapping; SQLite gives text
    return general


_tuple_new = tuple.__new__


class Read:
    """A SELECT rendered once for SQLite (or asyncpg, ``Connector._fetch_raw_pg``): its SQL, its
    parameters in order with their bind processors, its columns' result processors and a row type
    with the columns' names. ``plain``: its rows are plain hashable values as the driver gives
    them (SQLite's always; asyncpg's when no column is JSON, which it decodes into dicts)."""

    def __init__(self, statement: sa.Select[Any], dialect: Dialect) -> None:
        self.statement = statement
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        names = {name: bind for bind, name in compiled.bind_names.items()}
        order = compiled.positiontup or []
        self._params: list[tuple[str, Any, Callable[[Any], Any] | None]] = [
            (name, names[name].value, names[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in order
        ]
        self._required = frozenset(name for name in order if names[name].required)
        columns = list(statement.selected_columns)
        self._results = [_result_processor(c, dialect) for c in columns]
        self.plain = dialect.name != "postgresql" or not any(isinstance(c.type, sa.JSON) for c in columns)
        self._processed = [(i, p) for i, p in enumerate(self._results) if p is not None]
        self._row: Any = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, default, process in self._params:
            value = values[name] if name in self._required else values.get(name, default)
            out.append(process(value) if process is not None else value)
        return tuple(out)

    def row(self, raw: tuple[Any, ...]) -> Any:
        if len(raw) != len(self._results):
            raise ValueError(f"expected {len(self._results)} columns, got {len(raw)}")
        values = list(raw)
        for i, process in self._processed:
            value = values[i]
            if value is not None:
                values[i] = process(value)
        return _tuple_new(self._row, values)  # the namedtuple's _make, less its Python frame


def _settle(future: asyncio.Future[Any], row: Any, error: BaseException | None) -> None:
    if future.done():  # the reader was cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(row)


class SqliteReader:
    """One thread with one read-only ``sqlite3`` connection to the database file; reads queue
    for it (a ``SimpleQueue`` in, ``call_soon_threadsafe`` back: lighter than an executor's
    future chain, which cost as much as the read)."""

    def __init__(self, path: str, pragmas: tuple[tuple[str, str], ...]) -> None:
        self._path = path
        self._busy_timeout = int(dict(pragmas).get("busy_timeout", "5000"))
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while (item := self._queue.get()) is not None:
                loop, future, sql, parameters = item
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path, isolation_level=None)
                        conn.execute(f"PRAGMA busy_timeout={self._busy_timeout}")
                        conn.execute("PRAGMA query_only=1")
                    row = conn.execute(sql, parameters).fetchone()
                except BaseException as exc:
                    loop.call_soon_threadsafe(_settle, future, None, exc)
                else:
                    loop.call_soon_threadsafe(_settle, future, row, None)
        finally:
            if conn is not None:
                conn.close()

    async def fetch_one(self, read: Read, values: Mapping[str, Any]) -> Any:
        """The first row of ``read`` (processed as SQLAlchemy would), or None."""
        raw = await self.fetch_raw(read, values)
        return None if raw is None else read.row(raw)

    async def fetch_raw(self, read: Read, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``read`` as ``sqlite3`` gives it (a tuple of plain values: text,
        numbers, None), or None."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sidecar-sqlite-read", daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((loop, future, read.sql, read.parameters(values)))
        try:
            raw: tuple[Any, ...] | None = await future
        except (sqlite3.DatabaseError, sqlite3.InterfaceError, OSError) as exc:
            raise ServiceUnavailable("the database is unavailable") from exc
        return raw

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5)
