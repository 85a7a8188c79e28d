"""Async engines from Kratos-style DSNs, and the one place SQL driver errors become domain errors.

Stores never open connections themselves: they ask a :class:`Connector` for ``read()`` or
``write()``, which serialises SQLite writers and translates failures (an outage is a 503,
a unique violation a 409, never a leaked SQL message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar
from urllib.parse import parse_qsl

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from sidecar.errors import BadRequest, Conflict, ServiceUnavailable
from sidecar.storage.decoded import Decoded
from sidecar.storage.sql.sqlite_reads import Read, SqliteReader

log = logging.getLogger("sidecar.storage.sql")

T = TypeVar("T")

Flavour = Literal["postgresql", "sqlite", "sqlite-memory"]
# A fixed message, or one chosen from the violated constraint (never the SQL text itself).
ConflictMessage: TypeAlias = str | Callable[[sa.exc.IntegrityError], str]

MEMORY_DSNS = frozenset({"memory", "sqlite://:memory:", "sqlite:///:memory:"})
# Kratos (Go) DSN options that asyncpg would reject as unknown connect() keywords.
_GO_POOL_OPTIONS = ("max_conns", "max_idle_conns", "max_conn_lifetime", "max_idle_conn_time")
_SQLITE_BUSY_TIMEOUT_MS = 5000
_BEGIN_OPTION = "sidecar_sqlite_begin"


@dataclass(frozen=True, slots=True)
class EngineSpec:
    url: URL
    flavour: Flavour
    pragmas: tuple[tuple[str, str], ...] = ()
    """SQLite ``PRAGMA``s set on every connection, from the DSN's go-sqlite3 options."""


_SQLITE_SCHEMES = ("sqlite://", "sqlite3://")
_JOURNAL_MODES = frozenset({"DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"})
_SYNC_MODES = {"0": "OFF", "1": "NORMAL", "2": "FULL", "3": "EXTRA"}
_GO_TRUE = frozenset({"1", "t", "true", "yes", "on"})  # go-sqlite3 accepts these (any case)
_GO_FALSE = frozenset({"0", "f", "false", "no", "off"})


def _sqlite_pragmas(params: list[tuple[str, str]]) -> tuple[bool, tuple[tuple[str, str], ...]]:
    """(in memory?, pragmas) from go-sqlite3's DSN options; an option sidecar cannot honour is
    refused by name rather than ignored."""
    pragmas = {"journal_mode": "WAL", "synchronous": "NORMAL", "busy_timeout": str(_SQLITE_BUSY_TIMEOUT_MS)}
    memory = False
    for key, value in params:
        low = value.lower()
        if key in ("_fk", "_foreign_keys"):
            if low in _GO_FALSE:
                raise ValueError(
                    f"dsn option {key}={value}: sidecar keeps SQLite foreign keys on (its tables "
                    "delete credentials and addresses with their identity)"
                )
            if low not in _GO_TRUE:
                raise ValueError(f"dsn option {key}={value}: expected true or false")
        elif key in ("_journal_mode", "_journal"):
            if value.upper() not in _JOURNAL_MODES:
                raise ValueError(
                    f"dsn option {key}={value}: expected one of {', '.join(sorted(_JOURNAL_MODES))}"
                )
            pragmas["journal_mode"] = value.upper()
        elif key in ("_busy_timeout", "_timeout"):
            if not value.isdigit():
                raise ValueError(f"dsn option {key}={value}: expected milliseconds")
            pragmas["busy_timeout"] = value
        elif key in ("_synchronous", "_sync"):
            mode = _SYNC_MODES.get(value, value.upper())
            if mode not in _SYNC_MODES.values():
                raise ValueError(f"dsn option {key}={value}: expected OFF, NORMAL, FULL or EXTRA")
            pragmas["synchronous"] = mode
        elif key == "_txlock":
            if low != "immediate":
                raise ValueError(
                    f"dsn option _txlock={value}: sidecar's writers always take the lock up front "
                    "(immediate), readers never do"
                )
        elif key == "cache":
            if low not in ("shared", "private"):
                raise ValueError(f"dsn option cache={value}: expected shared or private")
        elif key == "mode":
            if low == "memory":
                memory = True
            elif low != "rwc":
                raise ValueError(
                    f"dsn option mode={value}: sidecar needs a database it can create and write (rwc)"
                )
        else:
            raise ValueError(f"dsn option {key!r} is not supported for SQLite")
    return memory, tuple(pragmas.items())


