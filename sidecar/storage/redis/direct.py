"""One Lua script's EVALSHA on a connection of the client's pool, without the client's per-command
machinery: the session check's read on a cache miss.

Through ``redis.asyncio.Redis`` (redis-py 8) a command goes through the retry wrapper, the
observability hooks (timings, connection counts: each an ``await``), the pool's lock and its
connection check, generic response callbacks, and a write under ``asyncio.wait_for`` (a task
per command on Python 3.11). On a session-cache miss that cost about 170k of the 1.1M
instructions of a decision (callgrind, issue 15). Here the command is packed (strings only) and written on a
connection this object keeps (borrowed from the pool once, handed back when it fails), and its
reply read with the connection's own ``read_response``: the socket timeout still bounds the
call, the periodic health check still runs (a write due for one goes through
``send_packed_command``).

Whatever goes wrong takes the client's full path instead, with its retries, reconnection and
reload of a script the server lost (``NOSCRIPT``), so outages are reported as before (the
caller's ``translate_errors``). Only a standalone or Sentinel-managed ``Redis`` has one pool; on
Redis Cluster every call takes the client's path. A connection that fails is handed back to the
pool at once, so under Sentinel a failover moves these reads to the new master as it moves the
pool's own connections.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as redis
from redis import exceptions
from redis.commands.core import AsyncScript

# After these the client's full path is tried: it retries, reconnects and reloads scripts.
_FALL_BACK = (exceptions.ConnectionError, exceptions.TimeoutError, exceptions.ResponseError, OSError)

_IDLE_MAX = 64
"""Connections kept between calls; a burst beyond that hands the extra ones back to the pool."""


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


class DirectScript:
    """Calls ``script`` as ``AsyncScript.__call__`` does (``keys``, ``args``; raw replies)."""

    def __init__(self, client: Any, script: AsyncScript) -> None:
        self._script = script
        self._pool: Any = None
        if isinstance(client, redis.Redis) and not client.single_connection_client:
            self._pool = client.connection_pool
        self._idle: list[Any] = []

    async def __call__(self, keys: Sequence[str], args: Sequence[str]) -> Any:
        pool = self._pool
        if pool is None:
            return await self._script(keys=keys, args=args)
        conn = self._idle.pop() if self._idle else None
        try:
            if conn is None:
                conn = await pool.get_connection()
            packed = [evalsha_command(conn.encoder, self._script.sha, keys, args)]
            if not _write(conn, packed):
                await conn.send_packed_command(packed)
            reply = await conn.read_response()
        except BaseException as exc:
            # After an error reply (NOSCRIPT) the connection is in step; after anything else a
            # reply may be unread, and the connection has disconnected itself.
            if conn is not None:
                if isinstance(exc, exceptions.ResponseError) and conn.is_connected:
                    await self._keep(conn)
                else:
                    await pool.release(conn)
            if isinstance(exc, _FALL_BACK):
                return await self._script(keys=keys, args=args)
            raise
        await self._keep(conn)
        return reply

    async def _keep(self, conn: Any) -> None:
        if len(self._idle) < _IDLE_MAX:
            self._idle.append(conn)
        else:
            await self._pool.release(conn)

    async def close(self) -> None:
        """Hand the kept connections back to the pool (before the client closes it)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._pool.release(conn)
