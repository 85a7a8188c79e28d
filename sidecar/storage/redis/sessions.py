"""``SessionStore`` on Redis.

Layout under the prefix: ``session:{id}`` holds the codec's JSON plus the token digest,
``session-token:{digest}`` points at the id, both expiring with the session;
``identity-sessions:{identity_id}`` is a set of ids living as long as its longest session, and
``sessions`` a sorted set (score: expiry in ms) for admin listing and pruning. Scripts that build
keys from values read inside them (token lookup, bulk delete) need every one of these keys on one
node: on Redis Cluster the prefix carries one hash tag (``storage/redis/backend.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import redis.asyncio as redis

from sidecar.errors import Conflict, ServiceUnavailable
from sidecar.session.model import Session
from sidecar.storage.decoded import Decoded
from sidecar.storage.redis.client import as_bytes, milliseconds_until, translate_errors
from sidecar.storage.redis.direct import DirectScript
from sidecar.storage.session_records import dumps_session, loads_session

_CREATE = """
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[5])
return 1
"""

# One round trip on the hot path: digest -> id -> session.
_BY_TOKEN = """
local id = redis.call('GET', KEYS[1])
if not id then return false end
return redis.call('GET', ARGV[1] .. id)
"""

# Compare-and-set: replaces the document only if nobody changed it since it was read.
_REPLACE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local ttl = tonumber(ARGV[3])
if ttl <= 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[3], ARGV[5])
if redis.call('PTTL', KEYS[3]) < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
return 1
"""

# Atomic so that a session issued while the identity is being deleted cannot slip through.
_DELETE_BY_IDENTITY = """
local count = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[1] .. id)
  if raw then
    count = count + 1
    redis.call('DEL', ARGV[1] .. id, ARGV[2] .. cjson.decode(raw)['token_digest'])
  end
  redis.call('ZREM', KEYS[2], id)
end
redis.call('DEL', KEYS[1])
return count
"""

_CAS_ATTEMPTS = 50


def _epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _text(member: object) -> str:
    return member.decode() if isinstance(member, bytes) else str(member)


