"""The bound on SAML signature checks running at once.

Checking a signed response or logout request costs about 135 ms of CPU (pysaml2 runs ``xmlsec1``
child processes), so a flood of well-formed, signed-looking posts to the ACS could take every
core. At most ``max_concurrent_verifications`` checks run at once; past
``max_queued_verifications`` waiting ones the request is refused with 503 and ``Retry-After``
before anything (the parked response, the RelayState) is taken, so the same request can be
retried. Built once in ``app.py`` and passed to ``SamlEndpoints``, its only user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from sidecar import errors

RETRY_AFTER_SECONDS = 1


class VerificationGate:
    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self._concurrency = max_concurrent or os.cpu_count() or 1
        self._slots = asyncio.Semaphore(self._concurrency)
        self._waiting = 0
        self._max_queue = max_queue

    @property
    def concurrency(self) -> int:
        """Checks that run at once (``max_concurrent_verifications``, else the CPU count)."""
        return self._concurrency

    @property
    def queue_depth(self) -> int:
        """Checks waiting for a free slot."""
        return self._waiting

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Hold one slot for the block; ``ServiceUnavailable`` (503) when the queue is full."""
        if self._slots.locked() and self._waiting >= self._max_queue:
            raise errors.ServiceUnavailable(
                "Too many single sign-on answers are being checked right now, please retry in a moment",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._slots.release()
