"""KeyValueStore contract, run on SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from sidecar import errors
from sidecar.kv.store import KeyValueStore
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.sql.database import SqlDatabase

HOUR = timedelta(hours=1)
SECOND = timedelta(seconds=1)


@pytest.fixture
def kv(backend: SqlDatabase | RedisBackend) -> KeyValueStore:
    return backend.kv


async def test_set_get_delete(kv: KeyValueStore) -> None:
    assert await kv.get("k") is None
    await kv.set("k", b"\x00one", HOUR)
    assert await kv.get("k") == b"\x00one"
    await kv.set("k", b"two", HOUR)
    assert await kv.get("k") == b"two"
    assert await kv.delete("k") is True
    assert await kv.delete("k") is False
    assert await kv.get("k") is None


async def test_ttl(kv: KeyValueStore) -> None:
    assert await kv.ttl("missing") is None
    await kv.set("k", b"v", timedelta(seconds=60))
    left = await kv.ttl("k")
    assert left is not None and timedelta(seconds=58) < left <= timedelta(seconds=60)


async def test_expired_values_are_invisible(kv: KeyValueStore) -> None:
    await kv.set("k", b"v", SECOND)
    await asyncio.sleep(1.2)
    assert await kv.get("k") is None
    assert await kv.ttl("k") is None
    assert await kv.take("k") is None
    assert await kv.delete("k") is False
    assert await kv.add("k", b"again", HOUR) is True
    assert await kv.get("k") == b"again"


async def test_take_once(kv: KeyValueStore) -> None:
    await kv.set("k", b"v", HOUR)
    assert await kv.take("k") == b"v"
    assert await kv.take("k") is None


async def test_concurrent_take_yields_the_value_once(kv: KeyValueStore) -> None:
    await kv.set("secret", b"v", HOUR)
    results = await asyncio.gather(*(kv.take("secret") for _ in range(20)))
    assert [r for r in results if r is not None] == [b"v"]


async def test_add_only_if_absent(kv: KeyValueStore) -> None:
    assert await kv.add("k", b"first", HOUR) is True
    assert await kv.add("k", b"second", HOUR) is False
    assert await kv.get("k") == b"first"


async def test_concurrent_add_has_one_winner(kv: KeyValueStore) -> None:
    results = await asyncio.gather(*(kv.add("nonce", str(i).encode(), HOUR) for i in range(20)))
    assert results.count(True) == 1


async def test_concurrent_incr_counts_every_call_and_resets_after_window(kv: KeyValueStore) -> None:
    # The window is long enough that 30 writes on a loaded machine all land inside it.
    window = timedelta(seconds=4)
    counts = await asyncio.gather(*(kv.incr("hits", window) for _ in range(30)))
    assert sorted(counts) == list(range(1, 31))
    assert await kv.get("hits") == b"30"
    left = await kv.ttl("hits")
    assert left is not None and left <= window
    await asyncio.sleep(left.total_seconds() + 0.2)
    assert await kv.incr("hits", window) == 1


async def test_incr_by_a_step_and_back(kv: KeyValueStore) -> None:
    assert await kv.incr("steps", HOUR) == 1
    assert await kv.incr("steps", HOUR, by=5) == 6
    assert await kv.incr("steps", HOUR, by=-1) == 5
    assert await kv.get("steps") == b"5"


async def test_ping_answers_only_when_the_store_does(
    kv: KeyValueStore, down_backend: SqlDatabase | RedisBackend
) -> None:
    await kv.ping()  # raises when it cannot answer
    with pytest.raises(errors.ServiceUnavailable):
        await down_backend.kv.ping()
    with pytest.raises(errors.ServiceUnavailable):  # an outage is never "no value"
        await down_backend.kv.get("k")
