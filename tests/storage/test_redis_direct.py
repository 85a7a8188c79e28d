"""The session read by token on a kept connection, its reply read at the protocol level
(storage/redis/direct.py): the same answers as the client's own path, and outages that stay
outages (a 503, never "no session") when Redis dies or hangs mid-read."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as redis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sidecar.errors import ServiceUnavailable
from sidecar.session.model import Device, Session
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.redis.direct import DirectScript, _Lane, evalsha_command
from sidecar.storage.redis.sessions import RedisSessionStore
from tests.conftest import free_port
from tests.proxy.harness import Proc, binary, spawn


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Proc]:
    """A redis-server of this test's own, to stop and kill (never the shared one)."""
    port = free_port()
    args = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]
    proc = spawn([*args, "--save", "", "--appendonly", "no"], port)
    yield proc
    if proc.popen.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
    proc.stop()


def _session(**changes: object) -> Session:
    session = Session(identity_id=uuid.uuid4(), expires_at=datetime.now(UTC) + timedelta(minutes=10))
    return Session(**{**{f: getattr(session, f) for f in Session.__dataclass_fields__}, **changes})  # type: ignore[arg-type]


def _lanes(store: RedisSessionStore) -> list[_Lane]:
    return [lane for _, lane in store._by_token._idle if lane is not None]


async def test_the_kept_connection_reads_through_its_lane(redis_backend: RedisBackend) -> None:
    session = _session()
    await redis_backend.sessions.create(session, "lane")
    for _ in range(3):
        assert await redis_backend.sessions.get_by_token("lane") == session
    [lane] = _lanes(redis_backend.sessions)
    assert lane.transport.get_protocol() is lane


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"x", id="short"),
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)) * 1200, id="300k-binary"),  # a reply in many chunks
        pytest.param("\u00e9\u2603".encode() * 40000, id="utf8"),
    ],
)
async def test_a_script_reads_the_same_through_both_paths(
    redis_backend: RedisBackend, unique_prefix: str, value: bytes
) -> None:
    script = redis_backend.client.register_script("return redis.call('GET', KEYS[1])")
    direct = DirectScript(redis_backend.client, script)
    key = f"{unique_prefix}value"
    try:
        assert await direct(keys=[key], args=[]) is None
        assert await direct(keys=[key], args=[]) == await script(keys=[key], args=[]) is None
        await redis_backend.client.set(key, value)
        for _ in range(3):  # the first read attaches the lane, the next ones take it
            assert await direct(keys=[key], args=[]) == await script(keys=[key], args=[]) == value
        assert [lane for _, lane in direct._idle if lane is not None]
    finally:
        await direct.close()


async def test_session_reads_agree_with_the_client_path(redis_backend: RedisBackend) -> None:
    store = redis_backend.sessions
    plain = _session()
    rich = _session(devices=(Device(ip_address="127.0.0.1", user_agent="ua \u2603"),), extra={"k": [1]})
    await store.create(plain, "p")
    await store.create(rich, "r")
    client_path = store._by_token._script
    for digest, expected in (("p", plain), ("r", rich), ("missing", None)):
        keys, args = [store._token + digest], [store._session]
        assert await store._by_token(keys, args) == await client_path(keys=keys, args=args)
        assert await store.get_by_token(digest) == expected
    assert await store.revoke(plain.id)
    assert (await store.get_by_token("p")).active is False  # type: ignore[union-attr]


async def test_an_error_reply_takes_the_client_path_and_keeps_the_lane(redis_backend: RedisBackend) -> None:
    session = _session()
    await redis_backend.sessions.create(session, "ns")
    assert await redis_backend.sessions.get_by_token("ns") == session
    assert await redis_backend.sessions.get_by_token("ns") == session
    [lane] = _lanes(redis_backend.sessions)
    await redis_backend.client.script_flush()  # the lane's EVALSHA meets NOSCRIPT
    assert await redis_backend.sessions.get_by_token("ns") == session
    assert await redis_backend.sessions.get_by_token("ns") == session
    [again] = _lanes(redis_backend.sessions)
    assert again.conn is lane.conn and again.transport.get_protocol() is again


async def test_a_due_health_check_takes_redis_py_path_then_the_lane_again(
    redis_backend: RedisBackend,
) -> None:
    session = _session()
    await redis_backend.sessions.create(session, "hc")
    assert await redis_backend.sessions.get_by_token("hc") == session
    [lane] = _lanes(redis_backend.sessions)
    lane.conn.next_health_check = 0  # idle for longer than the interval
    assert await redis_backend.sessions.get_by_token("hc") == session
    [again] = _lanes(redis_backend.sessions)
    assert again is not lane and again.conn is lane.conn
    assert lane.conn.next_health_check > asyncio.get_running_loop().time()


