"""PasswordHasher: algorithms, hashing processes or threads and their cap, rehash and import rules."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import argon2
import bcrypt
import pytest

from sidecar.config.model import Hashers
from sidecar.hashing import processes
from sidecar.hashing.hasher import PasswordHasher

FAST = {"memory": "8MB", "iterations": 1, "parallelism": 1}


def hashers(**overrides: Any) -> Hashers:
    return Hashers.model_validate({"argon2": FAST, **overrides})


@pytest.fixture(autouse=True)
def never_starved(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SCHED_IDLE hash counts as starved unless a test says so: on a machine busy with a parallel
    suite one may well be, and would then (rightly) be killed and run again at nice +10, which
    changes the processes the other tests count."""
    monkeypatch.setattr(processes, "STARVED_SHARE", 0.0)


@pytest.fixture(params=["process", "thread"])
async def hasher(request: pytest.FixtureRequest) -> AsyncIterator[PasswordHasher]:
    h = PasswordHasher(hashers(pool=request.param))
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


@pytest.mark.parametrize("pool", ["process", "thread"])
async def test_bcrypt_when_configured(pool: str) -> None:
    h = PasswordHasher(hashers(algorithm="bcrypt", bcrypt={"cost": 4}, pool=pool))
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


@pytest.mark.parametrize("pool", ["process", "thread"])
async def test_hashing_does_not_block_the_event_loop(pool: str) -> None:
    h = PasswordHasher(Hashers.model_validate({"argon2": {"memory": "32MB", "iterations": 2}, "pool": pool}))
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


@pytest.mark.parametrize("pool", ["process", "thread"])
async def test_concurrency_cap_and_queue_depth(pool: str) -> None:
    h = PasswordHasher(hashers(max_concurrent=1, pool=pool))
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


def _policy_and_nice(pid: int, tid: int | None = None) -> tuple[int, int]:
    """The scheduling policy and nice value the kernel reports for a process (or one of its threads)."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[38]), int(fields[16])  # stat fields 41 (policy) and 19 (nice)


async def test_hashes_run_in_sched_idle_processes_by_default() -> None:
    """The default (adaptive): processes of their own, never a thread of the server, at SCHED_IDLE,
    which the event loop preempts at once (at nice +10 it could wait a scheduler tick)."""
    h = PasswordHasher(hashers())
    threads_before = threading.active_count()
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        assert await h.verify("pw", await h.hash("pw"))
        pids = h.process_ids()
        assert len(pids) == 1 and pids[0] != os.getpid()
        assert _policy_and_nice(pids[0]) == (os.SCHED_IDLE, base)
        assert threading.active_count() <= threads_before  # no hashing thread in this process
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    finally:
        await h.close()


@pytest.mark.parametrize(
    ("priority", "policy", "nice_added"),
    [
        pytest.param("adaptive", "SCHED_IDLE", 0, id="adaptive"),
        pytest.param("idle", "SCHED_IDLE", 0, id="idle"),
        pytest.param("low", "SCHED_OTHER", 10, id="low"),
        pytest.param("normal", "SCHED_OTHER", 0, id="normal"),
    ],
)
async def test_hashing_process_priority(priority: str, policy: str, nice_added: int) -> None:
    h = PasswordHasher(hashers(priority=priority))
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        await h.hash("pw")  # the process lowers its priority before it reads its first request
        (pid,) = h.process_ids()
        assert _policy_and_nice(pid) == (getattr(os, policy), min(base + nice_added, 19))
        # The event loop's own thread is never changed.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        await h.close()


@pytest.mark.parametrize(
    ("priority", "policy", "nice_added"),
    [
        pytest.param("adaptive", "SCHED_OTHER", 10, id="adaptive-is-low"),
        pytest.param("idle", "SCHED_IDLE", 0, id="idle"),
        pytest.param("low", "SCHED_OTHER", 10, id="low"),
        pytest.param("normal", "SCHED_OTHER", 0, id="normal"),
    ],
)
async def test_hashing_thread_priority(priority: str, policy: str, nice_added: int) -> None:
    h = PasswordHasher(hashers(priority=priority, pool="thread"))
    try:
        base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        await h.hash("pw")
        assert not h.process_ids()
        (tid,) = [t.native_id for t in threading.enumerate() if t.name.startswith("hasher")]
        assert tid is not None
        assert _policy_and_nice(os.getpid(), tid) == (getattr(os, policy), min(base + nice_added, 19))
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base
    finally:
        await h.close()


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (no /proc entry, not even a zombie)."""
    return not Path(f"/proc/{pid}").exists()


async def test_close_stops_and_reaps_every_hashing_process() -> None:
    h = PasswordHasher(hashers(max_concurrent=2))
    await asyncio.gather(h.hash("a"), h.hash("b"))
    pids = h.process_ids()
    assert len(pids) == 2
    await h.close()
    assert all(_gone(pid) for pid in pids)
    assert h.process_ids() == []


