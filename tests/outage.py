"""A store whose database goes away on demand, for the workers that claim work from a queue (the
courier, the web hook outbox): every call refused with the database's 503 while ``down`` is set, as
a PostgreSQL restart refuses them; with ``blip``, only the next call that records an answer
(``mark_*``: a connection lost just then); with ``claim_lost``, the next claim commits and its
answer is lost."""

from __future__ import annotations

from typing import Any

from sidecar.errors import ServiceUnavailable


class Outage:
    def __init__(self, store: Any) -> None:
        self.store = store
        self.down = False
        self.blip = False
        self.claim_lost = False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.store, name)

        async def refused_while_down(*args: Any, **kwargs: Any) -> Any:
            if self.down or (self.blip and name.startswith("mark_")):
                self.blip = False
                raise ServiceUnavailable("the database is unavailable")
            result = await call(*args, **kwargs)
            if name == "claim_batch" and self.claim_lost:
                self.claim_lost = False
                raise ServiceUnavailable("the database connection was lost")
            return result

        return refused_while_down
