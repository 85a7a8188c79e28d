"""The courier store contract, on SQLite and PostgreSQL (the ``dsn`` fixture)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from sidecar.courier.model import Message
from sidecar.storage.sql.courier_store import SqlCourierStore, dispatches, messages
from sidecar.storage.sql.database import SqlDatabase
from tests.courier.conftest import courier_store

LEASE = timedelta(minutes=1)


def make_message(recipient: str = "ann@example.test", **kw: object) -> Message:
    fields: dict[str, object] = {
        "subject": "Hello",
        "body": "text body",
        "html_body": "<p>html body</p>",
        "template_type": "stub",
        "template_data": {"code": "123456"},
    }
    fields.update(kw)
    return Message(recipient=recipient, **fields)  # type: ignore[arg-type]


async def test_enqueue_and_get_round_trip(store: SqlCourierStore) -> None:
    stored = await store.enqueue(make_message())
    got = await store.get(stored.id)
    assert got is not None
    assert (got.recipient, got.subject, got.body, got.html_body) == (
        "ann@example.test",
        "Hello",
        "text body",
        "<p>html body</p>",
    )
    assert (got.status, got.send_count, got.template_type, got.template_data) == (
        "queued",
        0,
        "stub",
        {"code": "123456"},
    )
    assert got.created_at.tzinfo is not None and got.next_attempt_at.tzinfo is not None
    assert got.dispatches == ()
    assert await store.get(uuid.uuid4()) is None


@pytest.mark.parametrize(
    ("recipient", "subject"),
    [
        pytest.param("ann@example.test\r\nBcc: eve@evil.test", "Hello", id="crlf-recipient"),
        pytest.param("ann@example.test\nBcc: eve@evil.test", "Hello", id="lf-recipient"),
        pytest.param("ann@example.test", "Hi\r\nBcc: eve@evil.test", id="crlf-subject"),
        pytest.param("ann@example.test", "Hi\rthere", id="cr-subject"),
        pytest.param("ann@example.test", "Hi\x00there", id="nul-subject"),
        pytest.param("ann@example.test", "Hi\u2028there", id="line-separator-subject"),
        pytest.param("Ann <ann@example.test>", "Hello", id="display-name-recipient"),
        pytest.param("", "Hello", id="empty-recipient"),
    ],
)
async def test_enqueue_refuses_header_injection(store: SqlCourierStore, recipient: str, subject: str) -> None:
    with pytest.raises(ValueError):
        await store.enqueue(make_message(recipient, subject=subject))
    assert (await store.count_by_status())["queued"] == 0


async def test_claim_is_exclusive_and_lease_expiry_hands_over(store: SqlCourierStore) -> None:
    ids = {(await store.enqueue(make_message(f"u{i}@example.test"))).id for i in range(3)}
    first = await store.claim_batch("worker-a", limit=10, lease=timedelta(milliseconds=300))
    assert {m.id for m in first} == ids
    assert all(m.status == "processing" and m.claimed_by == "worker-a" for m in first)
    assert await store.claim_batch("worker-b", limit=10, lease=LEASE) == []
    await asyncio.sleep(0.4)  # worker-a "died": its lease runs out
    second = await store.claim_batch("worker-b", limit=10, lease=LEASE)
    assert {m.id for m in second} == ids
    # The dead worker's late outcome must not overwrite the new holder's.
    assert not await store.mark_sent(first[0].id, "worker-a")
    assert await store.mark_sent(first[0].id, "worker-b")
    got = await store.get(first[0].id)
    assert got is not None and got.status == "sent" and got.send_count == 1 and got.claimed_by is None
    assert [d.status for d in got.dispatches] == ["success"]


async def test_claim_honours_limit_and_due_time(store: SqlCourierStore) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await store.enqueue(make_message(next_attempt_at=later))
    for i in range(4):
        await store.enqueue(make_message(f"u{i}@example.test"))
    assert len(await store.claim_batch("w", limit=3, lease=LEASE)) == 3
    assert len(await store.claim_batch("w", limit=3, lease=LEASE)) == 1
    assert await store.claim_batch("w", limit=3, lease=LEASE) == []


async def test_mark_failed_requeues_then_abandons(store: SqlCourierStore) -> None:
    msg = await store.enqueue(make_message())
    assert len(await store.claim_batch("w", limit=1, lease=LEASE)) == 1
    retry_at = datetime.now(UTC) + timedelta(seconds=2)  # far enough for a loaded machine
    assert await store.mark_failed(msg.id, "w", error="boom", retry_at=retry_at)
    got = await store.get(msg.id)
    assert got is not None
    assert (got.status, got.send_count, got.last_error, got.claimed_by) == ("queued", 1, "boom", None)
    assert abs((got.next_attempt_at - retry_at).total_seconds()) < 0.001
    assert await store.claim_batch("w", limit=1, lease=LEASE) == []  # not due yet
    await asyncio.sleep(max(0.0, (retry_at - datetime.now(UTC)).total_seconds()) + 0.05)
    [again] = await store.claim_batch("w", limit=1, lease=LEASE)
    assert again.send_count == 1
    assert await store.mark_failed(msg.id, "w", error="boom again", retry_at=None)
    got = await store.get(msg.id)
    assert got is not None and got.status == "abandoned" and got.send_count == 2
    assert [(d.status, d.error) for d in got.dispatches] == [("failed", "boom"), ("failed", "boom again")]
    assert await store.claim_batch("w", limit=1, lease=LEASE) == []


async def test_release_and_release_expired(store: SqlCourierStore) -> None:
    a = await store.enqueue(make_message("a@example.test"))
    b = await store.enqueue(make_message("b@example.test"))
    await store.claim_batch("w", limit=2, lease=timedelta(milliseconds=200))
    assert await store.release([a.id], "someone-else") == 0
    assert await store.release([a.id], "w") == 1
    await asyncio.sleep(0.25)
    assert await store.release_expired() == 1
    for mid in (a.id, b.id):
        got = await store.get(mid)
        assert got is not None and (got.status, got.send_count, got.claimed_by) == ("queued", 0, None)


async def test_release_held_gives_back_every_claim_of_one_worker(store: SqlCourierStore) -> None:
    for i in range(3):
        await store.enqueue(make_message(f"m{i}@example.test"))
    mine = {m.id for m in await store.claim_batch("w", limit=2, lease=LEASE)}
    [theirs] = await store.claim_batch("v", limit=1, lease=LEASE)
    assert await store.release_held("w") == 2
    assert await store.release_held("w") == 0
    for m in await store.list(page_size=10):
        if m.id in mine:
            assert (m.status, m.send_count, m.claimed_by, m.claimed_until) == ("queued", 0, None, None)
        else:
            assert (m.id, m.status, m.claimed_by) == (theirs.id, "processing", "v")


async def test_list_pages_newest_first_with_filters_and_counts(store: SqlCourierStore) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    made = [
        await store.enqueue(make_message(f"u{i % 2}@example.test", created_at=base + timedelta(seconds=i)))
        for i in range(7)
    ]
    newest_first = [m.id for m in reversed(made)]
    page1 = await store.list(page_size=3)
    page2 = await store.list(page_size=3, after=(page1[-1].created_at, page1[-1].id))
    page3 = await store.list(page_size=3, after=(page2[-1].created_at, page2[-1].id))
    assert [m.id for m in page1 + page2 + page3] == newest_first
    u0 = await store.list(page_size=100, recipient="u0@example.test")
    assert [m.id for m in u0] == [m.id for m in reversed(made) if m.recipient == "u0@example.test"]
    [claimed] = await store.claim_batch("w", limit=1, lease=LEASE)
    assert [m.id for m in await store.list(page_size=10, status="processing")] == [claimed.id]
    assert await store.count_by_status() == {"queued": 6, "processing": 1, "sent": 0, "abandoned": 0}


async def test_same_created_at_pages_by_id(store: SqlCourierStore) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    ids = sorted([(await store.enqueue(make_message(created_at=at))).id for _ in range(5)], reverse=True)
    seen: list[uuid.UUID] = []
    after = None
    while page := await store.list(page_size=2, after=after):
        seen += [m.id for m in page]
        after = (page[-1].created_at, page[-1].id)
    assert seen == ids


async def test_concurrent_claims_never_overlap(database: SqlDatabase, dsn: str) -> None:
    """Several workers on separate connection pools hammer one queue: each message goes to one."""
    for i in range(60):
        await courier_store(database, dsn).enqueue(make_message(f"u{i}@example.test"))
    others = [SqlDatabase(dsn) for _ in range(3)]
    try:
        stores = [courier_store(db, dsn) for db in others]
        # Each worker has its connection before any claims: on a loaded machine a first connect can
        # take longer than one worker needs to drain the whole queue alone.
        ready = asyncio.Barrier(len(stores))

        async def drain(worker: str, store: SqlCourierStore) -> list[uuid.UUID]:
            await store.list(page_size=1)
            await ready.wait()
            got: list[uuid.UUID] = []
            while batch := await store.claim_batch(worker, limit=4, lease=LEASE):
                got += [m.id for m in batch]
                await asyncio.sleep(0.005)  # the others' claims interleave with this worker's
            return got

        results = await asyncio.gather(*(drain(f"w{i}", s) for i, s in enumerate(stores)))
    finally:
        for db in others:
            await db.close()
    claimed = [mid for r in results for mid in r]
    assert len(claimed) == 60 and len(set(claimed)) == 60
    assert sum(1 for r in results if r) >= 2, "the work should have been shared"


async def test_migration_matches_the_store_tables(database: SqlDatabase) -> None:
    def columns(conn: sa.Connection) -> dict[str, set[str]]:
        inspector = sa.inspect(conn)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in (messages.name, dispatches.name)}

    async with database.engine.connect() as conn:
        found = await conn.run_sync(columns)
    assert found == {messages.name: set(messages.c.keys()), dispatches.name: set(dispatches.c.keys())}


async def test_an_operator_retries_and_abandons(store: SqlCourierStore) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    waiting = await store.enqueue(make_message("wait@example.test", next_attempt_at=later))
    assert await store.claim_batch("w", limit=5, lease=LEASE) == []
    assert await store.retry(waiting.id)  # due now
    [claimed] = await store.claim_batch("w", limit=5, lease=LEASE)
    assert claimed.id == waiting.id
    # Being sent: neither retry nor abandon may touch it.
    assert not await store.retry(waiting.id)
    assert not await store.abandon(waiting.id, "no")
    assert await store.mark_failed(waiting.id, "w", error="smtp down", retry_at=None)
    assert not await store.abandon(waiting.id, "already")
    assert await store.retry(waiting.id)
    got = await store.get(waiting.id)
    assert got is not None
    assert (got.status, got.send_count, got.last_error) == ("queued", 1, "smtp down")  # attempts kept
    assert await store.abandon(waiting.id, "abandoned by an operator")
    got = await store.get(waiting.id)
    assert got is not None and (got.status, got.last_error) == ("abandoned", "abandoned by an operator")
    assert await store.claim_batch("w", limit=5, lease=LEASE) == []
    assert await store.mark_sent(waiting.id, "w") is False
    assert not await store.retry(uuid.uuid4()) and not await store.abandon(uuid.uuid4(), "x")
    sent = await store.enqueue(make_message("sent@example.test"))
    await store.claim_batch("w", limit=5, lease=LEASE)
    assert await store.mark_sent(sent.id, "w")
    assert not await store.retry(sent.id) and not await store.abandon(sent.id, "x")
