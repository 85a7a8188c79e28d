"""OutboxWorker on the SQL outbox (SQLite and PostgreSQL) when the database goes away just as the
receiver accepts a delivery: the answer is recorded once the store is back, as delivered, and the
receiver gets the delivery once (not recorded as a failed attempt and sent again, nor left claimed
until the lease runs out and sent again then); a claim whose answer was lost is handed back."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import httpx
import pytest

from sidecar.errors import ServiceUnavailable
from sidecar.storage.sql.database import SqlDatabase
from sidecar.webhooks.outbox import (
    IDEMPOTENCY_HEADER,
    OutboxDispatcher,
    OutboxPolicy,
    OutboxWorker,
)
from sidecar.webhooks.runner import PreparedCall
from tests.outage import Outage


class Receiver:
    """Accepts every delivery (200), counting them by idempotency key; with ``how``, the database
    goes away (``down`` or ``blip``) as it answers the first one."""

    def __init__(self, outage: Outage, how: str | None) -> None:
        self.outage = outage
        self.how = how
        self.keys: list[str] = []

    async def send(self, call: PreparedCall, extra_headers: Sequence[tuple[str, str]] = ()) -> httpx.Response:
        if self.how is not None and not self.keys:
            setattr(self.outage, self.how, True)
        self.keys.append(dict(extra_headers)[IDEMPOTENCY_HEADER])
        return httpx.Response(200)


@pytest.mark.parametrize("how", ["down", "blip"])
async def test_an_accepted_delivery_is_recorded_once_the_database_answers(
    database: SqlDatabase, how: str
) -> None:
    store = database.outbox
    call = PreparedCall("POST", "http://127.0.0.1:1/hook", [], b"{}", "after-registration", 1.0)
    await OutboxDispatcher(store).dispatch(call, flow_id="flow-1")
    outage = Outage(store)
    receiver = Receiver(outage, how)
    policy = OutboxPolicy(signing_secret="s" * 32, initial_backoff=0.01, max_backoff=0.01)
    worker = OutboxWorker(outage, receiver, policy)  # type: ignore[arg-type]
    with contextlib.suppress(ServiceUnavailable):
        await worker.run_once()
    outage.down = False
    for _ in range(5):  # the store answers again; a few more ticks, past any retry's backoff
        with contextlib.suppress(ServiceUnavailable):
            await worker.run_once()
    [delivery] = await store.list(status=None, limit=10)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 1, None)
    assert receiver.keys == [str(delivery.id)]  # once


async def test_a_claim_whose_answer_was_lost_is_handed_back(database: SqlDatabase) -> None:
    """The connection fails after the claim committed: the delivery is the worker's though it never
    saw it; the next tick hands it back and sends it, not the lease's end (45 s by default)."""
    store = database.outbox
    call = PreparedCall("POST", "http://127.0.0.1:1/hook", [], b"{}", "after-registration", 1.0)
    await OutboxDispatcher(store).dispatch(call, flow_id="flow-1")
    outage = Outage(store)
    outage.claim_lost = True
    receiver = Receiver(outage, None)
    worker = OutboxWorker(outage, receiver, OutboxPolicy(signing_secret="s" * 32))  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable):
        await worker.run_once()
    assert await worker.run_once()
    [delivery] = await store.list(status=None, limit=10)
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert receiver.keys == [str(delivery.id)]
