"""The session-token exchange's records on SQLite, PostgreSQL and Redis (Kratos
``persistence/sql/persister_sessiontokenexchanger.go``; sidecar answers once, keeps no code or token
in clear, and lets the records expire with the flows' lifespan)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from sidecar.kv.store import KeyValueStore
from sidecar.session.token_exchange import TokenExchanges
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.sql.database import SqlDatabase

LIFESPAN = timedelta(minutes=10)


@pytest.fixture
def kv(backend: SqlDatabase | RedisBackend) -> KeyValueStore:
    return backend.kv


async def test_create_attach_exchange_once(kv: KeyValueStore) -> None:
    exchanges = TokenExchanges(kv, LIFESPAN)
    flow_id, session_id = uuid.uuid4(), uuid.uuid4()
    init_code = await exchanges.create(flow_id)
    assert await exchanges.has(flow_id)
    assert await exchanges.exchange(init_code, "anything") is None  # not signed in yet
    moved = uuid.uuid4()
    await exchanges.move(flow_id, moved)  # a login that became a registration
    assert not await exchanges.has(flow_id) and await exchanges.has(moved)
    assert await exchanges.attach(flow_id, session_id, "tok") is None
    return_to_code = await exchanges.attach(moved, session_id, "ory_st_secret")
    assert return_to_code is not None and len(return_to_code) == 64
    assert await exchanges.attach(moved, session_id, "again") is None  # the flow's codes are used up
    assert await exchanges.exchange(init_code, return_to_code[::-1]) is None
    found = await exchanges.exchange(init_code, return_to_code)
    assert found is not None and found.session_id == session_id and found.token == "ory_st_secret"
    assert await exchanges.exchange(init_code, return_to_code) is None


async def test_records_expire_with_the_flows_and_hold_no_secret_in_clear(
    backend: SqlDatabase | RedisBackend,
) -> None:
    exchanges = TokenExchanges(backend.kv, LIFESPAN)
    flow_id = uuid.uuid4()
    init_code = await exchanges.create(flow_id)
    key = f"token_exchange:flow:{flow_id}"
    left = await backend.kv.ttl(key)
    assert left is not None and LIFESPAN - timedelta(seconds=5) < left <= LIFESPAN
    raw = await backend.kv.get(key)
    assert raw is not None and init_code.encode() not in raw
    return_to_code = await exchanges.attach(flow_id, uuid.uuid4(), "ory_st_secret")
    assert return_to_code is not None
    assert await backend.kv.get(key) is None  # the return_to code is no longer stored anywhere


async def test_concurrent_exchanges_answer_once(kv: KeyValueStore) -> None:
    exchanges = TokenExchanges(kv, LIFESPAN)
    flow_id = uuid.uuid4()
    init_code = await exchanges.create(flow_id)
    return_to_code = await exchanges.attach(flow_id, uuid.uuid4(), "ory_st_once")
    assert return_to_code is not None
    results = await asyncio.gather(*(exchanges.exchange(init_code, return_to_code) for _ in range(10)))
    assert [r.token for r in results if r is not None] == ["ory_st_once"]
