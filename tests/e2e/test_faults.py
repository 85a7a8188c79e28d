"""Faults under steady mixed load on three replicas behind nginx (docs/SCALING.md, "Faults").

One fleet on a private PostgreSQL (initdb/pg_ctl) and a private Redis (append-only file, as a
persistent Redis), both on free ports and stopped by PID; load through nginx: logins,
registrations followed by a recovery mail, proxied requests. Then, in turn: PostgreSQL stopped
for 3 s and started again; Redis killed (SIGKILL) for 3 s and started again; SMTP stopped for 3 s;
the upstream slow. For each: no 500, every 503 carries ``Retry-After``, service comes back by
itself (no replica restarted), and nothing is lost or doubled: every registration answered 200
exists exactly once, every recovery request answered 200 produced exactly one mail, and no courier
message is left claimed (one that was, went out again or late when its lease ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.fleet import Fleet, fleet
from tests.private_pg import private_postgres
from tests.proxy.harness import Proc, binary, spawn

PASSWORD = "Faults-Password-1"
OUTAGE = 3.0  # seconds each store stays down
RECOVERY_BOUND = 20.0  # seconds after the store is back until every kind of request succeeds


@contextlib.contextmanager
def persistent_redis(tmp: Path) -> Iterator[tuple[list[Proc], int, list[str]]]:
    port = free_port()
    root = tmp / "redis"
    root.mkdir()
    args = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
    procs = [spawn(args, port)]
    try:
        yield procs, port, args
    finally:
        for p in procs:
            p.stop()


@dataclass
class Load:
    fleet: Fleet
    token: str
    phase: str = "steady"
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # (phase, kind) -> statuses; 503s without Retry-After are counted apart.
    seen: dict[tuple[str, str], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[tuple[float, str, str, str]] = field(default_factory=list)  # (time, phase, kind, status)
    registered: list[str] = field(default_factory=list)
    recovery_sent: list[str] = field(default_factory=list)

    def record(self, kind: str, response: httpx.Response | None, error: str = "") -> bool:
        if response is None:
            status = error
        else:
            status = str(response.status_code)
            if response.status_code == 503 and "retry-after" not in response.headers:
                status = "503 without Retry-After"
        self.seen[(self.phase, kind)][status] += 1
        ok = response is not None and response.status_code < 400
        if not ok:
            self.failures.append((time.monotonic(), self.phase, kind, status))
        return ok

    async def _call(
        self, c: httpx.AsyncClient, kind: str, method: str, url: str, **kw: object
    ) -> httpx.Response | None:
        try:
            return await c.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            self.record(kind, None, type(exc).__name__)
            return None

    async def logins(self) -> None:
        async with httpx.AsyncClient(base_url=self.fleet.url, timeout=30) as c:
            while not self.stop.is_set():
                flow = await self._call(c, "login", "GET", "/.auth/self-service/login/api")
                if flow is None or not self.record("login", flow) or flow.status_code != 200:
                    await asyncio.sleep(0.05)
                    continue
                body = {"method": "password", "identifier": self.email, "password": PASSWORD}
                r = await self._call(
                    c, "login", "POST", f"/.auth/self-service/login?flow={flow.json()['id']}", json=body
                )
                if r is not None:
                    self.record("login", r)
                await asyncio.sleep(0.02)

    async def registrations(self) -> None:
        async with httpx.AsyncClient(base_url=self.fleet.url, timeout=30) as c:
            while not self.stop.is_set():
                # Paced like the other loops: unpaced, this one took every CPU cycle the machine
                # had (a steady load, not the most a machine can do, is what the faults meet).
                await asyncio.sleep(0.02)
                email = f"{uuid.uuid4().hex[:12]}@example.test"
                flow = await self._call(c, "register", "GET", "/.auth/self-service/registration/api")
                if flow is None or not self.record("register", flow):
                    await asyncio.sleep(0.05)
                    continue
                body = {"method": "password", "password": PASSWORD, "traits": {"email": email}}
                r = await self._call(
                    c,
                    "register",
                    "POST",
                    f"/.auth/self-service/registration?flow={flow.json()['id']}",
                    json=body,
                )
                if r is None or not self.record("register", r):
                    continue
                self.registered.append(email)
                flow = await self._call(c, "recovery", "GET", "/.auth/self-service/recovery/api")
                if flow is None or not self.record("recovery", flow):
                    continue
                body = {"method": "code", "email": email}
                r = await self._call(
                    c, "recovery", "POST", f"/.auth/self-service/recovery?flow={flow.json()['id']}", json=body
                )
                if r is not None and self.record("recovery", r):
                    self.recovery_sent.append(email)

    async def proxied(self, path: str = "/app/x") -> None:
        async with httpx.AsyncClient(base_url=self.fleet.url, timeout=30) as c:
            while not self.stop.is_set():
                r = await self._call(c, "proxied", "GET", path, headers={"X-Session-Token": self.token})
                if r is not None:
                    self.record("proxied", r)
                await asyncio.sleep(0.02)

    email: str = ""


async def _wait_clean(load: Load, since: float) -> float:
    """Seconds from ``since`` until a 1.5 s stretch with no failed request of any kind."""
    while True:
        last = max([t for t, *_ in load.failures if t >= since], default=since)
        if time.monotonic() - last >= 1.5:
            return last - since
        assert time.monotonic() - since < RECOVERY_BOUND, f"not recovered: {load.failures[-5:]}"
        await asyncio.sleep(0.1)


async def test_faults_under_load(tmp_path: Path) -> None:
    with private_postgres() as pg, persistent_redis(tmp_path) as (redis_procs, redis_port, redis_args):
        redis = {"url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": "faults:"}
        shared: dict[str, Any] = {
            "session": {"cache_ttl": "1s"},
            "security": {"rate_limit": {"send_per_ip": 100000}},
            "proxy": {"timeouts": {"read": "1s"}},
        }
        with fleet(tmp_path, pg.dsn, redis, **shared) as f:
            email = f"{uuid.uuid4().hex[:12]}@example.test"
            body = {"schema_id": "default", "traits": {"email": email}}
            body["credentials"] = {"password": {"config": {"password": PASSWORD}}}
            async with httpx.AsyncClient(base_url=f.url) as c:
                assert (
                    await c.post(f"{f.replicas[0].admin_url}/admin/identities", json=body)
                ).status_code == 201
                flow = (await c.get("/.auth/self-service/login/api")).json()
                login = {"method": "password", "identifier": email, "password": PASSWORD}
                token = (await c.post(f"/.auth/self-service/login?flow={flow['id']}", json=login)).json()[
                    "session_token"
                ]
            load = Load(f, token, email=email)
            tasks = [asyncio.create_task(t) for t in (load.logins(), load.registrations(), load.proxied())]
            recovered: dict[str, float] = {}
            began: dict[str, float] = {}
            try:
                await asyncio.sleep(1.0)
                assert not load.failures, load.failures  # a clean baseline

                load.phase = "postgres restart"
                began[load.phase] = time.monotonic()
                await asyncio.to_thread(pg.stop)
                await asyncio.sleep(OUTAGE)
                await asyncio.to_thread(pg.start)
                recovered[load.phase] = await _wait_clean(load, time.monotonic())

                load.phase = "redis killed"
                began[load.phase] = time.monotonic()
                old = redis_procs[0]
                os.kill(old.pid, signal.SIGKILL)
                old.popen.wait(5)
                await asyncio.sleep(OUTAGE)
                # Same port, same append-only file.
                redis_procs[0] = await asyncio.to_thread(spawn, redis_args, redis_port)
                recovered[load.phase] = await _wait_clean(load, time.monotonic())

                load.phase = "smtp stopped"
                began[load.phase] = time.monotonic()
                await asyncio.to_thread(f.smtp.stop)
                await asyncio.sleep(OUTAGE)
                await asyncio.to_thread(f.smtp.start)
                recovered[load.phase] = await _wait_clean(load, time.monotonic())

                load.phase = "slow upstream"
                async with httpx.AsyncClient(base_url=f.url, timeout=30) as c:
                    slow = await asyncio.gather(
                        *(c.get("/slow?delay=2", headers={"X-Session-Token": token}) for _ in range(10))
                    )
                    fast = await c.get("/slow?delay=0.1", headers={"X-Session-Token": token})
                assert {r.status_code for r in slow} == {504}, [r.status_code for r in slow]
                assert fast.status_code == 200
                load.phase = "after"
                await asyncio.sleep(1.0)
            finally:
                load.stop.set()
                await asyncio.gather(*tasks)

            report = {f"{p} / {k}": dict(v) for (p, k), v in sorted(load.seen.items())}
            # How long users met errors, from the fault's start to the last failed request.
            seen_for = {
                p: round(max([t for t, phase, *_ in load.failures if phase == p], default=b) - b, 2)
                for p, b in began.items()
            }
            print("fault outcomes:", report, "errors seen for (s):", seen_for, "after restore:", recovered)
            for (phase, kind), statuses in load.seen.items():
                assert set(statuses) <= {"200", "204", "503"}, (phase, kind, report)
                if phase in ("steady", "smtp stopped", "slow upstream", "after"):
                    assert set(statuses) <= {"200", "204"}, (phase, kind, report)
            assert any("503" in v for (p, _), v in load.seen.items() if p == "postgres restart"), report
            assert any("503" in v for (p, _), v in load.seen.items() if p == "redis killed"), report

            # Nothing lost or doubled.
            async with httpx.AsyncClient(base_url=f.replicas[1].admin_url) as admin:
                for registered in load.registered:
                    found = (
                        await admin.get("/admin/identities", params={"credentials_identifier": registered})
                    ).json()
                    assert len(found) == 1, (registered, found)
            for address in load.recovery_sent:
                await asyncio.to_thread(f.smtp.mailbox.wait_for, address, 1, 30)
            await asyncio.sleep(1.0)
            sent = Counter(str(m["To"]) for m in f.smtp.mailbox.messages)
            assert all(sent[a] == 1 for a in load.recovery_sent), {a: sent[a] for a in load.recovery_sent}
            # And nothing is left claimed (well before the courier's two-minute lease): a mail that
            # went out while PostgreSQL was away is recorded as sent once it is back (left claimed,
            # it would go out again when the lease ends), and the claims of a batch cut short by
            # the restart are handed back (else their mails wait for the lease).
            async with httpx.AsyncClient(base_url=f.replicas[1].admin_url) as admin:
                deadline = time.monotonic() + 10
                while claimed := (
                    await admin.get("/admin/courier/messages", params={"status": "processing"})
                ).json():
                    assert time.monotonic() < deadline, claimed
                    await asyncio.sleep(0.2)
            # At least two of each went through the faults (a machine at load 20 manages only a few).
            assert len(load.registered) >= 2 and len(load.recovery_sent) >= 2, report
