"""Store outages in the log: one line when a store goes down (with the reason), one when it is back.

Requests that meet a down store answer 503 and log nothing above debug: a flood of identical
warnings (or a traceback from every background loop, every second) hides the one line that says
what is wrong. Instead each worker checks its stores every few seconds (the readiness checks:
the database, its schema version, Redis) and logs the changes of state only.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from sidecar import errors

log = logging.getLogger("sidecar.storage")

Check = Callable[[], Awaitable[None]]
INTERVAL = 2.0


def describe(exc: BaseException) -> str:
    """The root cause in one line: the driver's own message, without the layers wrapping it."""
    root: BaseException = exc
    seen = {id(root)}
    while True:
        nxt = getattr(root, "orig", None) or root.__cause__
        if not isinstance(nxt, BaseException) or id(nxt) in seen:
            break
        root = nxt
        seen.add(id(root))
    text = str(root).strip()
    if not text:
        return exc.message if isinstance(exc, errors.SidecarError) and root is exc else type(root).__name__
    # asyncpg through SQLAlchemy's adapter: "<class 'asyncpg.exceptions.X'>: the message".
    return re.sub(r"^<class '[\w.]+'>: ", "", text.splitlines()[0])


class StoreMonitor:
    """Runs ``checks`` every ``interval`` seconds and logs each store's transitions."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        interval: float = INTERVAL,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_check: Callable[[str, bool], None] | None = None,
    ) -> None:
        """``on_check(store, up)`` after every check (``Metrics.store_up``: the alerting signal)."""
        self.checks = dict(checks)
        self.interval = interval
        self.timeout = timeout
        self.clock = clock
        self.down_since: dict[str, float] = {}
        self.on_check = on_check

    async def check_once(self) -> None:
        await asyncio.gather(*(self._check(name, check) for name, check in self.checks.items()))

    async def _check(self, name: str, check: Check) -> None:
        try:
            await asyncio.wait_for(check(), self.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a check is an outage of that store
            if self.on_check is not None:
                self.on_check(name, False)
            if name not in self.down_since:
                self.down_since[name] = self.clock()
                timed_out = isinstance(exc, TimeoutError)
                cause = f"no answer within {self.timeout:g} s" if timed_out else describe(exc)
                log.error("%s unavailable: %s", name, cause, extra={"store": name})
            return
        if self.on_check is not None:
            self.on_check(name, True)
        since = self.down_since.pop(name, None)
        if since is not None:
            log.warning("%s available again after %.0f s", name, self.clock() - since, extra={"store": name})

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)
