"""The web hook outbox store on SQLite and PostgreSQL (``storage/sql/webhook_outbox.py``): claims
are exclusive, a lease that runs out makes a delivery claimable again, failures retry or die, and
a dead delivery can be retried."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sidecar.storage.sql.database import SqlDatabase
from sidecar.webhooks.outbox import Delivery


def delivery(n: int) -> Delivery:
    return Delivery(
        method="POST",
        url=f"http://127.0.0.1:9/{n}",
        headers=[("Content-Type", "application/json")],
        body=b'{"n":%d}' % n,
        timeout_seconds=5,
        hook_id="h",
        flow_id="f",
    )


async def test_claims_are_exclusive_and_leases_expire(database: SqlDatabase) -> None:
    store = database.outbox
    for n in range(6):
        await store.enqueue(delivery(n))
    batches = await asyncio.gather(
        *(store.claim_batch(f"w{i}", limit=2, lease=timedelta(seconds=30)) for i in range(4))
    )
    claimed = [d.id for batch in batches for d in batch]
    assert len(claimed) == 6 and len(set(claimed)) == 6
    assert await store.claim_batch("late", limit=10, lease=timedelta(seconds=30)) == []
    # A worker that died: its lease runs out and another takes the delivery.
    await store.enqueue(delivery(99))
    [held] = await store.claim_batch("dead-worker", limit=1, lease=timedelta(milliseconds=1))
    await asyncio.sleep(0.05)
    [again] = await store.claim_batch("next", limit=1, lease=timedelta(seconds=30))
    assert again.id == held.id and again.body == b'{"n":99}' and again.headers == held.headers
    # The dead worker can no longer finish what is no longer its.
    assert not await store.mark_delivered(held.id, "dead-worker", status_code=200)
    assert await store.mark_delivered(again.id, "next", status_code=204)
    done = await store.get(again.id)
    assert done is not None and done.status == "delivered" and done.attempts == 1 and done.delivered_at


async def test_failures_retry_then_die_and_can_be_retried(database: SqlDatabase) -> None:
    store = database.outbox
    await store.enqueue(delivery(1))
    [d] = await store.claim_batch("w", limit=1, lease=timedelta(seconds=30))
    past = d.next_attempt_at - timedelta(seconds=1)
    assert await store.mark_failed(
        d.id, "w", error="the receiver answered 500", status_code=500, retry_at=past
    )
    [d] = await store.claim_batch("w", limit=1, lease=timedelta(seconds=30))
    assert d.attempts == 1 and d.last_status_code == 500
    assert await store.mark_failed(d.id, "w", error="connection refused", status_code=None, retry_at=None)
    assert [x.id for x in await store.list(status="dead", limit=10)] == [d.id]
    assert await store.claim_batch("w", limit=1, lease=timedelta(seconds=30)) == []
    assert (await store.count_by_status()) == {"dead": 1}
    assert await store.retry(d.id)
    [back] = await store.claim_batch("w", limit=1, lease=timedelta(seconds=30))
    assert back.id == d.id and back.attempts == 0
