"""The courier worker end to end: store (SQLite and PostgreSQL) -> worker -> real SMTP server."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from sidecar.config.model import Courier as CourierConfig
from sidecar.courier.model import Message
from sidecar.courier.service import Courier
from sidecar.courier.smtp import SmtpSender
from sidecar.courier.templates import Templates
from sidecar.courier.worker import CourierWorker
from sidecar.errors import ServiceUnavailable
from sidecar.storage.sql.courier_store import SqlCourierStore
from sidecar.storage.sql.database import SqlDatabase
from tests.courier.conftest import SmtpServer, courier_store
from tests.outage import Outage

MakeConfig = Callable[..., CourierConfig]
FAST = {"backoff_base": timedelta(milliseconds=50), "backoff_cap": timedelta(milliseconds=200)}


def make_worker(store: SqlCourierStore, config: CourierConfig, worker_id: str, **kw: object) -> CourierWorker:
    sender = SmtpSender(config.smtp, timeout=2)
    options: dict[str, object] = {**FAST, "send_timeout": timedelta(seconds=3), **kw}
    return CourierWorker(store, sender, config, worker_id, **options)  # type: ignore[arg-type]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def enqueue_codes(store: SqlCourierStore, n: int) -> list[str]:
    courier = Courier(store, Templates())
    ids = [
        await courier.send("login_code_valid", f"user{i}@example.test", {"login_code": f"{i:06d}"})
        for i in range(n)
    ]
    return [str(i) for i in ids]


async def test_send_renders_enqueues_and_delivers(
    store: SqlCourierStore, smtp_server: SmtpServer, make_courier_config: MakeConfig
) -> None:
    courier = Courier(store, Templates())
    mid = await courier.send("verification_code_valid", "ann@example.test", {"verification_code": "731904"})
    worker = make_worker(store, make_courier_config(smtp_server.uri), "w1")
    assert await worker.run_once() == 1
    [mail] = smtp_server.mailbox.messages
    assert mail["Subject"] == "Please verify your email address"
    assert mail["To"] == "ann@example.test"
    assert mail["Message-ID"] == f"<{mid}@example.test>"
    text = mail.get_body(("plain",))
    assert text is not None and "731904" in str(text.get_content())
    got = await store.get(mid)
    assert got is not None and (got.status, got.send_count) == ("sent", 1)
    assert await worker.run_once() == 0


async def test_smtp_down_retries_with_backoff_then_delivers(
    store: SqlCourierStore, smtp_down: SmtpServer, make_courier_config: MakeConfig
) -> None:
    ids = await enqueue_codes(store, 3)
    # A backoff long enough that a busy machine cannot finish the first pass after it is over.
    config = make_courier_config(smtp_down.uri, message_retries=50)
    worker = make_worker(
        store, config, "w1", backoff_base=timedelta(seconds=1), backoff_cap=timedelta(seconds=4)
    )
    assert await worker.run_once() == 3
    assert await worker.run_once() == 0  # every message waits out its backoff
    queued = await store.list(page_size=10, status="queued")
    assert len(queued) == 3 and all(m.send_count == 1 and m.last_error for m in queued)
    await asyncio.sleep(1.2)
    assert await worker.run_once() == 3  # second attempt, still down: backoff doubles
    smtp_down.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))

    async def all_sent() -> bool:
        return (await store.count_by_status())["sent"] == 3

    await eventually(all_sent)
    stop.set()
    await runner
    assert sorted(smtp_down.mailbox.message_ids()) == sorted(f"<{i}@example.test>" for i in ids)
    for m in await store.list(page_size=10):
        assert m.send_count >= 3
        assert [d.status for d in m.dispatches][-1] == "success"
        assert {d.status for d in m.dispatches[:-1]} == {"failed"}


async def test_abandoned_after_max_retries(
    store: SqlCourierStore, smtp_down: SmtpServer, make_courier_config: MakeConfig
) -> None:
    [mid] = await enqueue_codes(store, 1)
    worker = make_worker(store, make_courier_config(smtp_down.uri, message_retries=2), "w1")
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))

    async def abandoned() -> bool:
        return (await store.count_by_status())["abandoned"] == 1

    await eventually(abandoned)
    stop.set()
    await runner
    [m] = await store.list(page_size=1)
    assert str(m.id) == mid and m.send_count == 3  # the first attempt plus two retries
    assert [d.status for d in m.dispatches] == ["failed"] * 3


async def test_permanent_refusal_is_abandoned_at_once(
    store: SqlCourierStore, smtp_server: SmtpServer, make_courier_config: MakeConfig
) -> None:
    smtp_server.mailbox.refuse.add("user0@example.test")
    await enqueue_codes(store, 1)
    worker = make_worker(store, make_courier_config(smtp_server.uri), "w1")
    assert await worker.run_once() == 1
    [m] = await store.list(page_size=1)
    assert (m.status, m.send_count) == ("abandoned", 1)
    assert m.last_error is not None and "550" in m.last_error


async def test_killed_worker_messages_are_delivered_exactly_once(
    store: SqlCourierStore, smtp_server: SmtpServer, make_courier_config: MakeConfig
) -> None:
    ids = await enqueue_codes(store, 6)
    # Worker A claims everything with a short lease, then "dies" without sending anything.
    dead = await store.claim_batch("worker-a", limit=100, lease=timedelta(milliseconds=500))
    assert len(dead) == 6
    survivor = make_worker(store, make_courier_config(smtp_server.uri), "worker-b", batch_size=4)
    assert await survivor.run_once() == 0  # leases still held
    await asyncio.sleep(0.6)
    while await survivor.run_once():
        pass
    counts = collections.Counter(smtp_server.mailbox.message_ids())
    assert counts == {f"<{i}@example.test>": 1 for i in ids}
    assert not await store.mark_sent(dead[0].id, "worker-a")  # A's late report is ignored


@pytest.mark.parametrize("n_workers", [2, 3])
async def test_concurrent_workers_never_duplicate(
    database: SqlDatabase, dsn: str, smtp_server: SmtpServer, make_courier_config: MakeConfig, n_workers: int
) -> None:
    ids = await enqueue_codes(courier_store(database, dsn), 30)
    config = make_courier_config(smtp_server.uri)
    # Separate databases objects: separate connection pools, as separate processes would have.
    dbs = [SqlDatabase(dsn) for _ in range(n_workers)]
    workers = [make_worker(courier_store(db, dsn), config, f"w{i}", batch_size=3) for i, db in enumerate(dbs)]
    stop = asyncio.Event()
    runners = [asyncio.create_task(w.run(stop)) for w in workers]
    store = courier_store(database, dsn)

    async def all_sent() -> bool:
        return (await store.count_by_status())["sent"] == 30

    try:
        await eventually(all_sent, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*runners)
        for db in dbs:
            await db.close()
    counts = collections.Counter(smtp_server.mailbox.message_ids())
    assert counts == {f"<{i}@example.test>": 1 for i in ids}


class BlockingSender:
    """Blocks on the first message until released; records what it sent."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.started.set()
        await self.release.wait()
        self.sent.append(message)


