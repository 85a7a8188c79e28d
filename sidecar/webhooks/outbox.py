"""The durable outbox for fire-and-forget web hooks (``response.ignore``).

Kratos sends these from a goroutine and loses them on a restart (kratos#652). Here a flow writes
the prepared call to SQL and answers; workers in every replica claim due deliveries with a lease
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, SQLite's write lock), so two sidecars never send the
same delivery at once, and a delivery whose sidecar died is claimed again when its lease runs out.
Each attempt carries ``Idempotency-Key`` (the delivery id, the same on every retry) and
``Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<key>.<body>">`` with
``webhooks.signing_secret``. A failure (transport error, timeout, a non-2xx answer) is retried
with exponential backoff; after ``webhooks.max_attempts`` the delivery is ``dead`` and stays
visible in the admin API (``/admin/webhooks/deliveries?status=dead``), which can retry it.
Delivery is at least once: a sidecar killed after the receiver answered but before it recorded
the answer sends again on its next lease, with the same key, so receivers dedupe on it. A database
that is away when the answer comes (a PostgreSQL restart) is no such case: the worker keeps the
outcome and records it first once the store answers again (an accepted delivery is never recorded
as failed, nor handed back to be sent again).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Literal, Protocol

from sidecar import errors
from sidecar.audit import AuditLog
from sidecar.webhooks.runner import PreparedCall, WebHookRunner

log = logging.getLogger("sidecar.webhooks")

SETTLE_AT_STOP = 5.0
"""Seconds ``OutboxWorker.stop`` gives the store to take the outcomes it missed (then the lease decides)."""

DeliveryStatus = Literal["queued", "processing", "delivered", "dead"]
STATUSES: tuple[DeliveryStatus, ...] = ("queued", "processing", "delivered", "dead")
SIGNATURE_HEADER = "Webhook-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Delivery:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes | None
    timeout_seconds: float
    hook_id: str | None = None
    flow_id: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    status: DeliveryStatus = "queued"
    attempts: int = 0
    last_error: str | None = None
    last_status_code: int | None = None
    next_attempt_at: datetime = field(default_factory=utcnow)
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    delivered_at: datetime | None = None

    def call(self) -> PreparedCall:
        return PreparedCall(
            self.method, self.url, list(self.headers), self.body, self.hook_id, self.timeout_seconds
        )


class OutboxStore(Protocol):
    """The outbox table (``storage/sql/webhook_outbox.py``)."""

    async def enqueue(self, delivery: Delivery) -> None: ...

    async def claim_batch(self, worker_id: str, *, limit: int, lease: timedelta) -> list[Delivery]:
        """Due deliveries (queued and due, or processing with an expired lease), now ours."""
        ...

    async def mark_delivered(self, delivery_id: uuid.UUID, worker_id: str, *, status_code: int) -> bool: ...

    async def mark_failed(
        self,
        delivery_id: uuid.UUID,
        worker_id: str,
        *,
        error: str,
        status_code: int | None,
        retry_at: datetime | None,
    ) -> bool:
        """``retry_at`` None: the delivery is dead."""
        ...

    async def release(self, delivery_ids: Sequence[uuid.UUID], worker_id: str) -> int: ...

    async def release_held(self, worker_id: str) -> int:
        """Every claim of ``worker_id`` back in the queue, unsent: claims it lost track of (a claim's
        answer lost to an outage), given back when it has nothing in flight."""
        ...

    async def retry(self, delivery_id: uuid.UUID) -> bool:
        """A dead (or queued) delivery is due now, with a fresh attempt budget."""
        ...

    async def list(self, *, status: DeliveryStatus | None, limit: int) -> list[Delivery]: ...

    async def get(self, delivery_id: uuid.UUID) -> Delivery | None: ...

    async def count_by_status(self) -> dict[str, int]: ...


def sign(secret: str, timestamp: int, key: str, body: bytes | None) -> str:
    """The ``v1`` value: hex HMAC-SHA256 over ``<timestamp>.<idempotency key>.<body>``."""
    message = f"{timestamp}.{key}.".encode() + (body or b"")
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class OutboxDispatcher:
    """The flows' ``Dispatcher``: a fire-and-forget call becomes one outbox row, nothing more."""

    def __init__(self, store: OutboxStore, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._store = store
        self._clock = clock

    async def dispatch(self, call: PreparedCall, *, flow_id: str) -> None:
        now = self._clock()
        await self._store.enqueue(
            Delivery(
                method=call.method,
                url=call.url,
                headers=list(call.headers),
                body=call.body,
                timeout_seconds=call.timeout,
                hook_id=call.hook_id,
                flow_id=flow_id,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    signing_secret: str
    max_attempts: int = 10
    initial_backoff: float = 1.0
    max_backoff: float = 600.0
    interval: float = 1.0
    lease: float = 45.0
    """Longer than any hook's timeout: a claim outlives one attempt, so no replica sends it twice."""

    def backoff(self, attempts: int) -> float:
        """Exponential, capped, with ±20 % jitter so replicas do not retry in step."""
        base = min(self.max_backoff, self.initial_backoff * 2.0 ** max(attempts - 1, 0))
        return float(base * random.uniform(0.8, 1.2))  # noqa: S311


class OutboxWorker:
    def __init__(
        self,
        store: OutboxStore,
        runner: WebHookRunner,
        policy: OutboxPolicy,
        *,
        clock: Callable[[], datetime] = utcnow,
        audit: AuditLog | None = None,
    ) -> None:
        self._store = store
        self._runner = runner
        self._audit = audit or AuditLog.off()
        self._policy = policy
        self._clock = clock
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: set[uuid.UUID] = set()
        # Outcomes of attempts made that the store could not record (it was away), oldest first:
        # recorded before the next claim.
        self._owed: list[Callable[[], Awaitable[object]]] = []
        self._strays = False  # a claim may be ours that nobody here works on: handed back first

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.run_once()
            except errors.ServiceUnavailable:
                # The store monitor logs the outage once; a traceback per tick would bury it.
                log.debug("web hook outbox: database unavailable, retrying")
                busy = False
            except Exception:
                log.exception("web hook outbox: a batch failed; retrying")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._policy.interval)

    async def run_once(self) -> bool:
        # One delivery per claim: a killed sidecar holds at most one, for one lease.
        lease = timedelta(seconds=self._policy.lease)
        await self._settle()
        try:
            batch = await self._store.claim_batch(self.worker_id, limit=1, lease=lease)
        except errors.ServiceUnavailable:
            self._strays = True  # the claim may have committed with its answer lost
            raise
        self._held = {d.id for d in batch}
        for delivery in batch:
            record = await self._deliver(delivery)
            self._held.discard(delivery.id)  # attempted: never handed back to be sent again
            try:
                await record()
            except BaseException:
                self._owed.append(record)
                raise
        return bool(batch)

    async def _settle(self) -> None:
        """Record the outcomes the store missed, oldest first, then hand back claims nobody here
        works on (nothing is in flight); raises while the store is still away."""
        while self._owed:
            await self._owed[0]()
            del self._owed[0]
        if self._strays:
            await self._store.release_held(self.worker_id)
            self._strays = False

    async def _deliver(self, delivery: Delivery) -> Callable[[], Awaitable[object]]:
        """One attempt; returns the store call that records its outcome."""
        key = str(delivery.id)
        timestamp = int(time.time())
        headers = [
            (IDEMPOTENCY_HEADER, key),
            (
                SIGNATURE_HEADER,
                f"t={timestamp},v1={sign(self._policy.signing_secret, timestamp, key, delivery.body)}",
            ),
        ]
        status_code: int | None = None
        try:
            response = await self._runner.send(delivery.call(), headers)
        except errors.SidecarError as exc:
            error = exc.reason or exc.message
        else:
            status_code = response.status_code
            if 200 <= status_code < 300:
                return partial(
                    self._store.mark_delivered, delivery.id, self.worker_id, status_code=status_code
                )
            error = f"the receiver answered {status_code}"
        attempts = delivery.attempts + 1
        retry_at = None
        if attempts < self._policy.max_attempts:
            retry_at = self._clock() + timedelta(seconds=self._policy.backoff(attempts))
        else:
            log.warning(
                "web hook delivery %s to %s is dead after %d attempts: %s", key, delivery.url, attempts, error
            )
            # No request behind it (the worker's own loop): no client address, agent or request id.
            self._audit.emit(
                "webhook.dead_lettered",
                None,
                delivery_id=delivery.id,
                hook_id=delivery.hook_id,
                attempts=attempts,
                status_code=status_code,
            )
        return partial(
            self._store.mark_failed,
            delivery.id,
            self.worker_id,
            error=error,
            status_code=status_code,
            retry_at=retry_at,
        )

    async def stop(self) -> None:
        """Hand back what this worker claimed but did not try, so another takes it at once; the
        outcomes the store missed get one more try (``SETTLE_AT_STOP``)."""
        if self._owed or self._strays:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(SETTLE_AT_STOP):
                    await self._settle()
        if self._held:
            await self._store.release(list(self._held), self.worker_id)
            self._held.clear()
