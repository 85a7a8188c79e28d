"""Three ``sidecar serve`` replicas on one PostgreSQL and one Redis, behind a real nginx.

What three pods must agree on: a session made on one works on all; a logout or an admin
revocation on one is refused by all within the documented bound (docs/SCALING.md: 1 s); one-time
codes and brute-force counters are consumed and counted once across replicas; each courier
message goes out once although every replica runs a courier worker; migrations run once when all
three start at the same moment; a rolling restart under load loses no request.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import _pg_exec
from tests.fleet import Fleet, fleet

PASSWORD = "Fleet-Password-1"
REVOCATION_BOUND = 1.0  # seconds; docs/SCALING.md


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_url: str) -> Iterator[Fleet]:
    name = f"sidecar_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(postgres_server, f'CREATE DATABASE "{name}"'))
    dsn = postgres_server.rsplit("/", 1)[0] + "/" + name
    prefix = f"sidecar-test:{uuid.uuid4().hex[:10]}:"
    try:
        with fleet(tmp_path_factory.mktemp("fleet"), dsn, {"url": redis_url, "key_prefix": prefix}) as f:
            yield f
    finally:
        asyncio.run(_pg_exec(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_drop_keys(redis_url, prefix))


async def _drop_keys(url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def _identity(f: Fleet, email: str) -> str:
    body = {
        "schema_id": "default",
        "traits": {"email": email},
        "credentials": {"password": {"config": {"password": PASSWORD}}},
    }
    async with httpx.AsyncClient() as c:
        r = await c.post(f"{f.replicas[0].admin_url}/admin/identities", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _login(url: str, email: str, password: str = PASSWORD) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as c:
        flow = (await c.get("/.auth/self-service/login/api")).json()
        body = {"method": "password", "identifier": email, "password": password}
        return await c.post(f"/.auth/self-service/login?flow={flow['id']}", json=body)


async def _token(f: Fleet, url: str | None = None) -> tuple[str, str, str]:
    email = f"{uuid.uuid4().hex[:10]}@example.test"
    identity = await _identity(f, email)
    r = await _login(url or f.replicas[0].public_url, email)
    assert r.status_code == 200, r.text
    return identity, r.json()["session"]["id"], r.json()["session_token"]


async def _app(url: str, token: str) -> int:
    async with httpx.AsyncClient() as c:
        return (await c.get(f"{url}/app/x", headers={"X-Session-Token": token})).status_code


def _email_of(f: Fleet) -> str:
    return f"{uuid.uuid4().hex[:10]}@example.test"


def test_migrations_ran_once_when_three_started_together(shared: Fleet) -> None:
    """Each replica started with ``--migrate`` at the same moment on an empty database: the
    advisory lock lets one migrate, the others wait and find the schema current."""
    logs = [r.log() for r in shared.replicas]
    migrated = [log for log in logs if "database migrated from empty to" in log]
    current = [log for log in logs if "database schema already current" in log]
    assert len(migrated) == 1 and len(current) == 2, logs

    async def versions() -> list[str]:
        conn = await asyncpg.connect(shared.dsn)
        try:
            return [row[0] for row in await conn.fetch("SELECT version_num FROM alembic_version")]
        finally:
            await conn.close()

    assert len(asyncio.run(versions())) == 1


async def test_a_session_made_on_one_replica_works_on_all(shared: Fleet) -> None:
    identity, _, token = await _token(shared)
    async with httpx.AsyncClient() as c:
        for r in shared.replicas:
            who = await c.get(f"{r.public_url}/.auth/sessions/whoami", headers={"X-Session-Token": token})
            assert who.status_code == 200 and who.json()["identity"]["id"] == identity
            assert await _app(r.public_url, token) == 200
        assert (await c.get(f"{shared.url}/app/x", headers={"X-Session-Token": token})).status_code == 200


async def _refused_everywhere_after(shared: Fleet, token: str, revoke: Any) -> float:
    """Seconds after the revocation returned until every replica refuses the session, timed by
    when each request was *sent* (a slow answer on a busy machine is not a slow revocation)."""
    for r in shared.replicas:  # every replica has the session in its cache now
        assert await _app(r.public_url, token) == 200
    await revoke()
    started = time.monotonic()  # the revocation is stored and published: the bound starts here
    last_accepted = 0.0
    pending = {r.index for r in shared.replicas}

    async def ask(r: Any) -> tuple[int, float, int]:
        sent = time.monotonic() - started
        return r.index, sent, await _app(r.public_url, token)

    while pending:
        for index, sent, status in await asyncio.gather(
            *(ask(r) for r in shared.replicas if r.index in pending)
        ):
            if status == 401:
                pending.discard(index)
            else:
                assert status == 200, status
                last_accepted = max(last_accepted, sent)
        assert time.monotonic() - started < 5, f"replicas {pending} still serve a revoked session"
        await asyncio.sleep(0.01)
    return last_accepted


async def test_logout_and_admin_revocation_are_refused_everywhere_within_the_bound(shared: Fleet) -> None:
    _, _, token = await _token(shared)

    async def logout() -> None:
        async with httpx.AsyncClient() as c:
            r = await c.request(
                "DELETE",
                f"{shared.replicas[0].public_url}/.auth/self-service/logout/api",
                json={"session_token": token},
            )
            assert r.status_code == 204, r.text

    assert await _refused_everywhere_after(shared, token, logout) <= REVOCATION_BOUND

    _, session_id, token = await _token(shared, shared.replicas[2].public_url)

    async def admin_revoke() -> None:
        async with httpx.AsyncClient() as c:
            r = await c.delete(f"{shared.replicas[1].admin_url}/admin/sessions/{session_id}")
            assert r.status_code == 204, r.text

    assert await _refused_everywhere_after(shared, token, admin_revoke) <= REVOCATION_BOUND


async def test_a_recovery_code_submitted_to_three_replicas_at_once_succeeds_once(shared: Fleet) -> None:
    for _ in range(3):
        identity = await _identity(shared, _email_of(shared))
        async with httpx.AsyncClient() as c:
            r = await c.post(
                f"{shared.replicas[0].admin_url}/admin/recovery/code",
                json={"identity_id": identity, "flow_type": "api"},
            )
            assert r.status_code == 201, r.text
            flow_id = r.json()["recovery_link"].split("flow=")[1]
            code = r.json()["recovery_code"]
            answers = await asyncio.gather(
                *(
                    c.post(
                        f"{rep.public_url}/.auth/self-service/recovery?flow={flow_id}",
                        json={"method": "code", "code": code},
                    )
                    for rep in shared.replicas
                )
            )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(200) == 1, [(a.status_code, a.text[:200]) for a in answers]
        assert all(s < 500 for s in statuses), statuses


async def test_failed_logins_count_once_across_replicas(shared: Fleet) -> None:
    """Failures spread round-robin over three replicas reach the throttle as one count: a
    per-replica counter would allow three times the free failures."""
    email = _email_of(shared)
    await _identity(shared, email)
    statuses: list[int] = []
    for attempt in range(12):
        replica = shared.replicas[attempt % 3]
        statuses.append((await _login(replica.public_url, email, "Wrong-Password-1")).status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429, statuses
    # security.rate_limit.free_failures (5) counted fleet-wide: the 429 comes after 6 or 7 attempts,
    # or a little later on a slow machine, where an attempt may arrive after the 1 s, then 2 s delay
    # has passed. Per-replica counters (5 each) would allow 15 and answer no 429 within these 12.
    assert len(statuses) <= 9, statuses
    assert set(statuses[:-1]) == {400}, statuses


async def test_each_courier_message_goes_out_once(shared: Fleet) -> None:
    """Recovery mails requested through nginx (so spread over replicas); all three run a courier
    worker polling every 100 ms, and each message still reaches SMTP exactly once."""
    emails = [_email_of(shared) for _ in range(9)]
    for email in emails:
        await _identity(shared, email)
    async with httpx.AsyncClient(base_url=shared.url) as c:

        async def request_mail(email: str) -> None:
            flow = (await c.get("/.auth/self-service/recovery/api")).json()
            r = await c.post(
                f"/.auth/self-service/recovery?flow={flow['id']}", json={"method": "code", "email": email}
            )
            assert r.status_code == 200, r.text

        await asyncio.gather(*(request_mail(e) for e in emails))
    for email in emails:
        await asyncio.to_thread(shared.smtp.mailbox.wait_for, email)
    await asyncio.sleep(1.5)  # fifteen more polls by the three workers: any double send shows now
    sent = Counter(str(m["To"]) for m in shared.smtp.mailbox.messages if str(m["To"]) in emails)
    assert sent == dict.fromkeys(emails, 1), sent


async def test_a_rolling_restart_under_load_loses_no_request(shared: Fleet) -> None:
    """SIGTERM each replica in turn (then start it again, ready before the next) while clients
    keep sending proxied and API requests through nginx: every request gets its 200."""
    _, _, token = await _token(shared)
    stop = asyncio.Event()
    outcomes: Counter[str] = Counter()

    async def client(path: str) -> None:
        async with httpx.AsyncClient(base_url=shared.url, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = await c.get(path, headers={"X-Session-Token": token})
                    outcomes[f"{path} {r.status_code}"] += 1
                except httpx.HTTPError as exc:
                    outcomes[f"{path} {type(exc).__name__}"] += 1

    clients = [asyncio.create_task(client(p)) for p in ("/app/a", "/app/b", "/.auth/sessions/whoami")]
    try:
        await asyncio.sleep(0.5)
        for replica in shared.replicas:
            assert await asyncio.to_thread(replica.stop) == 0, replica.log()[-2000:]
            replica.start()
            await asyncio.to_thread(replica.wait_ready)
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    bad = {k: v for k, v in outcomes.items() if not k.endswith(" 200")}
    assert not bad, outcomes
    assert sum(outcomes.values()) > 100, outcomes