def parse_sqlite_dsn(dsn: str) -> EngineSpec:
    """A SQLite DSN read as Kratos reads it (pop + go-sqlite3): everything after ``sqlite://`` up
    to ``?`` is the file, so ``sqlite:///var/lib/db.sqlite`` is the absolute path
    ``/var/lib/db.sqlite`` and ``sqlite://db.sqlite`` is relative to the working directory; a
    ``file:`` prefix is allowed; ``:memory:`` or ``mode=memory`` is an in-memory database; the
    query holds go-sqlite3 options (``_fk``, ``_journal_mode``, ``_busy_timeout``, ``_sync``,
    ``_txlock``, ``cache``, ``mode``)."""
    scheme = next(s for s in _SQLITE_SCHEMES if dsn.lower().startswith(s))
    path, _, query = dsn[len(scheme) :].partition("?")
    path = path.removeprefix("file:")
    if path.startswith("//"):
        path = "/" + path.lstrip("/")  # sidecar's older spelling of an absolute path, sqlite:////abs
    try:
        params = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"the dsn's options {query!r} are not a query string") from None
    memory, pragmas = _sqlite_pragmas(params)
    if memory or path in ("", ":memory:"):
        return EngineSpec(make_url("sqlite+aiosqlite://"), "sqlite-memory")
    return EngineSpec(URL.create("sqlite+aiosqlite", database=path), "sqlite", pragmas)


def parse_dsn(dsn: str) -> EngineSpec:
    """Map ``sqlite://``, ``memory``, ``postgres(ql)://`` DSNs onto async SQLAlchemy URLs."""
    if dsn in MEMORY_DSNS:
        return EngineSpec(make_url("sqlite+aiosqlite://"), "sqlite-memory")
    if dsn.lower().startswith(_SQLITE_SCHEMES):
        return parse_sqlite_dsn(dsn)
    url = make_url(dsn)
    backend = url.get_backend_name()
    if backend in ("postgres", "postgresql"):
        query = dict(url.query)
        for option in _GO_POOL_OPTIONS:
            query.pop(option, None)
        sslmode = query.pop("sslmode", None)
        if sslmode is not None and sslmode != "disable":
            query["ssl"] = sslmode
        return EngineSpec(url.set(drivername="postgresql+asyncpg", query=query), "postgresql")
    raise ValueError(f"unsupported dsn scheme {url.drivername!r}: use sqlite://, postgres:// or memory")


def create_engine(spec: EngineSpec) -> AsyncEngine:
    if spec.flavour == "postgresql":
        # Fail fast on an unreachable server instead of asyncpg's 60 s default; pre-ping drops
        # connections the server closed (restart, failover) before a request trips over them.
        # Autocommit unless a writer asks for a transaction (``Connector``): a read is then its
        # one statement, one round trip, where BEGIN and ROLLBACK around it cost two more (and a
        # read transaction bought nothing: under READ COMMITTED each statement has its own
        # snapshot), and the pre-ping is one ``;`` instead of BEGIN, ``;``, ROLLBACK.
        return create_async_engine(
            spec.url, pool_pre_ping=True, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5}
        )
    if spec.flavour == "sqlite-memory":
        engine = create_async_engine(
            spec.url, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        engine = create_async_engine(spec.url)
    _install_sqlite_hooks(engine, spec.pragmas)
    return engine


def _install_sqlite_hooks(engine: AsyncEngine, pragmas: tuple[tuple[str, str], ...]) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's implicit BEGIN breaks SAVEPOINT and transactional DDL; we emit BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for name, value in pragmas:  # names and values checked by _sqlite_pragmas
                cursor.execute(f"PRAGMA {name}={value}")
            cursor.execute("PRAGMA foreign_keys=ON")
            if not pragmas:
                cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: sa.Connection) -> None:
        # Writers take the lock up front (IMMEDIATE): a deferred transaction that upgrades from
        # read to write gets SQLITE_BUSY at once, without the busy timeout ever being consulted.
        # ``Connector.read_one`` asks for none: its one statement is its own transaction.
        begin = conn.get_execution_options().get(_BEGIN_OPTION, "BEGIN")
        if begin:
            conn.exec_driver_sql(begin)