async def test_stop_finishes_in_flight_send_and_releases_the_rest(
    store: SqlCourierStore, make_courier_config: MakeConfig
) -> None:
    await enqueue_codes(store, 4)
    sender = BlockingSender()
    worker = CourierWorker(store, sender, make_courier_config("smtp://127.0.0.1:1/"), "w1", batch_size=4)
    batch = asyncio.create_task(worker.run_once())
    await sender.started.wait()
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waits for the send in flight
    sender.release.set()
    await stopping
    assert await batch == 1
    counts = await store.count_by_status()
    assert (counts["sent"], counts["queued"], counts["processing"]) == (1, 3, 0)
    assert all(m.claimed_by is None for m in await store.list(page_size=10))
    assert await worker.run_once() == 0  # a stopped worker claims nothing


def test_lease_must_outlast_a_send(store: SqlCourierStore, make_courier_config: MakeConfig) -> None:
    with pytest.raises(ValueError, match="lease"):
        CourierWorker(
            store,
            BlockingSender(),
            make_courier_config("smtp://x/"),
            "w",
            lease=timedelta(seconds=5),
            send_timeout=timedelta(seconds=10),
        )


def test_backoff_doubles_and_is_capped(store: SqlCourierStore, make_courier_config: MakeConfig) -> None:
    worker = CourierWorker(store, BlockingSender(), make_courier_config("smtp://x/"), "w")
    assert [worker.backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert worker.backoff(40) == timedelta(minutes=10)


async def test_cancelled_worker_releases_its_batch(
    store: SqlCourierStore, make_courier_config: MakeConfig
) -> None:
    await enqueue_codes(store, 3)
    sender = BlockingSender()
    worker = CourierWorker(store, sender, make_courier_config("smtp://127.0.0.1:1/"), "w1", batch_size=3)
    batch = asyncio.create_task(worker.run_once())
    await sender.started.wait()
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    counts = await store.count_by_status()
    assert (counts["queued"], counts["processing"]) == (3, 0)


async def test_database_outage_is_not_a_traceback_per_tick(
    make_courier_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """The store monitor logs an outage once; the worker's loop only retries, quietly."""
    import logging

    from tests.conftest import free_port

    database = SqlDatabase(f"postgres://postgres@127.0.0.1:{free_port()}/gone")
    try:
        worker = make_worker(database.courier, make_courier_config("smtp://127.0.0.1:1"), "w-outage")
        stop = asyncio.Event()
        with caplog.at_level(logging.DEBUG, "sidecar.courier"):
            task = asyncio.create_task(worker.run(stop))
            await asyncio.sleep(0.5)
            stop.set()
            await task
    finally:
        await database.close()
    mine = [r for r in caplog.records if r.name == "sidecar.courier"]
    assert len(mine) >= 3  # it kept trying, every tick
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in mine)


async def test_a_persistent_error_is_logged_once_until_it_clears(
    make_courier_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A schema dropped under the worker (an error that is no outage): one traceback, not one a tick."""
    import logging

    class Flaky:
        """Just the part of a store an empty queue needs, failing as PostgreSQL does without tables."""

        fail = True

        async def claim_batch(self, *args: object, **kwargs: object) -> list[Message]:
            if self.fail:
                raise RuntimeError('relation "courier_messages" does not exist')
            return []

    store = Flaky()
    config = make_courier_config("smtp://127.0.0.1:1")
    worker = CourierWorker(store, SmtpSender(config.smtp), config, "w-broken")  # type: ignore[arg-type]
    stop = asyncio.Event()
    with caplog.at_level(logging.DEBUG, "sidecar.courier"):
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(0.4)
        store.fail = False
        await asyncio.sleep(0.2)
        stop.set()
        await task
    mine = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sidecar.courier"]
    assert mine == [
        ("ERROR", "courier worker w-broken: batch failed (retrying every tick)"),
        ("WARNING", "courier worker w-broken: batches succeed again"),
    ]


class DownAfterFirst:
    """Sends (or, with ``fail_first``, fails) the first message, and the database goes away then."""

    def __init__(self, outage: Outage, *, fail_first: bool = False) -> None:
        self.outage = outage
        self.fail_first = fail_first
        self.tripped = False
        self.sent: list[str] = []

    async def send(self, message: Message) -> None:
        if not self.tripped:
            self.tripped = True
            self.outage.down = True
            if self.fail_first:
                raise ConnectionRefusedError("the mail server is down too")
        self.sent.append(str(message.id))


async def run_through(worker: CourierWorker, outage: Outage, store: SqlCourierStore, ids: list[str]) -> None:
    """The worker's loop through the outage and after it, until every message in ``ids`` was sent."""
    stop = asyncio.Event()
    runner = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(0.3)  # a few ticks with the database away
        outage.down = False

        async def all_sent() -> bool:
            return (await store.count_by_status())["sent"] == len(ids)

        # Well within the two-minute lease: what was claimed comes back by itself, not by expiry.
        await eventually(all_sent, timeout=10)
    finally:
        stop.set()
        await runner


@pytest.mark.parametrize("first", ["sent", "failed"])
async def test_a_database_outage_mid_batch_loses_and_doubles_nothing(
    store: SqlCourierStore, make_courier_config: MakeConfig, first: str
) -> None:
    """The database goes away after the first send of a batch: that attempt's outcome is recorded
    once the store answers again (a sent message is not sent again at the lease's end), and the
    unsent rest, which could not be handed back, is sent at once then, not two minutes later."""
    ids = await enqueue_codes(store, 4)
    outage = Outage(store)
    sender = DownAfterFirst(outage, fail_first=first == "failed")
    config = make_courier_config("smtp://127.0.0.1:1/")
    worker = CourierWorker(outage, sender, config, "w1", batch_size=4, **FAST)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable):
        await worker.run_once()
    assert len(sender.sent) == (1 if first == "sent" else 0)
    await run_through(worker, outage, store, ids)
    assert sorted(sender.sent) == sorted(ids)  # each exactly once
    messages = {str(m.id): m for m in await store.list(page_size=10)}
    assert all(m.status == "sent" and m.claimed_by is None for m in messages.values())
    # The failed first attempt counts: recorded with its error before the retry that went out.
    tried_twice = [m for m in messages.values() if m.send_count == 2]
    if first == "failed":
        [again] = tried_twice
        assert [d.status for d in again.dispatches] == ["failed", "success"]
    else:
        assert not tried_twice


async def test_a_claim_whose_answer_was_lost_is_handed_back(
    store: SqlCourierStore, make_courier_config: MakeConfig
) -> None:
    """The connection fails after the claim committed: the rows are the worker's though it never
    saw them; it hands them back once the store answers, so they go out now, not after the lease."""
    ids = await enqueue_codes(store, 3)
    outage = Outage(store)
    outage.claim_lost = True
    sender = BlockingSender()
    sender.release.set()
    worker = CourierWorker(outage, sender, make_courier_config("smtp://127.0.0.1:1/"), "w1")  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable):
        await worker.run_once()
    assert (await store.count_by_status())["processing"] == 3
    while await worker.run_once():
        pass
    assert sorted(str(m.id) for m in sender.sent) == sorted(ids)
    assert (await store.count_by_status())["sent"] == 3


async def test_stop_records_what_the_store_missed(
    store: SqlCourierStore, make_courier_config: MakeConfig
) -> None:
    """Stopped during the outage, after it ended: the sent message is recorded as sent and the rest
    handed back at stop, not left claimed (to be sent again, or late, when the lease runs out)."""
    await enqueue_codes(store, 3)
    outage = Outage(store)
    sender = DownAfterFirst(outage)
    worker = CourierWorker(outage, sender, make_courier_config("smtp://127.0.0.1:1/"), "w1", batch_size=3)  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable):
        await worker.run_once()
    outage.down = False
    await worker.stop()
    counts = await store.count_by_status()
    assert (counts["sent"], counts["queued"], counts["processing"]) == (1, 2, 0)