class RedisSessionStore:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._session = f"{prefix}session:"
        self._token = f"{prefix}session-token:"
        self._identity = f"{prefix}identity-sessions:"
        self._all = f"{prefix}sessions"
        self._create = client.register_script(_CREATE)
        self._by_token = DirectScript(client, client.register_script(_BY_TOKEN))
        self._replace = client.register_script(_REPLACE)
        self._delete_by_identity = client.register_script(_DELETE_BY_IDENTITY)
        # The session check's documents, decoded once per content (``sidecar.storage.decoded``).
        self._decoded: Decoded[tuple[Session, str]] = Decoded()

    def _decode(self, raw: bytes | None) -> tuple[Session, str] | None:
        if raw is None:
            return None
        session, document = loads_session(raw)
        # Key TTLs have millisecond resolution; the model's clock is the authority on expiry.
        if session.expires_at <= datetime.now(UTC):
            return None
        return session, str(document["token_digest"])

    async def create(self, session: Session, token_digest: str) -> None:
        ttl = milliseconds_until(session.expires_at)
        if ttl <= 0:
            return  # already expired: storing it would only make an invisible key
        keys = [self._session + str(session.id), self._token + token_digest]
        keys += [self._identity + str(session.identity_id), self._all]
        record = dumps_session(session, token_digest=token_digest)
        now_ms = _epoch_ms(datetime.now(UTC))
        with translate_errors():
            created = await self._create(
                keys=keys, args=[record, str(session.id), ttl, _epoch_ms(session.expires_at), now_ms]
            )
        if not created:
            raise Conflict("a session with this id or token already exists")

    async def get(self, session_id: uuid.UUID) -> Session | None:
        with translate_errors():
            found = self._decode(as_bytes(await self._client.get(self._session + str(session_id))))
        return None if found is None else found[0]

    async def get_by_token(self, token_digest: str) -> Session | None:
        with translate_errors():
            raw = await self._by_token(keys=[self._token + token_digest], args=[self._session])
        if raw is None:
            return None
        found = self._decoded.get(raw)
        if found is None:
            session, document = loads_session(raw)
            found = self._decoded.put(raw, (session, str(document["token_digest"])))
        session, digest = found
        # A stale pointer (token key outliving a replaced session) must never resolve; key TTLs
        # have millisecond resolution: the model's clock is the authority on expiry.
        if digest != token_digest or session.expires_at <= datetime.now(UTC):
            return None
        return session

    async def _compare_and_set(
        self, session_id: uuid.UUID, change: Callable[[Session], Session | None]
    ) -> bool:
        key = self._session + str(session_id)
        for _ in range(_CAS_ATTEMPTS):
            with translate_errors():
                raw = as_bytes(await self._client.get(key))
            found = self._decode(raw)
            if found is None:
                return False
            new = change(found[0])
            if new is None:
                return False
            digest = found[1]
            keys = [key, self._token + digest, self._identity + str(new.identity_id), self._all]
            args: list[bytes | str | int] = [raw or b"", dumps_session(new, token_digest=digest)]
            args += [milliseconds_until(new.expires_at)]
            args += [_epoch_ms(new.expires_at), str(session_id)]
            with translate_errors():
                if int(await self._replace(keys=keys, args=args)) != -1:
                    return True
        raise ServiceUnavailable("the session changed too often to be updated")

    async def update(self, session: Session) -> None:
        await self._compare_and_set(session.id, lambda _old: session)

    async def revoke(self, session_id: uuid.UUID) -> bool:
        return await self._compare_and_set(
            session_id, lambda s: replace(s, active=False) if s.active else None
        )

    async def _members(self, identity_id: uuid.UUID) -> list[str]:
        with translate_errors():
            members = await self._client.smembers(self._identity + str(identity_id))
        return [_text(m) for m in members]

    async def _load(self, ids: list[str]) -> list[Session | None]:
        if not ids:
            return []
        with translate_errors():
            raws = await self._client.mget([self._session + i for i in ids])
        return [None if (found := self._decode(as_bytes(raw))) is None else found[0] for raw in raws]

    async def list_by_identity(self, identity_id: uuid.UUID, *, active_only: bool = False) -> list[Session]:
        ids = await self._members(identity_id)
        loaded = await self._load(ids)
        dead = [i for i, s in zip(ids, loaded, strict=True) if s is None]
        if dead:
            with translate_errors():
                await self._client.srem(self._identity + str(identity_id), *dead)
        sessions = [s for s in loaded if s is not None and (s.active or not active_only)]
        return sorted(sessions, key=lambda s: s.id)

    async def list_all(
        self, *, page_size: int, after: uuid.UUID | None = None, active: bool | None = None
    ) -> list[Session]:
        with translate_errors():
            members = await self._client.zrangebyscore(self._all, _epoch_ms(datetime.now(UTC)), "+inf")
        ids = sorted(uuid.UUID(_text(m)) for m in members)
        if after is not None:
            ids = [i for i in ids if i > after]
        page: list[Session] = []
        while ids and len(page) < page_size:
            batch, ids = ids[:page_size], ids[page_size:]
            loaded = await self._load([str(i) for i in batch])
            matching = [s for s in loaded if s is not None and (active is None or s.active is active)]
            page.extend(matching)
        return page[:page_size]

    async def revoke_all(self, identity_id: uuid.UUID, *, except_id: uuid.UUID | None = None) -> int:
        revoked = 0
        for member in await self._members(identity_id):
            session_id = uuid.UUID(member)
            if session_id != except_id and await self.revoke(session_id):
                revoked += 1
        return revoked

    async def delete_by_identity(self, identity_id: uuid.UUID) -> int:
        keys = [self._identity + str(identity_id), self._all]
        with translate_errors():
            return int(await self._delete_by_identity(keys=keys, args=[self._session, self._token]))

    async def close(self) -> None:
        await self._by_token.close()

    async def ping(self) -> None:
        # The owner of the sessions' slot (see RedisKeyValueStore.ping).
        with translate_errors():
            await self._client.exists(self._session + "ping")