@contextlib.contextmanager
def translate_errors(conflict: ConflictMessage = Conflict.default_message) -> Iterator[None]:
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise Conflict(conflict(exc) if callable(conflict) else conflict) from exc
    except sa.exc.DataError as exc:
        # PostgreSQL rejects over-long or malformed values that SQLite would store: client input.
        raise BadRequest("a value is too long or malformed") from exc
    except (
        sa.exc.OperationalError,
        sa.exc.InterfaceError,
        sa.exc.TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        OSError,
    ) as exc:
        log.debug("database unavailable: %s", type(exc).__name__)  # the store monitor logs outages
        raise ServiceUnavailable("the database is unavailable") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated or _server_unavailable(exc):
            raise ServiceUnavailable("the database connection was lost") from exc
        # asyncpg's errors from a multi-row INSERT reach SQLAlchemy unclassified: the SQLSTATE
        # says it is a data exception (class 22, e.g. a value too long), i.e. client input.
        if _sqlstate_class(exc) == "22":
            raise BadRequest("a value is too long or malformed") from exc
        raise


# SQLSTATE classes that mean "the server cannot serve now", not "this statement is wrong":
# 08 connection exception, 53 insufficient resources (too many connections), 57 operator
# intervention (admin/crash shutdown, "the database system is shutting down / starting up").
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def _sqlstate_class(exc: BaseException) -> str | None:
    """The first two characters of the SQLSTATE found along ``exc``'s causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        state = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state[:2]
        current = getattr(current, "orig", None) or current.__cause__
    return None


def _server_unavailable(exc: BaseException) -> bool:
    return _sqlstate_class(exc) in _UNAVAILABLE_SQLSTATE_CLASSES


_GENERAL = object()
"""``_fetch_one_pg``'s "run it through the engine"."""