async def test_close_cancelled_part_way_still_kills_and_reaps_every_process() -> None:
    """A shutdown that gives up on close() (its own timeout) while a slow hash keeps close() waiting:
    no hashing process may be left running, or exited and unreaped."""
    # A stored hash of seconds of argon2 (its value need not match: verifying it takes as long).
    slow = "$argon2id$v=19$m=262144,t=10,p=1$" + "c2FsdHNhbHRzYWx0c2FsdA" + "$" + "A" * 43
    h = PasswordHasher(hashers(max_concurrent=2, priority="normal"))
    await asyncio.gather(h.hash("a"), h.hash("b"))
    pids = h.process_ids()
    assert len(pids) == 2
    in_flight = [asyncio.create_task(h.verify(p, slow)) for p in ("x", "y")]
    await asyncio.sleep(0.2)
    closing = asyncio.create_task(h.close())
    await asyncio.sleep(0.3)  # close() waits for the processes to answer and exit
    assert not closing.done()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    assert all(_gone(pid) for pid in pids)
    await asyncio.gather(*in_flight, return_exceptions=True)


async def test_a_starved_hash_runs_again_at_nice_10_and_sched_idle_returns_after_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SCHED_IDLE hash that gets no CPU (here: its process stopped) is not left waiting: its
    process is killed and the hash runs again in one at nice +10; after the fallback period the
    slot goes back to a SCHED_IDLE process. Never more processes than max_concurrent."""
    monkeypatch.setattr(processes, "STARVATION_WINDOW", 0.05)
    h = PasswordHasher(hashers(max_concurrent=1))
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    try:
        await h.hash("warm")  # not starved (never_starved): only the stopped process will be
        (first,) = h.process_ids()
        assert _policy_and_nice(first) == (os.SCHED_IDLE, base)
        monkeypatch.setattr(processes, "STARVED_SHARE", 0.05)
        os.kill(first, signal.SIGSTOP)  # starved: no CPU at all from now on
        encoded = await asyncio.wait_for(h.hash("pw"), 30)
        assert argon2.PasswordHasher().verify(encoded, "pw")
        (second,) = h.process_ids()
        assert second != first and _gone(first)
        assert _policy_and_nice(second) == (os.SCHED_OTHER, min(base + 10, 19))
        assert await h.verify("pw", encoded)  # within the fallback: the same process at nice +10
        assert h.process_ids() == [second]
        assert h._processes is not None
        h._processes._fallback_until = 0.0  # FALLBACK_SECONDS have passed
        monkeypatch.setattr(processes, "STARVED_SHARE", 0.0)
        assert await h.verify("pw", encoded)
        (third,) = h.process_ids()
        assert _gone(second)
        assert _policy_and_nice(third) == (os.SCHED_IDLE, base)
    finally:
        await h.close()


async def test_a_killed_process_is_replaced() -> None:
    h = PasswordHasher(hashers(max_concurrent=1))
    try:
        encoded = await h.hash("pw")
        (first,) = h.process_ids()
        os.kill(first, signal.SIGKILL)  # while idle
        assert await h.verify("pw", encoded)
        (second,) = h.process_ids()
        assert second != first
    finally:
        await h.close()
    assert _gone(first) and _gone(second)


async def test_a_process_that_dies_mid_hash_answers_503_and_the_next_hash_works() -> None:
    from sidecar import errors

    slow = {"memory": "64MB", "iterations": 3, "parallelism": 1}
    h = PasswordHasher(Hashers.model_validate({"argon2": slow, "max_concurrent": 1}))
    try:
        running = asyncio.create_task(h.hash("pw"))
        while not h.process_ids():
            await asyncio.sleep(0)
        (pid,) = h.process_ids()
        # Killed before it can even have started Python: the request is in flight either way.
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(errors.ServiceUnavailable) as refused:
            await running
        assert refused.value.code == 503 and refused.value.headers == {"Retry-After": "1"}
        assert _gone(pid)
        assert (await h.hash("again")).startswith("$argon2id$")
    finally:
        await h.close()


async def test_a_cancelled_caller_leaves_the_process_in_step() -> None:
    """One request, one answer, in order: a caller that gives up must not shift the answers."""
    h = PasswordHasher(hashers(max_concurrent=1))
    try:
        encoded = await h.hash("right")
        abandoned = asyncio.create_task(h.verify("right", encoded))
        while not h.queue_depth and not abandoned.done():
            await asyncio.sleep(0)
            break
        await asyncio.sleep(0)
        abandoned.cancel()
        assert await h.verify("wrong", encoded) is False
        assert await h.verify("right", encoded) is True
        assert len(h.process_ids()) == 1
    finally:
        await h.close()


def test_a_new_event_loop_gets_new_processes() -> None:
    """Sockets belong to one loop (tests run one per test): a second loop starts afresh."""
    h = PasswordHasher(hashers())
    encoded = asyncio.run(h.hash("pw"))
    (first,) = h.process_ids()

    async def second() -> bool:
        try:
            return await h.verify("pw", encoded)
        finally:
            await h.close()

    assert asyncio.run(second())
    assert _gone(first)


@pytest.mark.parametrize("pool", ["process", "thread"])
async def test_past_max_queue_hashes_are_refused_with_503_and_retry_after(pool: str) -> None:
    from sidecar import errors

    h = PasswordHasher(hashers(max_concurrent=1, max_queue=2, pool=pool))
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


async def test_a_caller_cancelled_as_a_process_is_handed_to_it_gives_the_process_back() -> None:
    """A caller waiting for a process is handed one (its future resolved) and cancelled before it
    resumes: the process must go back to the pool, else the pool is one process short for good and,
    at max_concurrent 1, every later hash waits forever."""
    h = PasswordHasher(hashers(max_concurrent=1))
    try:
        await h.hash("warm")  # the one process is running
        pool = h._processes
        assert pool is not None
        # The first caller gives up: its hash still runs in the background, holding the process,
        # while its admission slot frees. The next caller waits for the process.
        first = asyncio.create_task(h.hash("first"))
        await asyncio.sleep(0)
        first.cancel()
        second = asyncio.create_task(h.hash("second"))
        while not pool._waiters:
            await asyncio.wait_for(asyncio.sleep(0.001), 5)
        (waiter,) = pool._waiters
        # The first hash ends and hands the process to the waiter; cancel its caller before it
        # resumes (this task runs ahead of the waiter's in the loop's queue).
        while not waiter.done():
            await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        # The process is free again: the next hash gets it (a lost process would wait forever).
        assert (await asyncio.wait_for(h.hash("third"), 30)).startswith("$argon2id$")
        assert len(h.process_ids()) == 1
    finally:
        await asyncio.wait_for(h.close(), 30)


async def test_a_caller_waiting_for_a_process_at_close_gets_503_not_a_cancellation() -> None:
    """close() refuses the callers still waiting for a process with the shutdown 503: a caller that
    was not cancelled must not see CancelledError (its task would count as cancelled)."""
    from sidecar import errors

    h = PasswordHasher(hashers(max_concurrent=1))
    try:
        await h.hash("warm")
        pool = h._processes
        assert pool is not None
        first = asyncio.create_task(h.hash("first"))
        await asyncio.sleep(0)
        first.cancel()  # its hash keeps the process busy in the background
        second = asyncio.create_task(h.hash("second"))
        while not pool._waiters:
            await asyncio.wait_for(asyncio.sleep(0.001), 5)
    finally:
        await asyncio.wait_for(h.close(), 30)
    with pytest.raises(errors.ServiceUnavailable) as refused:
        await asyncio.wait_for(second, 30)
    assert refused.value.code == 503


async def test_close_with_a_hash_in_flight_answers_it_and_leaves_no_stale_socket_watched() -> None:
    """close() must not close a process's socket under the exchange still reading it: the caller
    never got its answer, and the loop kept watching the dead descriptor, so the next socket given
    that number (a Jsonnet worker's, a hash's) was never woken."""
    import socket

    from sidecar import errors

    slow = {"memory": "64MB", "iterations": 3, "parallelism": 1}
    h = PasswordHasher(Hashers.model_validate({"argon2": slow, "max_concurrent": 1, "priority": "normal"}))
    await h.hash("warm")
    pool = h._processes
    assert pool is not None
    (process,) = pool._all
    fd = process.sock.fileno()
    in_flight = asyncio.create_task(h.hash("in flight"))
    while pool._idle:  # taken by the caller, its exchange started in the same step
        await asyncio.wait_for(asyncio.sleep(0.001), 5)
    for _ in range(3):
        await asyncio.sleep(0)  # the request is sent, the answer awaited (100 ms or more of argon2)
    await asyncio.wait_for(h.close(), 30)
    # Answered, or (past close's STOP_WAIT_SECONDS on a busy machine) refused: never left waiting.
    (answer,) = await asyncio.wait_for(asyncio.gather(in_flight, return_exceptions=True), 30)
    assert isinstance(answer, errors.ServiceUnavailable) or (
        isinstance(answer, str) and answer.startswith("$argon2id$")
    ), answer
    loop = asyncio.get_running_loop()
    held = []
    try:
        while True:  # a socket with the descriptor number the process's socket had
            a, b = socket.socketpair()
            held += [a, b]
            if fd in (a.fileno(), b.fileno()) or len(held) > 100:
                break
        mine, other = (a, b) if a.fileno() == fd else (b, a)
        assert mine.fileno() == fd, "the descriptor was not handed out again"
        mine.setblocking(False)
        receiving = asyncio.ensure_future(loop.sock_recv(mine, 1))
        await asyncio.sleep(0)
        other.send(b"x")
        assert await asyncio.wait_for(receiving, 10) == b"x"
    finally:
        for s in held:
            s.close()
