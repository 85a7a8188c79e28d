"""Admission for expensive work: a fixed number of slots and a bounded queue, then 503.

Password hashing (64 MiB and tens of ms of CPU each) and SAML signature checks (about 135 ms of
``xmlsec1`` each) must not be able to take every core or all memory when a flood arrives. Each owner
builds one ``Admission``: at most ``concurrency`` blocks run at once, at most ``max_queue`` wait for a
slot, and past that the request is refused at once with 503 and ``Retry-After`` before any of its
work starts, so the client can simply retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from sidecar import errors

RETRY_AFTER_SECONDS = 1


def usable_cpus() -> int:
    """The CPUs this process may run on (``taskset``, cgroup cpusets), not the machine's count:
    pinned to one core, two blocks at once would only share it and double the memory held."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Admission:
    def __init__(self, max_concurrent: int, max_queue: int, *, refusal: str) -> None:
        self._concurrency = max_concurrent or usable_cpus()
        self._slots = asyncio.Semaphore(self._concurrency)
        self._waiting = 0
        self._max_queue = max_queue
        self._refusal = refusal

    @property
    def concurrency(self) -> int:
        """Blocks that run at once (the configured number, else the usable CPUs)."""
        return self._concurrency

    @property
    def queue_depth(self) -> int:
        """Blocks waiting for a free slot (for metrics)."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one slot for the block; ``ServiceUnavailable`` (503) when the queue is full."""
        if self._slots.locked() and self._waiting >= self._max_queue:
            raise errors.ServiceUnavailable(self._refusal, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