async def test_a_push_frame_before_the_reply_goes_to_redis_py(
    redis_backend: RedisBackend, unique_prefix: str
) -> None:
    # RESP3 (redis-py's default): with client-side tracking on, a write to a key the kept
    # connection read sends it an invalidation push, which arrives between two reads.
    store = redis_backend.sessions
    session = _session()
    await store.create(session, "push")
    assert await store.get_by_token("push") == session
    assert await store.get_by_token("push") == session
    [lane] = _lanes(store)
    store._by_token._idle.clear()
    store._by_token._lanes.discard(lane)
    lane.detach()
    await lane.conn.send_command("CLIENT", "TRACKING", "ON")
    assert await lane.conn.read_response() == b"OK"
    store._by_token._idle.append((lane.conn, store._by_token._attach(lane.conn)))
    assert await store.get_by_token("push") == session  # the lane's read: the keys are tracked
    await redis_backend.client.set(f"{unique_prefix}session-token:push", str(session.id))  # same value
    for _ in range(50):  # until the push has arrived (buffered in the reader)
        [lane] = _lanes(store)
        if lane.reader.has_data():
            break
        await asyncio.sleep(0.02)
    assert lane.reader.has_data()
    assert await store.get_by_token("push") == session


def _store(url: str, prefix: str) -> RedisSessionStore:
    # One attempt on the client's path, short timeouts: the figures these tests wait for.
    client = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    return RedisSessionStore(client, prefix)


async def _close(store: RedisSessionStore) -> None:
    await store.close()
    await store._client.aclose()


async def test_redis_killed_mid_read_is_unavailable_not_no_session(private_redis: Proc) -> None:
    store = _store(f"redis://127.0.0.1:{private_redis.port}/0", "t:")
    try:
        session = _session()
        await store.create(session, "k")
        assert await store.get_by_token("k") == session
        assert await store.get_by_token("k") == session
        assert _lanes(store)
        os.kill(private_redis.pid, signal.SIGSTOP)
        read = asyncio.ensure_future(store.get_by_token("k"))
        await asyncio.sleep(0.1)  # the EVALSHA is written, its reply awaited
        assert not read.done()
        os.kill(private_redis.pid, signal.SIGKILL)
        private_redis.popen.wait(10)
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(read, 30)  # a bound on a hang, not on speed
        with pytest.raises(ServiceUnavailable):
            await store.get_by_token("k")
    finally:
        await _close(store)


async def test_redis_killed_between_reads_is_unavailable(private_redis: Proc) -> None:
    store = _store(f"redis://127.0.0.1:{private_redis.port}/0", "t:")
    try:
        await store.create(_session(), "k")
        await store.get_by_token("k")
        await store.get_by_token("k")
        [lane] = _lanes(store)
        os.kill(private_redis.pid, signal.SIGKILL)
        private_redis.popen.wait(10)
        for _ in range(500):  # until the loop has seen the connection end
            if lane.lost:
                break
            await asyncio.sleep(0.01)
        assert lane.lost  # so the next read does not write into a connection the server ended
        with pytest.raises(ServiceUnavailable):
            await asyncio.wait_for(store.get_by_token("k"), 30)
    finally:
        await _close(store)


async def test_a_hung_redis_times_out_into_unavailable(private_redis: Proc) -> None:
    store = _store(f"redis://127.0.0.1:{private_redis.port}/0", "t:")
    try:
        session = _session()
        await store.create(session, "h")
        assert await store.get_by_token("h") == session
        assert await store.get_by_token("h") == session
        [lane] = _lanes(store)
        os.kill(private_redis.pid, signal.SIGSTOP)  # connected, accepting, never answering
        with pytest.raises(ServiceUnavailable) as raised:
            await asyncio.wait_for(store.get_by_token("h"), 30)  # a bound on a hang, not on speed
        assert "Timeout" in repr(raised.value.__cause__)
        assert lane.transport.get_protocol() is not lane  # handed back, disconnected
        assert not _lanes(store)
        os.kill(private_redis.pid, signal.SIGCONT)
        assert await store.get_by_token("h") == session  # and the next read reconnects
    finally:
        await _close(store)


async def test_a_cancelled_read_leaves_no_connection_out_of_step(private_redis: Proc) -> None:
    store = _store(f"redis://127.0.0.1:{private_redis.port}/0", "t:")
    try:
        first, second = _session(), _session()
        await store.create(first, "a")
        await store.create(second, "b")
        assert await store.get_by_token("a") == first
        assert await store.get_by_token("a") == first
        os.kill(private_redis.pid, signal.SIGSTOP)
        read = asyncio.ensure_future(store.get_by_token("a"))
        await asyncio.sleep(0.1)
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        os.kill(private_redis.pid, signal.SIGCONT)
        # The reply to the cancelled read must never answer the next one.
        for _ in range(3):
            assert await store.get_by_token("b") == second
    finally:
        await _close(store)


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        pytest.param(["sidecar:session-token:d1"], ["sidecar:session:"], id="session-read"),
        pytest.param([], [], id="nothing"),
        pytest.param(["k\u00e9y", "a{b}c"], ["\u2603", "", "x" * 70000], id="utf8-empty-long"),
        pytest.param(["a"], ["$1", "\r\n"], id="protocol-characters"),
    ],
)
def test_the_kept_form_packs_what_evalsha_command_packs(keys: list[str], args: list[str]) -> None:
    client = redis.Redis()
    direct = DirectScript(client, client.register_script("return 1"))
    encoder = Connection().encoder
    for _ in range(2):  # the form packed, then taken from the kept parts
        assert direct._command(encoder, keys, args) == evalsha_command(
            encoder, direct._script.sha, keys, args
        )
    other = [*keys, "another key"]
    assert direct._command(encoder, other, args) == evalsha_command(encoder, direct._script.sha, other, args)
    changed = [*args, "one more"]
    assert direct._command(encoder, keys, changed) == evalsha_command(
        encoder, direct._script.sha, keys, changed
    )