class Connector:
    """Connections for the stores.

    SQLite allows one writer at a time: writers queue on an in-process lock (and
    ``BEGIN IMMEDIATE`` + ``busy_timeout`` for other processes) instead of failing with
    "database is locked". An in-memory database is a single shared connection, so there
    every use is serialised, reads included.
    """

    def __init__(self, engine: AsyncEngine, flavour: Flavour, spec: EngineSpec | None = None) -> None:
        """``spec``: the engine's; with a SQLite file, ``fetch_one`` reads it without SQLAlchemy."""
        self.engine = engine
        self.flavour = flavour
        self._writer = (
            engine.execution_options(**{_BEGIN_OPTION: "BEGIN IMMEDIATE"})
            if flavour != "postgresql"
            else engine.execution_options(isolation_level="READ COMMITTED")
        )
        self._lock: asyncio.Lock | None = None
        # On SQLite a BEGIN costs aiosqlite's thread three hops (cursor, execute, close) and the
        # GIL handoffs that go with them; a single SELECT reads a consistent state without it.
        self._single = engine.execution_options(**{_BEGIN_OPTION: ""}) if flavour == "sqlite" else engine
        self._reader: SqliteReader | None = None
        if flavour == "sqlite" and spec is not None and spec.url.database:
            self._reader = SqliteReader(spec.url.database, spec.pragmas)
        # On PostgreSQL ``fetch_one`` runs the statement on the pooled connection's asyncpg
        # connection itself, unless the DSN tunes prepared statements (PgBouncer setups): asyncpg's
        # own statement cache would not honour that.
        self._raw_pg = flavour == "postgresql" and not (
            {"prepared_statement_cache_size", "statement_cache_size"} & set(engine.url.query)
        )

    def prepare(self, statement: sa.Select[Any]) -> Read:
        """``statement`` ready for ``fetch_one``."""
        return Read(statement, self.engine.dialect)

    async def fetch_one(self, read: Read, values: Mapping[str, Any]) -> Any:
        """The first row of ``read`` with its bound ``values``, or None: one statement, read only.
        On a SQLite file through ``SqliteReader`` (one thread hop, no SQLAlchemy execution); on
        PostgreSQL on the asyncpg connection of a pooled connection (``_fetch_one_pg``);
        elsewhere ``read_one`` runs the statement."""
        if self._reader is not None:
            return await self._reader.fetch_one(read, values)
        if self._raw_pg:
            found = await self._fetch_one_pg(read, values)
            if found is not _GENERAL:
                return found
        return await self._fetch_general(read, values)

    async def fetch_made(
        self,
        read: Read,
        values: Mapping[str, Any],
        make: Callable[[Any], T],
        decoded: Decoded[T],
        keep: Callable[[tuple[Any, ...]], bool] | None = None,
    ) -> T | None:
        """``make`` of ``fetch_one``'s row, or None for no row. A row read before with the very
        same values gives the value ``make`` made of it then, remembered in ``decoded`` by the row
        as the driver gave it (``sidecar.storage.decoded``): ``sqlite3``'s tuple on a SQLite file,
        asyncpg's record on PostgreSQL when ``read.plain`` (no JSON decoded by asyncpg: select it
        as text, ``JsonText``). ``keep`` says which of those rows may be remembered (none that
        holds a secret). Elsewhere the row is made afresh on every read."""
        if self._reader is not None:
            raw = await self._reader.fetch_raw(read, values)
        elif self._raw_pg and read.plain:
            raw = await self._fetch_raw_pg(read, values)
            if raw is _GENERAL:
                row = await self._fetch_general(read, values)
                return None if row is None else make(row)
        else:
            row = await self.fetch_one(read, values)
            return None if row is None else make(row)
        if raw is None:
            return None
        made = decoded.get(raw)
        if made is None:
            made = make(read.row(raw))
            if keep is None or keep(raw):
                decoded.put(raw, made)
        return made

    async def _fetch_general(self, read: Read, values: Mapping[str, Any]) -> Any:
        async with self.read_one() as conn:
            return (await conn.execute(read.statement, dict(values))).first()

    async def _fetch_one_pg(self, read: Read, values: Mapping[str, Any]) -> Any:
        """``_fetch_raw_pg``'s record processed as SQLAlchemy processes rows (``Read.row``)."""
        record = await self._fetch_raw_pg(read, values)
        return record if record is None or record is _GENERAL else read.row(record)

    async def _fetch_raw_pg(self, read: Read, values: Mapping[str, Any]) -> Any:
        """``read`` on the driver connection under a pooled connection (checked out, pre-pinged
        and returned as ``read_one``'s): asyncpg's ``fetchrow`` with the rendered SQL and the
        parameters processed as SQLAlchemy processes them; the record as asyncpg gives it, or
        None (about 800k instructions per read through SQLAlchemy's execution, 400k this way:
        callgrind, issue 15). An outage is a ``ServiceUnavailable`` as ever; a connection that
        failed mid-read is invalidated (not pooled again); any other server error returns
        ``_GENERAL``, for the engine to run the statement and raise what it raises."""
        parameters = read.parameters(values)
        with translate_errors():
            async with self.engine.connect() as conn:
                driver: Any = (await conn.get_raw_connection()).driver_connection
                try:
                    return await driver.fetchrow(read.sql, *parameters)
                except asyncpg.PostgresError as exc:
                    if not _server_unavailable(exc):
                        return _GENERAL
                    await conn.invalidate()
                    raise ServiceUnavailable("the database is unavailable") from exc
                except BaseException:
                    await conn.invalidate()  # a reply may be unread: never pooled again
                    raise

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.asynccontextmanager
    async def _gate(self, *, write: bool) -> AsyncIterator[None]:
        if self.flavour == "postgresql" or (self.flavour == "sqlite" and not write):
            yield
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            yield

    @contextlib.asynccontextmanager
    async def write(
        self, conflict: ConflictMessage = Conflict.default_message
    ) -> AsyncIterator[AsyncConnection]:
        """One transaction, committed when the block exits cleanly."""
        with translate_errors(conflict):
            async with self._gate(write=True), self._writer.begin() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Statements that only read. On PostgreSQL each runs on its own (autocommit), so a
        write here would stick: use ``write``. On SQLite they share one snapshot."""
        with translate_errors():
            async with self._gate(write=False), self.engine.connect() as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def read_one(self) -> AsyncIterator[AsyncConnection]:
        """A connection for exactly one statement that only reads. On SQLite no BEGIN is sent
        (the statement is its own transaction): a session-cache miss's identity load went from
        8 hops through aiosqlite's thread to 5 and from 1.3-1.6 ms to 1.0-1.1 ms of CPU (issue
        15). Elsewhere, and for an in-memory database (one shared connection), as ``read``."""
        with translate_errors():
            async with self._gate(write=False), self._single.connect() as conn:
                yield conn
