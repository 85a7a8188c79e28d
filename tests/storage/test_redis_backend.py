"""RedisBackend: key layout, TTLs matched to lifetimes, outages."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio.connection import Connection

from sidecar.errors import ServiceUnavailable
from sidecar.session.model import Session
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.redis.direct import evalsha_command
from tests.conftest import free_port


async def test_session_keys_expire_with_the_session(redis_backend: RedisBackend, unique_prefix: str) -> None:
    session = Session(identity_id=uuid.uuid4(), expires_at=datetime.now(UTC) + timedelta(minutes=10))
    await redis_backend.sessions.create(session, "d1")
    client, p = redis_backend.client, unique_prefix
    for key in (
        f"{p}session:{session.id}",
        f"{p}session-token:d1",
        f"{p}identity-sessions:{session.identity_id}",
    ):
        assert 590_000 < await client.pttl(key) <= 600_000, key
    raw = await client.get(f"{p}session:{session.id}")
    assert raw is not None and b"secret-token" not in raw


async def test_listing_prunes_dead_members(redis_backend: RedisBackend, unique_prefix: str) -> None:
    identity = uuid.uuid4()
    session = Session(identity_id=identity, expires_at=datetime.now(UTC) + timedelta(minutes=10))
    await redis_backend.sessions.create(session, "d2")
    await redis_backend.client.sadd(f"{unique_prefix}identity-sessions:{identity}", str(uuid.uuid4()))
    assert [s.id for s in await redis_backend.sessions.list_by_identity(identity)] == [session.id]
    assert await redis_backend.client.scard(f"{unique_prefix}identity-sessions:{identity}") == 1


async def test_down_redis_is_service_unavailable() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(ServiceUnavailable):
            await backend.ping()
        with pytest.raises(ServiceUnavailable):
            await backend.sessions.get_by_token("digest")
        with pytest.raises(ServiceUnavailable):
            await backend.kv.incr("k", timedelta(seconds=1))
    finally:
        await backend.close()


async def _signed_in(redis_backend: RedisBackend, token_digest: str) -> Session:
    session = Session(identity_id=uuid.uuid4(), expires_at=datetime.now(UTC) + timedelta(minutes=10))
    await redis_backend.sessions.create(session, token_digest)
    return session


async def test_session_reads_by_token_keep_one_connection(redis_backend: RedisBackend) -> None:
    # The access path's read takes no connection from the pool per call (storage/redis/direct.py).
    session = await _signed_in(redis_backend, "d3")
    pool = redis_backend.client.connection_pool
    taken = 0
    get_connection = pool.get_connection

    async def counting(*args: object, **kwargs: object) -> object:
        nonlocal taken
        taken += 1
        return await get_connection(*args, **kwargs)

    pool.get_connection = counting
    for _ in range(20):
        assert await redis_backend.sessions.get_by_token("d3") == session
    assert taken == 1


async def test_session_read_by_token_after_the_server_lost_its_scripts(redis_backend: RedisBackend) -> None:
    session = await _signed_in(redis_backend, "d4")
    assert await redis_backend.sessions.get_by_token("d4") == session
    await redis_backend.client.script_flush()
    assert await redis_backend.sessions.get_by_token("d4") == session
    assert await redis_backend.sessions.get_by_token("d4") == session


async def test_session_read_by_token_after_its_connection_was_killed(
    redis_url: str, unique_prefix: str
) -> None:
    name = unique_prefix.strip(":").replace(":", "-")
    redis_backend = RedisBackend(f"{redis_url}?client_name={name}", prefix=unique_prefix)
    try:
        session = await _signed_in(redis_backend, "d5")
        assert await redis_backend.sessions.get_by_token("d5") == session
        killed = 0
        for client in await redis_backend.client.client_list():
            if client["name"] == name and client["cmd"] == "evalsha":
                killed += await redis_backend.client.client_kill_filter(_id=client["id"])
        assert killed == 1
        # The kept connection is dead: the read falls back to the client's path, which reconnects.
        assert await redis_backend.sessions.get_by_token("d5") == session
        assert await redis_backend.sessions.get_by_token("d5") == session
        assert await redis_backend.sessions.revoke(session.id)
        revoked = await redis_backend.sessions.get_by_token("d5")
        assert revoked is not None and revoked.active is False
    finally:
        await redis_backend.client.delete(
            *[key async for key in redis_backend.client.scan_iter(match=f"{unique_prefix}*")]
        )
        await redis_backend.close()


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        pytest.param(["sidecar:session-token:d1"], ["sidecar:session:"], id="session-read"),
        pytest.param([], [], id="nothing"),
        pytest.param(["k\u00e9y", "a{b}c"], ["\u2603", "", "x" * 70000], id="utf8-empty-long"),
    ],
)
def test_the_direct_evalsha_is_what_redis_py_packs(keys: list[str], args: list[str]) -> None:
    conn = Connection()
    sha = "a" * 40
    expected = b"".join(conn.pack_command("EVALSHA", sha, len(keys), *keys, *args))
    assert evalsha_command(conn.encoder, sha, keys, args) == expected
