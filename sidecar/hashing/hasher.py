"""The password hasher: argon2id (or bcrypt) for new hashes, every import format for checks.

Hashing costs 20-150 ms of CPU, so it never runs on the event loop (DESIGN §6): each call goes to
a bounded thread pool behind a semaphore, at a lower CPU priority (``hashers.priority``), so a
login storm queues instead of starving the proxy; past ``hashers.max_queue`` waiting hashes the
request is refused with 503 and ``Retry-After``. argon2-cffi, bcrypt and hashlib release the GIL
while they work.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import argon2.low_level
import bcrypt

from sidecar.admission import Admission
from sidecar.config.model import Hashers
from sidecar.hashing import formats
from sidecar.tracing import Tracing

T = TypeVar("T")


HASHING_NICENESS = 10


def _thread_priority(priority: str) -> Callable[[], None]:
    """A pool initializer that lowers the CPU priority of the hashing thread it runs in.

    A login storm is CPU-bound argon2; at equal priority it competes with the event-loop thread
    that serves proxied requests and decisions. ``low`` renices the thread (+10: the loop gets
    about ten times its share of the core, logins still progress under a proxy flood); ``idle``
    makes it ``SCHED_IDLE``, run only when the core has nothing else to do, so the loop preempts
    it at once. argon2's lane threads are created by this thread and inherit either setting.
    Linux applies both per thread; elsewhere this is a no-op.
    """

    def lower() -> None:
        with contextlib.suppress(OSError, AttributeError):
            if priority == "idle":
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            elif priority == "low":
                tid = threading.get_native_id()
                current = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, min(current + HASHING_NICENESS, 19))

    return lower


class PasswordHasher:
    """Hashes and verifies passwords per ``hashers.*`` (Kratos' ``hash.Hasher``)."""

    def __init__(self, config: Hashers, *, tracing: Tracing | None = None) -> None:
        self._config = config
        self._tracing = tracing or Tracing.off()
        # Each waiting hash holds a request and, once running, 64 MiB: past the queue, refuse instead.
        self._admission = Admission(
            config.max_concurrent,
            config.max_queue,
            refusal="Too many passwords are being checked right now, please retry in a moment",
        )
        self._pool = ThreadPoolExecutor(
            max_workers=self._admission.concurrency,
            thread_name_prefix="hasher",
            initializer=_thread_priority(config.priority),
        )
        self._dummy: str | None = None
        a = config.argon2
        self._argon2_params = (a.memory // 1024, a.iterations, a.parallelism, a.key_length)

    @property
    def concurrency(self) -> int:
        """Hashes that run at once (``hashers.max_concurrent``, else the CPU count)."""
        return self._admission.concurrency

    @property
    def queue_depth(self) -> int:
        """Hashes waiting for a free slot (for metrics)."""
        return self._admission.queue_depth

    async def _run(self, fn: Callable[[], T]) -> T:
        async with self._admission.admitted():
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _hash_sync(self, password: bytes) -> str:
        if self._config.algorithm == "bcrypt":
            if len(password) > formats.BCRYPT_MAX_BYTES:
                # bcrypt ignores everything past 72 bytes: refuse instead of truncating.
                raise ValueError(f"bcrypt cannot hash passwords longer than {formats.BCRYPT_MAX_BYTES} bytes")
            return bcrypt.hashpw(password, bcrypt.gensalt(self._config.bcrypt.cost)).decode()
        memory, iterations, parallelism, key_length = self._argon2_params
        return argon2.low_level.hash_secret(
            password,
            secrets.token_bytes(self._config.argon2.salt_length),
            time_cost=iterations,
            memory_cost=memory,
            parallelism=parallelism,
            hash_len=key_length,
            type=argon2.low_level.Type.ID,
        ).decode()

    async def hash(self, password: str) -> str:
        """A new hash of ``password`` with the configured algorithm and parameters."""
        data = password.encode()
        with self._tracing.span("sidecar.password.hash", {"sidecar.hash.algorithm": self._config.algorithm}):
            return await self._run(lambda: self._hash_sync(data))

    async def verify(self, password: str, encoded: str) -> bool:
        """True when ``password`` matches ``encoded`` (any supported format); never raises."""
        with self._tracing.span("sidecar.password.verify", {"sidecar.hash.operation": "verify"}):
            return await self._run(lambda: formats.verify(password, encoded))

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real ``verify`` so unknown identifiers cannot be told apart."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        dummy = self._dummy
        # Named as a real verification: a trace must not tell unknown identifiers apart either.
        with self._tracing.span("sidecar.password.verify", {"sidecar.hash.operation": "verify"}):
            await self._run(lambda: formats.verify(password, dummy))

    def needs_rehash(self, encoded: str) -> bool:
        """True when ``encoded`` is not a hash the configured hasher would write today."""
        if self._config.algorithm == "bcrypt":
            parts = encoded.split("$")
            current = len(parts) == 4 and parts[1] in ("2a", "2b", "2y")
            return not current or parts[2] != f"{self._config.bcrypt.cost:02d}"
        try:
            params = argon2.extract_parameters(encoded)
        except (argon2.exceptions.InvalidHashError, ValueError):
            return True
        memory, iterations, parallelism, key_length = self._argon2_params
        return (
            params.type is not argon2.low_level.Type.ID
            or params.memory_cost != memory
            or params.time_cost != iterations
            or params.parallelism != parallelism
            or params.hash_len != key_length
        )

    def validate_import(self, encoded: str) -> None:
        """``ValueError`` naming the reason when ``encoded`` cannot be imported."""
        formats.parse(encoded)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
