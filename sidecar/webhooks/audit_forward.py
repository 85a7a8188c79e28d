"""``log.audit.webhook``: each security audit event becomes one web hook outbox delivery.

A SIEM subscribes by URL and gets every event (or those in ``events``) as the same JSON object as
the audit log line, POSTed with the outbox's ``Webhook-Signature`` and ``Idempotency-Key``, retried
with backoff and dead-lettered like any outbox delivery (``hook_id`` ``log.audit.webhook`` in
``/admin/webhooks/deliveries``).

``AuditLog.emit`` is synchronous (flows call it in the middle of a request), so the row is written
by a task on the running loop; ``drain`` awaits what is still pending before the database pool
closes. An event whose row cannot be written (the database is down) is logged and lost for the
web hook; the audit log line is still written.

Recursion: when an audit delivery itself dies, the worker emits ``webhook.dead_lettered`` about
it; that event is written to the audit log but NOT forwarded, since its delivery would go to the
same receiver that is failing and could die in turn, forever. Dead letters of other web hooks are
forwarded as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from sidecar.webhooks.outbox import Delivery, OutboxStore, utcnow

log = logging.getLogger("sidecar.webhooks")

AUDIT_HOOK_ID = "log.audit.webhook"


class OutboxAuditForwarder:
    def __init__(
        self,
        store: OutboxStore,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        events: Iterable[str] | None = None,
        timeout: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._url = url
        self._headers = [("Content-Type", "application/json"), *(headers or {}).items()]
        self._events = frozenset(events) if events is not None else None
        self._timeout = timeout
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    def wants(self, event: str, entry: Mapping[str, object]) -> bool:
        if self._events is not None and event not in self._events:
            return False
        return not (event == "webhook.dead_lettered" and entry.get("hook_id") == AUDIT_HOOK_ID)

    def forward(self, event: str, entry: dict[str, object], body: bytes) -> None:
        if not self.wants(event, entry):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # every caller runs on the server's loop; say so if one does not
            log.error("audit event %s not sent to log.audit.webhook: no event loop", event)
            return
        task = loop.create_task(self._enqueue(event, body))
        self._pending.add(task)  # a reference, or the task may be collected before it runs
        task.add_done_callback(self._pending.discard)

    async def _enqueue(self, event: str, body: bytes) -> None:
        now = self._clock()
        delivery = Delivery(
            method="POST",
            url=self._url,
            headers=list(self._headers),
            body=body,
            timeout_seconds=self._timeout,
            hook_id=AUDIT_HOOK_ID,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        try:
            await self._store.enqueue(delivery)
        except Exception:
            log.exception("audit event %s not queued for log.audit.webhook", event)

    async def drain(self) -> None:
        """Wait for the rows still being written (at shutdown, before the pool closes)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
