"""Fire-and-forget calls (``response.ignore``) in this process, as Kratos makes them: one attempt in
a background task, its failure only logged. The durable outbox replaces this where configured."""

from __future__ import annotations

import asyncio
import logging

from sidecar import errors
from sidecar.webhooks.runner import PreparedCall, WebHookRunner

log = logging.getLogger("sidecar.webhooks")


class BackgroundDispatcher:
    def __init__(self, runner: WebHookRunner) -> None:
        self._runner = runner
        self._tasks: set[asyncio.Task[None]] = set()

    async def dispatch(self, call: PreparedCall, *, flow_id: str) -> None:
        task = asyncio.create_task(self._deliver(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, call: PreparedCall) -> None:
        try:
            response = await self._runner.send(call)
        except errors.SidecarError as exc:
            log.warning("ignored web hook %s %s failed: %s", call.method, call.url, exc.reason)
            return
        if response.status_code >= 400:
            log.warning("ignored web hook %s %s answered %d", call.method, call.url, response.status_code)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
