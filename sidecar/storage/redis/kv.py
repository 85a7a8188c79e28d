"""``KeyValueStore`` on Redis: each operation is a single atomic command or script."""

from __future__ import annotations

from datetime import timedelta

import redis.asyncio as redis

from sidecar.storage.redis.client import as_bytes, milliseconds, translate_errors

# INCR and the window's expiry in one step: a crash between the two commands would otherwise
# leave a counter without TTL, rate-limiting its key forever.
_INCR = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == 1 or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""


def _px(ttl: timedelta) -> int:
    # Redis rejects PX 0; a non-positive TTL still has to mean "expires at once".
    return max(1, milliseconds(ttl))


class RedisKeyValueStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = f"{prefix}kv:"
        self._incr = client.register_script(_INCR)

    def _key(self, key: str) -> str:
        return self._prefix + key

    async def set(self, key: str, value: bytes, ttl: timedelta) -> None:
        with translate_errors():
            await self._client.set(self._key(key), value, px=_px(ttl))

    async def get(self, key: str) -> bytes | None:
        with translate_errors():
            value = await self._client.get(self._key(key))
        return as_bytes(value)

    async def delete(self, key: str) -> bool:
        with translate_errors():
            return int(await self._client.delete(self._key(key))) > 0

    async def take(self, key: str) -> bytes | None:
        with translate_errors():
            value = await self._client.getdel(self._key(key))
        return as_bytes(value)

    async def add(self, key: str, value: bytes, ttl: timedelta) -> bool:
        with translate_errors():
            return bool(await self._client.set(self._key(key), value, px=_px(ttl), nx=True))

    async def incr(self, key: str, ttl: timedelta, by: int = 1) -> int:
        with translate_errors():
            return int(await self._incr(keys=[self._key(key)], args=[_px(ttl), by]))

    async def ttl(self, key: str) -> timedelta | None:
        with translate_errors():
            left = int(await self._client.pttl(self._key(key)))
        # -2: no such key; -1: no expiry, which this store never writes.
        return None if left < 0 else timedelta(milliseconds=left)

    async def ping(self) -> None:
        # A keyed command, not PING: a cluster client sends PING to every node, so one dead
        # master would fail it even after its replica took over; EXISTS asks the slot's owner.
        with translate_errors():
            await self._client.exists(self._key("ping"))
