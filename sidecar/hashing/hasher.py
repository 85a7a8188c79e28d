"""The password hasher: argon2id (or bcrypt) for new hashes, every import format for checks.

Hashing costs 20-200 ms of CPU and 64 MiB, so it never runs on the event loop (DESIGN §6): each
call waits for one of ``hashers.max_concurrent`` slots (past ``hashers.max_queue`` waiting hashes
the request is refused with 503 and ``Retry-After``) and runs where ``hashers.pool`` says: in a
hashing process of its own (``sidecar.hashing.processes``, the default) or in a thread of the
server, at the CPU priority ``hashers.priority`` gives it, so a login storm queues instead of
starving the proxy.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import argon2.low_level

from sidecar.admission import Admission
from sidecar.config.model import Hashers
from sidecar.hashing import formats
from sidecar.hashing.processes import HashingProcesses
from sidecar.hashing.work import Params, Request, compute, lower_priority
from sidecar.tracing import Tracing


def params_of(config: Hashers) -> Params:
    a = config.argon2
    return Params(
        algorithm=config.algorithm,
        memory_kib=a.memory // 1024,
        iterations=a.iterations,
        parallelism=a.parallelism,
        key_length=a.key_length,
        salt_length=a.salt_length,
        bcrypt_cost=config.bcrypt.cost,
    )


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
        self._params = params_of(config)
        self._processes: HashingProcesses | None = None
        self._pool: ThreadPoolExecutor | None = None
        if config.pool == "process":
            self._processes = HashingProcesses(self._admission.concurrency, self._params, config.priority)
        else:
            self._pool = ThreadPoolExecutor(
                max_workers=self._admission.concurrency,
                thread_name_prefix="hasher",
                initializer=lower_priority,
                # A thread cannot be killed and run again elsewhere: adaptive is nice +10 here.
                initargs=("low" if config.priority == "adaptive" else config.priority,),
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

    def process_ids(self) -> list[int]:
        """The hashing processes running now (``hashers.pool: process``; for tests and diagnostics)."""
        return self._processes.pids() if self._processes else []

    async def _run(self, request: Request) -> Any:
        async with self._admission.admitted():
            if self._processes is not None:
                return await self._processes.run(request)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, compute, self._params, request)

    async def hash(self, password: str) -> str:
        """A new hash of ``password`` with the configured algorithm and parameters."""
        data = password.encode()
        with self._tracing.span("sidecar.password.hash", {"sidecar.hash.algorithm": self._config.algorithm}):
            result: str = await self._run(("hash", data))
            return result

    async def verify(self, password: str, encoded: str) -> bool:
        """True when ``password`` matches ``encoded`` (any supported format); never raises."""
        with self._tracing.span("sidecar.password.verify", {"sidecar.hash.operation": "verify"}):
            return bool(await self._run(("verify", password, encoded)))

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real ``verify`` so unknown identifiers cannot be told apart."""
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        dummy = self._dummy
        # Named as a real verification: a trace must not tell unknown identifiers apart either.
        with self._tracing.span("sidecar.password.verify", {"sidecar.hash.operation": "verify"}):
            await self._run(("verify", password, dummy))

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
        if self._processes is not None:
            await self._processes.close()
        if self._pool is not None:
            # Waits for the hash in flight (one hash's time at most), so no hashing thread outlives
            # the hasher that started it.
            await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)
