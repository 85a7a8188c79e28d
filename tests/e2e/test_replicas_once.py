"""Once across three replicas: web hook deliveries, TOTP steps, WebAuthn challenges.

Three ``sidecar serve`` processes on one PostgreSQL database and one Redis (tests/fleet.py). Each
runs a web hook outbox worker (every 100 ms, 6 s lease) and each may receive any submission, so
whatever must happen once is decided by the shared stores, not by a process:
- every outbox delivery reaches the receiver once while three workers poll the same table; when a
  replica is killed (SIGKILL) in the middle of the queue, the one delivery it was sending is the
  only one that may arrive twice (at-least-once: the same ``Idempotency-Key`` again, after its
  lease), and nothing is lost;
- one TOTP code sent at the same moment to the three replicas, each in its own login flow of the
  same session: exactly one success (the time step is taken with one atomic ``SET NX``);
- one signed WebAuthn (passkey) assertion sent at the same moment to the three replicas: exactly
  one session (the challenge is taken once).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from tests.api.public.mfa import aal2_login_flow, enrol_totp, node, oathtool, tok
from tests.fleet import Fleet, fleet_on_shared_servers
from tests.receiver import Answer, Received, Receiver, http_receiver
from tests.strategies.webauthn_device import SoftAuthenticator

PASSWORD = "Fleet-Password-1"
SIGNING_SECRET = "fleet-webhook-signing-secret-0123"


class SlowReceiver:
    """Answers 200 after ``delay`` seconds, so the outbox queue stays busy while a replica dies."""

    def __init__(self) -> None:
        self.delay = 0.0
        self._lock = threading.Lock()

    def __call__(self, request: Received) -> Answer:
        with self._lock:
            delay = self.delay
        return Answer(200, delay=delay)


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, SlowReceiver]]:
    slow = SlowReceiver()
    with http_receiver(slow) as r:
        yield r, slow


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: str,
    redis_url: str,
    receiver: tuple[Receiver, SlowReceiver],
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-once")
    with fleet_on_shared_servers(
        tmp,
        postgres_server,
        redis_url,
        log={
            "level": "info",
            "audit": {
                "enabled": True,
                "path": str(tmp / "audit.jsonl"),
                "webhook": {
                    "url": f"{receiver[0].url}/siem",
                    "events": ["identity.created"],
                    "timeout": "2s",
                },
            },
        },
        webhooks={"signing_secret": SIGNING_SECRET, "worker_interval": "100ms", "lease": "6s"},
        selfservice={
            "flows": {"recovery": {"enabled": True}},
            "methods": {
                "code": {"enabled": True},
                "totp": {"enabled": True, "config": {"issuer": "Fleet"}},
                "passkey": {"enabled": True, "config": {"rp": {"display_name": "Fleet"}}},
            },
        },
    ) as f:
        yield f


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


async def _password_login(c: httpx.AsyncClient, email: str) -> str:
    flow = (await c.get("/.auth/self-service/login/api")).json()
    r = await c.post(
        f"/.auth/self-service/login?flow={flow['id']}",
        json={"method": "password", "identifier": email, "password": PASSWORD},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["session_token"])


def _email() -> str:
    return f"{uuid.uuid4().hex[:10]}@example.test"


async def test_one_totp_code_sent_to_three_replicas_at_once_succeeds_once(shared: Fleet) -> None:
    email = _email()
    await _identity(shared, email)
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as c:
        secret = await enrol_totp(c, await _password_login(c, email))
        token = await _password_login(c, email)  # a new session: aal1, it needs the code
    # A step the enrolment did not use: the next one (within the default skew of one step).
    code = oathtool(secret, (time.time() // 30 + 1) * 30 + 1)
    clients = [httpx.AsyncClient(base_url=r.public_url, timeout=30) for r in shared.replicas]
    try:
        flows = [await aal2_login_flow(c, token) for c in clients]  # one flow per replica
        answers = await asyncio.gather(
            *(
                c.post(
                    f"/.auth/self-service/login?flow={flow['id']}",
                    json={"method": "totp", "totp_code": code},
                    headers=tok(token),
                )
                for c, flow in zip(clients, flows, strict=True)
            )
        )
    finally:
        for c in clients:
            await c.aclose()
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, [(a.status_code, a.text[:300]) for a in answers]
    assert all(400 <= s < 500 for s in statuses if s != 200), statuses
    winner = next(a for a in answers if a.status_code == 200).json()
    assert winner["session"]["authenticator_assurance_level"] == "aal2"


async def test_one_webauthn_assertion_sent_to_three_replicas_at_once_signs_in_once(shared: Fleet) -> None:
    device = SoftAuthenticator(origin=shared.url)  # the origin users see: the load balancer
    async with httpx.AsyncClient(base_url=shared.url, timeout=30) as c:
        flow = (await c.get("/.auth/self-service/registration/api")).json()
        options = json.loads(node(flow, "passkey_create_data")["attributes"]["value"])["credentialOptions"]
        body = {
            "method": "passkey",
            "traits": {"email": _email()},
            "passkey_register": device.create(options),
        }
        r = await c.post(f"/.auth/self-service/registration?flow={flow['id']}", json=body)
        assert r.status_code == 200, r.text
        flow = (await c.get("/.auth/self-service/login/api")).json()
    answer = device.get(json.loads(node(flow, "passkey_challenge")["attributes"]["value"]))
    async with httpx.AsyncClient(timeout=30) as c:
        answers = await asyncio.gather(
            *(
                c.post(
                    f"{r.public_url}/.auth/self-service/login?flow={flow['id']}",
                    json={"method": "passkey", "passkey_login": answer},
                )
                for r in shared.replicas
            )
        )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1, [(a.status_code, a.text[:300]) for a in answers]
    assert all(s < 500 for s in statuses), statuses
    assert sum("session_token" in a.text for a in answers) == 1


async def _batch(f: Fleet, emails: list[str]) -> list[str]:
    items = [{"create": {"schema_id": "default", "traits": {"email": e}}} for e in emails]
    async with httpx.AsyncClient(timeout=60) as c:
        r = await c.patch(f"{f.replicas[0].admin_url}/admin/identities", json={"identities": items})
    assert r.status_code == 200, r.text
    ids = [str(x.get("identity")) for x in r.json()["identities"]]
    assert all(x["action"] == "create" for x in r.json()["identities"]), r.text
    return ids


async def _rows(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, status, claimed_by, attempts FROM webhook_deliveries")
    finally:
        await conn.close()
    return [dict(r) for r in rows]


def _arrivals(receiver: Receiver, identity_ids: list[str]) -> Counter[str]:
    """Idempotency-Key -> arrivals, for the deliveries about ``identity_ids``."""
    wanted = set(identity_ids)
    keys: Counter[str] = Counter()
    for request in list(receiver.received):
        if json.loads(request.body).get("identity_id") in wanted:
            keys[request.headers["idempotency-key"]] += 1
    return keys


async def _all_delivered(
    f: Fleet, receiver: Receiver, identity_ids: list[str], timeout: float
) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while True:
        keys = _arrivals(receiver, identity_ids)
        rows = await _rows(f.dsn)
        done = {str(r["id"]) for r in rows if r["status"] == "delivered"}
        if len(keys) == len(identity_ids) and set(keys) <= done:
            return keys
        assert time.monotonic() < deadline, (len(keys), Counter(r["status"] for r in rows))
        await asyncio.sleep(0.1)


async def test_each_webhook_delivery_goes_out_once_even_when_a_replica_dies_mid_queue(
    shared: Fleet, receiver: tuple[Receiver, SlowReceiver]
) -> None:
    hook, slow = receiver
    # Three workers polling every 100 ms, one shared table: every delivery exactly once.
    ids = await _batch(shared, [_email() for _ in range(20)])
    keys = await _all_delivered(shared, hook, ids, timeout=60)
    await asyncio.sleep(1.0)  # thirty more polls: a second send would show now
    keys = _arrivals(hook, ids)
    assert len(keys) == 20 and set(keys.values()) == {1}, keys
    for request in hook.received:
        assert request.headers["webhook-signature"].startswith("t=")

    # Now a slow receiver keeps a queue of 30; the third replica is killed while it sends.
    victim = shared.replicas[2]
    assert victim.process is not None
    pid = victim.process.pid
    slow.delay = 0.3
    try:
        ids = await _batch(shared, [_email() for _ in range(30)])
        deadline = time.monotonic() + 60
        while True:  # until the victim holds a delivery it is sending
            in_flight = {
                str(r["id"])
                for r in await _rows(shared.dsn)
                if r["status"] == "processing" and f":{pid}:" in (r["claimed_by"] or "")
            }
            if in_flight:
                break
            assert time.monotonic() < deadline, "the victim never claimed a delivery"
            await asyncio.sleep(0.02)
        # Frozen first, so what it holds cannot change while we look; then killed.
        os.kill(pid, signal.SIGSTOP)
        held = {
            str(r["id"])
            for r in await _rows(shared.dsn)
            if r["status"] == "processing" and f":{pid}:" in (r["claimed_by"] or "")
        }
        await asyncio.to_thread(victim.kill)
        assert len(held) <= 1, held  # one delivery per claim
        keys = await _all_delivered(shared, hook, ids, timeout=90)  # the lease (6 s) runs out first
        await asyncio.sleep(1.0)
        keys = _arrivals(hook, ids)
        twice = {k for k, n in keys.items() if n > 1}
        assert len(keys) == 30, keys  # nothing lost
        assert max(keys.values()) <= 2, keys
        assert twice <= held, (twice, held)  # only the delivery in flight in the dead replica
    finally:
        slow.delay = 0.0
        victim.start()
        await asyncio.to_thread(victim.wait_ready)
    print(f"killed replica held {len(held)} delivery(ies); arrived twice: {len(twice)}")
