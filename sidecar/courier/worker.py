"""The courier worker: claims due messages, sends them, records the outcome.

Every process may run one; the store's leases keep workers (and replicas) from sending the same
message twice. A failed attempt is retried with exponential backoff (1s, 2s, 4s, ... capped) for
``courier.message_retries`` retries, so at most ``1 + message_retries`` attempts, then abandoned.

The database may go away in the middle of a batch (a PostgreSQL restart or failover). The worker then
still knows what it did: the outcome of an attempt the store could not record is kept and recorded
first once the store answers again (else a message that went out stays claimed until its lease runs
out and is sent a second time), and the claims it could not hand back (the unsent rest of the batch,
or a claim whose answer was lost) are given back then, before it claims anything new (else they wait
out the lease: two minutes without the recovery code a user is waiting for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from functools import partial

from sidecar.config.model import Courier as CourierConfig
from sidecar.courier.model import Message, utcnow
from sidecar.courier.sender import PermanentDeliveryError, Sender
from sidecar.courier.store import CourierStore
from sidecar.errors import ServiceUnavailable
from sidecar.tracing import Tracing

log = logging.getLogger("sidecar.courier")

SETTLE_AT_STOP = 5.0
"""Seconds ``stop`` gives the store to take what the worker still owes it (then the leases decide)."""


def default_worker_id() -> str:
    """Host, pid and a random suffix: unique per worker even across restarts with a reused pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class CourierWorker:
    def __init__(
        self,
        store: CourierStore,
        sender: Sender,
        config: CourierConfig,
        worker_id: str | None = None,
        *,
        batch_size: int = 10,
        lease: timedelta = timedelta(minutes=2),
        send_timeout: timedelta = timedelta(seconds=30),
        backoff_base: timedelta = timedelta(seconds=1),
        backoff_cap: timedelta = timedelta(minutes=10),
        clock: Callable[[], datetime] = utcnow,
        tracing: Tracing | None = None,
    ) -> None:
        if lease <= send_timeout:
            raise ValueError("the courier lease must outlast one send, or two workers could send a message")
        self.store = store
        self.sender = sender
        self.config = config
        self.worker_id = worker_id or default_worker_id()
        self.batch_size = batch_size
        self.lease = lease
        self.send_timeout = send_timeout
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._clock = clock
        self._tracing = tracing or Tracing.off()
        self._stopping = asyncio.Event()
        self._busy = asyncio.Lock()
        # Store calls that failed and must be made before the next claim (``_settle``): the outcomes
        # of attempts made, oldest first, then (``_strays``) handing back claims nobody here works on.
        self._owed: list[Callable[[], Awaitable[object]]] = []
        self._strays = False

    def backoff(self, attempts: int) -> timedelta:
        """Delay before retry number ``attempts`` (1-based): base * 2^(attempts-1), capped."""
        return min(self.backoff_cap, self.backoff_base * (1 << min(attempts - 1, 30)))

    async def run_once(self) -> int:
        """Claim one batch and process it; returns how many messages were attempted."""
        async with self._busy:
            if self._stopping.is_set():
                return 0
            await self._settle()
            try:
                batch = await self.store.claim_batch(self.worker_id, limit=self.batch_size, lease=self.lease)
            except ServiceUnavailable:
                # The connection may have failed after the claim committed: rows would be ours
                # with nobody working on them.
                self._strays = True
                raise
            attempted = 0
            try:
                for message in batch:
                    # Stop before a send that could outlive the lease: another worker may claim the
                    # message the moment the lease runs out, and then both would deliver it.
                    lease_left = (message.claimed_until or self._clock()) - self._clock()
                    if self._stopping.is_set() or lease_left <= self.send_timeout:
                        break
                    record = await self._attempt(message)
                    attempted += 1  # tried: never handed back unsent, whatever the store says next
                    await self._record(record)
            finally:
                # Stopping, cancelled or failed mid-batch: hand the unsent rest back now rather than
                # leaving it stuck until the lease runs out.
                rest = [m.id for m in batch[attempted:]]
                if rest:
                    try:
                        await asyncio.shield(self.store.release(rest, self.worker_id))
                    except Exception:
                        self._strays = True  # given back by ``_settle`` once the store answers
            return attempted

    async def _settle(self) -> None:
        """Make the store calls that failed, before claiming more: the outcomes first (a message
        recorded as sent is not handed back), then every claim of this worker, none in flight."""
        recorded = released = 0
        while self._owed:
            await self._owed[0]()
            del self._owed[0]
            recorded += 1
        if self._strays:
            released = await self.store.release_held(self.worker_id)
            self._strays = False
        if recorded or released:
            log.info(
                "courier worker %s: the store answers again: %d outcome(s) recorded, %d claim(s) handed back",
                self.worker_id,
                recorded,
                released,
            )

    async def _record(self, record: Callable[[], Awaitable[object]]) -> None:
        try:
            await record()
        except BaseException:
            self._owed.append(record)  # the attempt happened: its outcome is recorded later
            raise

    async def _attempt(self, message: Message) -> Callable[[], Awaitable[object]]:
        """Send ``message``; returns the store call that records the outcome."""
        attrs = {
            "sidecar.courier.message_id": str(message.id),
            "sidecar.courier.template": message.template_type,
        }
        with self._tracing.span("sidecar.courier.send", attrs) as span:
            try:
                await asyncio.wait_for(self.sender.send(message), self.send_timeout.total_seconds())
            except Exception as exc:
                if span is not None:
                    span.set_attribute("sidecar.courier.result", "failed")
                    span.set_attribute("error.type", type(exc).__name__)
                return self._failed(message, exc)
            if span is not None:
                span.set_attribute("sidecar.courier.result", "sent")
        return partial(self._mark_sent, message.id)

    async def _mark_sent(self, message_id: uuid.UUID) -> None:
        if not await self.store.mark_sent(message_id, self.worker_id):
            log.warning("courier message %s was sent after its lease was taken over", message_id)

    def _failed(self, message: Message, exc: Exception) -> Callable[[], Awaitable[object]]:
        """Log the failed attempt; returns the store call that requeues or abandons the message."""
        attempts = message.send_count + 1
        error = f"{type(exc).__name__}: {exc}"[:2000]
        permanent = isinstance(exc, PermanentDeliveryError)
        if permanent or attempts > self.config.message_retries:
            log.error("courier message %s abandoned after %d attempt(s): %s", message.id, attempts, error)
            return partial(self.store.mark_failed, message.id, self.worker_id, error=error, retry_at=None)
        retry_at = self._clock() + self.backoff(attempts)
        log.warning(
            "courier message %s failed (attempt %d), retry at %s: %s", message.id, attempts, retry_at, error
        )
        return partial(self.store.mark_failed, message.id, self.worker_id, error=error, retry_at=retry_at)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Process batches until ``stop_event`` (or ``stop()``); sleeps ``worker_interval`` when idle."""
        interval = self.config.worker_interval.total_seconds()
        failing: str | None = None  # the error of the last failed batch, logged once until a success
        while not (stop_event.is_set() or self._stopping.is_set()):
            try:
                attempted = await self.run_once()
            except ServiceUnavailable:
                # The store monitor logs the outage once; a line (or a traceback) per tick would bury it.
                log.debug("courier worker %s: database unavailable, retrying", self.worker_id)
                attempted = 0
            except Exception as exc:  # anything else must not kill the worker either; retry next tick
                error = f"{type(exc).__name__}: {exc}"
                if error != failing:
                    log.exception("courier worker %s: batch failed (retrying every tick)", self.worker_id)
                    failing = error
                attempted = 0
            else:
                if failing is not None:
                    log.warning("courier worker %s: batches succeed again", self.worker_id)
                    failing = None
            if attempted:
                continue
            await self._wait(stop_event, interval)

    async def _wait(self, stop_event: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(stop_event.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def stop(self) -> None:
        """Finish the send in flight, release the rest of the batch, and stop ``run``; what the store
        could not take during an outage gets one more try (``SETTLE_AT_STOP``)."""
        self._stopping.set()
        async with self._busy:
            if self._owed or self._strays:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(SETTLE_AT_STOP):
                        await self._settle()
