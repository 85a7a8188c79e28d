"""PasswordHasher: configured algorithms, the thread pool and its cap, rehash and import rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import argon2
import bcrypt
import pytest

from sidecar.config.model import Hashers
from sidecar.hashing.hasher import PasswordHasher

FAST = {"memory": "8MB", "iterations": 1, "parallelism": 1}


def hashers(**overrides: Any) -> Hashers:
    return Hashers.model_validate({"argon2": FAST, **overrides})


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    h = PasswordHasher(hashers())
    yield h
    await h.close()


async def test_argon2id_with_configured_parameters(hasher: PasswordHasher) -> None:
    encoded = await hasher.hash("s3cret-pass")
    params = argon2.extract_parameters(encoded)
    assert encoded.startswith("$argon2id$v=19$")
    assert (params.memory_cost, params.time_cost, params.parallelism) == (8_000_000 // 1024, 1, 1)
    assert params.hash_len == 32 and params.salt_len == 16
    assert argon2.PasswordHasher().verify(encoded, "s3cret-pass")  # readable by the reference library
    assert await hasher.verify("s3cret-pass", encoded)
    assert not await hasher.verify("s3cret-pasS", encoded)
    assert not hasher.needs_rehash(encoded)


async def test_bcrypt_when_configured() -> None:
    h = PasswordHasher(hashers(algorithm="bcrypt", bcrypt={"cost": 4}))
    try:
        encoded = await h.hash("pässword")
        assert encoded.startswith("$2b$04$")
        assert bcrypt.checkpw("pässword".encode(), encoded.encode())
        assert await h.verify("pässword", encoded)
        assert not h.needs_rehash(encoded)
        assert h.needs_rehash(bcrypt.hashpw(b"x", bcrypt.gensalt(5)).decode())
        with pytest.raises(ValueError, match="72 bytes"):
            await h.hash("ä" * 37)  # 74 bytes, 37 characters: bcrypt would silently truncate
    finally:
        await h.close()


async def test_needs_rehash(hasher: PasswordHasher) -> None:
    other = argon2.PasswordHasher(time_cost=2, memory_cost=1024, parallelism=1).hash("x")
    assert hasher.needs_rehash(other)
    assert hasher.needs_rehash(bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode())
    assert hasher.needs_rehash("$md5$aGFzaA==")
    assert hasher.needs_rehash("garbage")


@pytest.mark.parametrize(
    "encoded", ["", "garbage", "$argon2id$v=19$m=1,t=1,p=1$$", "$2a$04$short", "{SSHA}@@"]
)
async def test_verify_never_raises(hasher: PasswordHasher, encoded: str) -> None:
    assert await hasher.verify("x", encoded) is False


def test_validate_import() -> None:
    h = PasswordHasher(hashers())
    h.validate_import(bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode())
    with pytest.raises(ValueError, match="unknown password hash format"):
        h.validate_import("$nope$abc")
    with pytest.raises(ValueError, match="cost=16"):
        h.validate_import("$2a$16$" + "a" * 53)


async def test_hashing_does_not_block_the_event_loop() -> None:
    h = PasswordHasher(Hashers.model_validate({"argon2": {"memory": "32MB", "iterations": 2}}))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        started = time.perf_counter()
        await h.hash("pw")
        elapsed = time.perf_counter() - started
    finally:
        task.cancel()
        await h.close()
    # A blocked loop ticks at most once in total (after the hash); a free one keeps ticking while
    # the hash runs in its thread. A tick rate would measure the machine's load, not the hasher.
    assert elapsed > 0.01 and ticks >= 3


async def test_concurrency_cap_and_queue_depth() -> None:
    h = PasswordHasher(hashers(max_concurrent=1))
    try:
        tasks = [asyncio.create_task(h.hash(f"pw{i}")) for i in range(4)]
        await asyncio.sleep(0)
        assert h.queue_depth == 3
        await asyncio.gather(*tasks)
        assert h.queue_depth == 0
    finally:
        await h.close()


async def test_verify_dummy_costs_like_a_real_verify(hasher: PasswordHasher) -> None:
    encoded = await hasher.hash("real")
    await hasher.verify_dummy("warm-up")  # computes the dummy hash once

    async def timed(coro: Any) -> float:
        started = time.perf_counter()
        await coro
        return time.perf_counter() - started

    # Interleaved pairs, so a burst of load elsewhere on the machine hits both sides alike, and the
    # fastest run of each side: load only ever adds time, so the minimum is the cost of the work itself.
    reals, dummies = [], []
    for _ in range(9):
        reals.append(await timed(hasher.verify("wrong", encoded)))
        dummies.append(await timed(hasher.verify_dummy("wrong")))
    assert 0.5 < min(dummies) / min(reals) < 2.0, (reals, dummies)


async def test_hashing_threads_default_to_sched_idle() -> None:
    """Hash threads yield the CPU to the event loop that serves the access path."""
    import os

    h = PasswordHasher(hashers())
    try:
        assert await h._run(lambda: os.sched_getscheduler(0)) == os.SCHED_IDLE
    finally:
        await h.close()


@pytest.mark.parametrize(
    ("priority", "policy", "nice_added"),
    [
        pytest.param("idle", "SCHED_IDLE", 0, id="idle"),
        pytest.param("low", "SCHED_OTHER", 10, id="low"),
        pytest.param("normal", "SCHED_OTHER", 0, id="normal"),
    ],
)
async def test_hashing_thread_priority(priority: str, policy: str, nice_added: int) -> None:
    import os
    import threading

    h = PasswordHasher(hashers(priority=priority))
    try:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def seen() -> tuple[int, int]:
            tid = threading.get_native_id()
            return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, tid)

        got_policy, got_nice = await h._run(seen)
        assert got_policy == getattr(os, policy)
        assert got_nice == min(base + nice_added, 19)
        # The event loop's own thread is never changed.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        await h.close()


async def test_past_max_queue_hashes_are_refused_with_503_and_retry_after() -> None:
    from sidecar import errors

    h = PasswordHasher(hashers(max_concurrent=1, max_queue=2))
    try:
        running = [asyncio.create_task(h.hash(f"pw{i}")) for i in range(3)]  # 1 hashing, 2 waiting
        await asyncio.sleep(0)
        assert h.queue_depth == 2
        with pytest.raises(errors.ServiceUnavailable) as refused:
            await h.verify("pw", "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaA")
        assert refused.value.code == 503 and refused.value.headers == {"Retry-After": "1"}
        assert h.queue_depth == 2  # the refused call never joined the queue
        assert all(isinstance(x, str) for x in await asyncio.gather(*running))
        assert await h.hash("after the storm")  # room again
    finally:
        await h.close()
