"""One Lua script's EVALSHA on a connection of the client's pool, without the client's per-command
machinery: the session check's read on a cache miss.

Through ``redis.asyncio.Redis`` (redis-py 8) a command goes through the retry wrapper, the
observability hooks (timings, connection counts: each an ``await``), the pool's lock and its
connection check, generic response callbacks, and a write under ``asyncio.wait_for`` (a task
per command on Python 3.11). On a session-cache miss that cost about 170k of the 1.1M
instructions of a decision (callgrind, issue 15). Here the command is packed (strings only) and
written on a connection this object keeps (borrowed from the pool once, handed back when it
fails).

The reply is read at the protocol level (``_Lane``): while this object keeps a connection, its
transport delivers bytes to a small protocol of ours that feeds them straight into the
connection's own hiredis reader (the one redis-py parses with) and wakes the caller when a reply
is complete, in place of redis-py's ``read_response`` (an ``asyncio.timeout`` per call, a
``StreamReader`` and three coroutine layers: about 55k of the 92k instructions of a read). The
socket timeout still bounds every read: one timer per script, armed for the earliest deadline
of the reads in flight, fails a read whose deadline passed (``redis.exceptions.TimeoutError``,
as redis-py's read raises). Connection loss and end of stream fail the read in flight
(``ConnectionError``) and are passed on to redis-py's protocol, so the connection's state is what
redis-py would have seen. Push frames (RESP3) go to the parser's own push handler, as in
redis-py's read. A read when the periodic health check is due, and the first read on a
connection, take redis-py's path (``send_packed_command``: connect, PING; ``read_response``), with
redis-py's protocol back in place for it.

Whatever goes wrong takes the client's full path instead, with its retries, reconnection and
reload of a script the server lost (``NOSCRIPT``), so outages are reported as before (the
caller's ``translate_errors``). Only a standalone or Sentinel-managed ``Redis`` has one pool; on
Redis Cluster every call takes the client's path. A connection that fails is handed back to the
pool at once (disconnected when a reply may be unread), so under Sentinel a failover moves these
reads to the new master as it moves the pool's own connections. Without hiredis (or with
internals a redis-py release renamed, read with ``getattr``) every read takes redis-py's
``read_response`` as before.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis import exceptions
from redis.commands.core import AsyncScript

try:
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - a redis-py that moved them: redis-py's read everywhere
    NOT_ENOUGH_DATA = _AsyncHiredisParser = None  # type: ignore[assignment,misc]

# After these the client's full path is tried: it retries, reconnects and reloads scripts.
_FALL_BACK = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ResponseError, OSError)

_IDLE_MAX = 64
"""Connections kept between calls; a burst beyond that hands the extra ones back to the pool."""

_CLOSED = "Connection closed by server."  # redis-py's words for it


def evalsha_command(encoder: Any, sha: str, keys: Sequence[str], args: Sequence[str]) -> bytes:
    """``EVALSHA sha numkeys *keys *args`` in RESP, the bytes ``conn.pack_command`` makes for
    them, without its per-argument type dispatch (strings in the connection's encoding)."""
    encoding, errors = encoder.encoding, encoder.encoding_errors
    words = [b"EVALSHA", sha.encode(), b"%d" % len(keys)]
    words += [word.encode(encoding, errors) for word in keys]
    words += [word.encode(encoding, errors) for word in args]
    return b"*%d\r\n" % len(words) + b"".join([b"$%d\r\n%s\r\n" % (len(word), word) for word in words])


def _write(conn: Any, packed: list[bytes]) -> bool:
    """Write ``packed`` straight to the connection's stream when it is open and no health check
    is due; False when ``send_packed_command`` must do it (and connect, or check health first).
    A command of a few hundred bytes fits the transport's buffer: the reply's read timeout
    bounds a server that stopped reading."""
    # redis-py's internals, read with getattr: when a release renames them, the public path.
    writer = getattr(conn, "_writer", None)
    if writer is None or writer.transport.is_closing():
        return False
    if getattr(conn, "health_check_interval", None):
        due = getattr(conn, "next_health_check", None)
        if due is None or asyncio.get_running_loop().time() > due:
            return False
    writer.writelines(packed)
    return True


class _Lane(asyncio.Protocol):
    """The protocol of a kept connection's transport between ``attach`` and ``detach``: bytes go
    into the connection's hiredis reader; a complete reply settles ``waiter``."""

    def __init__(self, conn: Any, transport: Any, original: Any, reader: Any) -> None:
        self.conn = conn
        self.transport = transport
        self.original = original  # redis-py's StreamReaderProtocol
        self.reader = reader  # the parser's hiredis.Reader
        self.parser = conn._parser
        self.push_type = getattr(self.parser, "_hiredis_PushNotificationType", None)
        self.loop = asyncio.get_running_loop()
        self.health_interval = getattr(conn, "health_check_interval", 0) or 0
        self.waiter: asyncio.Future[Any] | None = None
        self.deadline = math.inf
        self.lost = False

    @classmethod
    def attach(cls, conn: Any) -> _Lane | None:
        """A lane on ``conn`` when it is connected, parsed by hiredis and nothing is buffered in
        redis-py's stream (the bytes there would be lost to the reader); else None."""
        parser = getattr(conn, "_parser", None)
        writer = getattr(conn, "_writer", None)
        stream = getattr(conn, "_reader", None)
        if _AsyncHiredisParser is None or type(parser) is not _AsyncHiredisParser or writer is None:
            return None
        reader = getattr(parser, "_reader", None)
        transport = writer.transport
        if reader is None or transport.is_closing() or getattr(stream, "_buffer", True):
            return None
        original = transport.get_protocol()
        lane = cls(conn, transport, original, reader)
        transport.set_protocol(lane)
        return lane

    def detach(self) -> None:
        """redis-py's protocol back in place (the connection is idle: nothing is lost)."""
        self._fail(exceptions.ConnectionError("the connection went back to redis-py"))
        self.transport.set_protocol(self.original)

    def usable(self) -> bool:
        """Whether a read may take this lane now: connected, not at end of stream, and no health
        check due (redis-py's path does that one)."""
        if self.lost or self.transport.is_closing():
            return False
        if not self.health_interval:
            return True
        due = getattr(self.conn, "next_health_check", None)
        return due is not None and self.loop.time() <= due

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiter = self.waiter
        if waiter is None:
            return  # a push between reads: the reader keeps it for the next one
        try:
            reply = self.reader.gets()
        except Exception as exc:  # a protocol error: the connection is out of step
            self._fail(exc)
            return
        if reply is not NOT_ENOUGH_DATA:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(reply)

    def eof_received(self) -> bool | None:
        self.lost = True  # the server sends nothing more: the next read takes redis-py's path
        self._fail(exceptions.ConnectionError(_CLOSED))
        return self.original.eof_received()  # type: ignore[no-any-return]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._fail(exceptions.ConnectionError(_CLOSED))
        self.original.connection_lost(exc)

    def pause_writing(self) -> None:
        self.original.pause_writing()

    def resume_writing(self) -> None:
        self.original.resume_writing()


class DirectScript:
    """Calls ``script`` as ``AsyncScript.__call__`` does (``keys``, ``args``; raw replies)."""

    def __init__(self, client: Any, script: AsyncScript) -> None:
        self._script = script
        self._pool: Any = None
        if isinstance(client, redis.Redis) and not client.single_connection_client:
            self._pool = client.connection_pool
        self._idle: list[tuple[Any, _Lane | None]] = []
        self._lanes: set[_Lane] = set()  # attached, idle or reading
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the timer's
        # (encoding, errors, number of keys, args) -> the command's bytes before and after its
        # keys: the session read's args never change, so only its key is packed per call.
        self._forms: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        pool = self._pool
        if pool is None:
            return await self._script(keys=keys, args=args)
        conn, lane = self._idle.pop() if self._idle else (None, None)
        try:
            if conn is None:
                conn = await pool.get_connection()
            packed = self._command(conn.encoder, keys, args)
            if lane is not None and lane.usable():
                reply = await self._read(lane, packed)
            else:
                if lane is not None:
                    self._detach(lane)
                    lane = None
                if not _write(conn, [packed]):
                    await conn.send_packed_command([packed])
                reply = await conn.read_response()
                lane = self._attach(conn)
        except BaseException as exc:
            await self._failed(conn, lane, exc)
            if isinstance(exc, _FALL_BACK):
                return await self._script(keys=keys, args=args)
            raise
        if len(self._idle) < _IDLE_MAX:
            self._idle.append((conn, lane))
        else:
            await self._keep(conn, lane)
        return reply

    def _command(self, encoder: Any, keys: Sequence[str], args: Sequence[str]) -> bytes:
        """``evalsha_command(encoder, sha, keys, args)``, its parts around the keys packed once per
        form."""
        encoding, errors = encoder.encoding, encoder.encoding_errors
        form = (encoding, errors, len(keys), *args)
        parts = self._forms.get(form)
        if parts is None:
            if len(self._forms) >= 64:  # callers with ever-new args: packed afresh
                self._forms.clear()
            words = [b"EVALSHA", self._script.sha.encode(), b"%d" % len(keys)]
            head = b"*%d\r\n" % (len(words) + len(keys) + len(args))
            head += b"".join([b"$%d\r\n%s\r\n" % (len(word), word) for word in words])
            tail = b"".join(
                [b"$%d\r\n%s\r\n" % (len(w), w) for w in (word.encode(encoding, errors) for word in args)]
            )
            parts = self._forms[form] = (head, tail)
        if len(keys) == 1:
            key = keys[0].encode(encoding, errors)
            return b"%s$%d\r\n%s\r\n%s" % (parts[0], len(key), key, parts[1])
        encoded = [word.encode(encoding, errors) for word in keys]
        return parts[0] + b"".join([b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded]) + parts[1]

    async def _read(self, lane: _Lane, packed: bytes) -> Any:
        timeout = lane.conn.socket_timeout
        if timeout is not None:
            lane.deadline = lane.loop.time() + timeout
            if self._timer is None:
                self._loop = lane.loop
                self._timer = lane.loop.call_at(lane.deadline, self._watch)
        lane.transport.write(packed)
        try:
            while True:  # _Lane.read, inline: the next reply
                reply = lane.reader.gets()
                if reply is NOT_ENOUGH_DATA:
                    waiter = lane.waiter = lane.loop.create_future()
                    reply = await waiter
                if lane.push_type is None or not isinstance(reply, lane.push_type):
                    break
                await lane.parser.handle_push_response(reply)
        finally:
            lane.deadline = math.inf
        if lane.health_interval:  # as redis-py's read_response after a reply
            lane.conn.next_health_check = lane.loop.time() + lane.health_interval
        if isinstance(reply, Exception):  # an error reply (ResponseError), or a LOADING server's
            raise reply
        return reply

    def _watch(self) -> None:
        """Fail the reads whose deadline passed; again at the earliest deadline still ahead."""
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now, earliest = loop.time(), math.inf
        for lane in self._lanes:
            if lane.deadline <= now:
                lane.deadline = math.inf
                lane._fail(exceptions.TimeoutError("Timeout reading from the Redis server"))
            elif lane.deadline < earliest:
                earliest = lane.deadline
        if earliest != math.inf:
            self._timer = loop.call_at(earliest, self._watch)

    def _attach(self, conn: Any) -> _Lane | None:
        lane = _Lane.attach(conn)
        if lane is not None:
            self._lanes.add(lane)
        return lane

    def _detach(self, lane: _Lane) -> None:
        self._lanes.discard(lane)
        lane.detach()

    async def _failed(self, conn: Any, lane: _Lane | None, exc: BaseException) -> None:
        """After an error reply (NOSCRIPT) the connection is in step and kept; after anything
        else a reply may be unread: disconnected (redis-py's read did that itself) and handed
        back to the pool."""
        if conn is None:
            return
        if lane is not None:
            self._detach(lane)
        if isinstance(exc, exceptions.ResponseError) and conn.is_connected:
            await self._keep(conn, self._attach(conn))
            return
        if lane is not None:
            await conn.disconnect(nowait=True)
        await self._pool.release(conn)

    async def _keep(self, conn: Any, lane: _Lane | None) -> None:
        if len(self._idle) < _IDLE_MAX:
            self._idle.append((conn, lane))
            return
        if lane is not None:
            self._detach(lane)
        await self._pool.release(conn)

    async def close(self) -> None:
        """Hand the kept connections back to the pool (before the client closes it)."""
        idle, self._idle = self._idle, []
        for conn, lane in idle:
            if lane is not None:
                self._detach(lane)
            await self._pool.release(conn)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
