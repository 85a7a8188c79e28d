"""Soak: a mixed load at a fraction of measured capacity for minutes, on N replicas behind nginx.

    .venv/bin/python bench/soak.py [--duration 600] [--warmup 120] [--fraction 0.7] [--replicas 3]

Starts what tests/fleet.py starts for the replica tests (``--replicas`` ``sidecar serve``
processes behind a real nginx, the app upstream, an aiosmtpd SMTP server) on a private
PostgreSQL (fsync on; tests/private_pg.py) and a private Redis, all on free 127.0.0.1 ports and
stopped by PID at the end. Password hashing uses the tests' cheap argon2 parameters, so logins
measure the sidecar rather than argon2; the per-address and per-IP mail limits are raised (every
request comes from one IP).

The load, through nginx, is a mix of operations: a proxied request with a session token
(``GET /app/x``), an API password login (flow + submit), a recovery mail (flow + submit; the mail
goes to the SMTP server). First a closed loop (``--probe-concurrency`` clients for
``--probe-seconds``) measures capacity in operations/s; then the soak runs an open loop at
``--fraction`` of it for ``--duration`` seconds. Printed per minute: operations, error rate, p50
and p99 latency per request; every 5 s the replicas' RSS (the process and its children). The
summary gives the error rate, the p99 spread over the minutes after ``--warmup``, the RSS growth
from the first to the last minute after warm-up, and whether every recovery request answered 200
produced exactly one mail. Results go to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.fleet import Fleet, fleet  # noqa: E402
from tests.private_pg import private_postgres  # noqa: E402
from tests.proxy.harness import binary, spawn  # noqa: E402

PASSWORD = "Soak-Password-1"
USERS = 200
MIX = (("proxied", 0.75), ("login", 0.20), ("recovery", 0.05))


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` and its descendants (``--workers`` children), in KiB."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
    return total


@contextlib.contextmanager
def private_redis(tmp: Path) -> Iterator[str]:
    port = free_port()
    root = tmp / "redis"
    root.mkdir()
    args = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    proc = spawn([*args, "--save", "", "--appendonly", "no"], port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    # minute -> kind -> latencies (s) / statuses
    latency: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    ops: Counter[int] = field(default_factory=Counter)
    rss: list[tuple[float, int]] = field(default_factory=list)
    recovery_ok: list[str] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    backlog_skipped: int = 0

    def minute(self) -> int:
        return int((time.monotonic() - self.started) // 60)

    def record(self, began: float, status: str, what: str) -> None:
        m = int((began - self.started) // 60)
        self.latency[m].append(time.monotonic() - began)
        self.statuses[m][status] += 1
        if status != "200":
            self.failures[f"{what} {status}"] += 1


class Mix:
    def __init__(self, session: aiohttp.ClientSession, url: str, tokens: list[str], stats: Stats) -> None:
        self.s = session
        self.url = url
        self.tokens = tokens
        self.stats = stats

    async def _req(self, method: str, path: str, **kw: object) -> tuple[int, dict[str, object] | None]:
        began = time.monotonic()
        try:
            async with self.s.request(method, self.url + path, **kw) as r:  # type: ignore[arg-type]
                body = await r.json(content_type=None) if r.content_type == "application/json" else None
                await r.read()
                self.stats.record(began, str(r.status), f"{method} {path.split('?')[0]}")
                return r.status, body if isinstance(body, dict) else None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.record(began, type(exc).__name__, f"{method} {path.split('?')[0]}")
            return 0, None

    async def proxied(self) -> None:
        await self._req("GET", "/app/x", headers={"X-Session-Token": random.choice(self.tokens)})

    async def login(self) -> None:
        status, flow = await self._req("GET", "/.auth/self-service/login/api")
        if status != 200 or flow is None:
            return
        email = f"soak{random.randrange(USERS)}@example.test"
        body = {"method": "password", "identifier": email, "password": PASSWORD}
        await self._req("POST", f"/.auth/self-service/login?flow={flow['id']}", json=body)

    async def recovery(self) -> None:
        status, flow = await self._req("GET", "/.auth/self-service/recovery/api")
        if status != 200 or flow is None:
            return
        email = f"soak{random.randrange(USERS)}@example.test"
        status, _ = await self._req(
            "POST", f"/.auth/self-service/recovery?flow={flow['id']}", json={"method": "code", "email": email}
        )
        if status == 200:
            self.stats.recovery_ok.append(email)

    async def one(self) -> None:
        kind = random.choices([k for k, _ in MIX], weights=[w for _, w in MIX])[0]
        await getattr(self, kind)()


async def seed(f: Fleet) -> list[str]:
    items = [
        {
            "create": {
                "schema_id": "default",
                "traits": {"email": f"soak{i}@example.test"},
                "credentials": {"password": {"config": {"password": PASSWORD}}},
            }
        }
        for i in range(USERS)
    ]
    tokens = []
    async with aiohttp.ClientSession() as s:
        for lo in range(0, USERS, 100):
            async with s.patch(
                f"{f.replicas[0].admin_url}/admin/identities", json={"identities": items[lo : lo + 100]}
            ) as r:
                assert r.status == 200, await r.text()
        for i in range(20):
            async with s.get(f"{f.url}/.auth/self-service/login/api") as r:
                flow = await r.json()
            body = {"method": "password", "identifier": f"soak{i}@example.test", "password": PASSWORD}
            async with s.post(f"{f.url}/.auth/self-service/login?flow={flow['id']}", json=body) as r:
                assert r.status == 200, await r.text()
                tokens.append((await r.json())["session_token"])
    return tokens


async def probe(f: Fleet, tokens: list[str], seconds: float, concurrency: int) -> float:
    stats = Stats()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        mix = Mix(s, f.url, tokens, stats)
        stop = time.monotonic() + seconds
        done = 0

        async def client() -> None:
            nonlocal done
            while time.monotonic() < stop:
                await mix.one()
                done += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    bad = sum(n for c in stats.statuses.values() for k, n in c.items() if k != "200")
    print(f"capacity probe: {done / seconds:.1f} operations/s ({done} in {seconds:.0f} s, {bad} non-200)")
    return done / seconds


async def sample_rss(f: Fleet, stats: Stats, stop: asyncio.Event) -> None:
    while not stop.is_set():
        pids = [r.process.pid for r in f.replicas if r.process is not None]
        stats.rss.append((time.monotonic() - stats.started, sum(rss_kib(p) for p in pids)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 5)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def soak(f: Fleet, tokens: list[str], rate: float, args: argparse.Namespace) -> Stats:
    stats = Stats()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(f, stats, stop))
    in_flight: set[asyncio.Task[None]] = set()
    # At most 128 connections to nginx: its 512 worker_connections (tests/proxy/harness.py) hold a
    # client and an upstream connection per request; past that it resets connections. Requests
    # beyond it wait in the client, and that wait counts in their latency (open loop).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as s:
        mix = Mix(s, f.url, tokens, stats)
        interval = 1.0 / rate
        next_at = time.monotonic()
        end = stats.started + args.duration
        last_minute = -1
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += interval
            if len(in_flight) >= 512:  # the server fell far behind: count, do not pile up
                stats.backlog_skipped += 1
                continue
            stats.ops[stats.minute()] += 1
            task = asyncio.create_task(mix.one())
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            if stats.minute() != last_minute:
                last_minute = stats.minute()
                print(
                    f"  minute {last_minute} started (load {load()}, in flight {len(in_flight)})", flush=True
                )
        await asyncio.gather(*in_flight)
    stop.set()
    await sampler
    return stats


def report(f: Fleet, stats: Stats, rate: float, capacity: float, args: argparse.Namespace) -> None:
    print(f"\nopen loop at {rate:.1f} operations/s = {args.fraction:.0%} of {capacity:.1f} measured")
    print(
        "| minute | operations | requests | non-200 | error rate | p50 ms | p99 ms"
        " | RSS MiB (end of minute) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    p99s: list[tuple[int, float]] = []
    rss_by_minute: dict[int, int] = {}
    for t, kib in stats.rss:
        rss_by_minute[int(t // 60)] = kib
    total_req = total_bad = 0
    for m in sorted(stats.latency):
        statuses = stats.statuses[m]
        n = sum(statuses.values())
        bad = n - statuses.get("200", 0)
        total_req += n
        total_bad += bad
        p99 = pct(stats.latency[m], 0.99)
        p99s.append((m, p99))
        rss = rss_by_minute.get(m, 0) / 1024
        print(
            f"| {m} | {stats.ops[m]} | {n} | {bad} | {bad / n:.4%} | {pct(stats.latency[m], 0.5):.1f} | "
            f"{p99:.1f} | {rss:.0f} |"
        )
    warm = args.warmup / 60
    after = [p for m, p in p99s if m >= warm and m < args.duration // 60]
    rss_after = [kib for t, kib in stats.rss if t >= args.warmup]
    first = statistics.mean(rss_after[:12]) if rss_after else float("nan")
    last = statistics.mean(rss_after[-12:]) if rss_after else float("nan")
    mails = Counter(str(m["To"]) for m in f.smtp.mailbox.messages)
    asked = Counter(stats.recovery_ok)
    missing = sum(max(0, n - mails.get(e, 0)) for e, n in asked.items())
    extra = sum(max(0, mails.get(e, 0) - n) for e, n in asked.items())
    print(
        f"\nrequests {total_req}, non-200 {total_bad} ({total_bad / max(total_req, 1):.4%});"
        " skipped for backlog:"
        f" {stats.backlog_skipped}"
    )
    if after:
        print(
            f"p99 per minute after warm-up: min {min(after):.1f} ms,"
            f" median {statistics.median(after):.1f} ms,"
            f" max {max(after):.1f} ms"
        )
    print(
        f"RSS (all replicas) first minute after warm-up {first / 1024:.1f} MiB,"
        f" last minute {last / 1024:.1f} MiB:"
        f" growth {(last - first) / first:+.1%}"
    )
    print(f"non-200 by request: {dict(stats.failures)}")
    print(f"recovery mails: {sum(asked.values())} requests answered 200, {missing} missing, {extra} extra")
    print(f"load average at the end: {load()}")


async def main_async(f: Fleet, args: argparse.Namespace) -> None:
    tokens = await seed(f)
    capacity = args.capacity or await probe(f, tokens, args.probe_seconds, args.probe_concurrency)
    rate = capacity * args.fraction
    await asyncio.sleep(5)  # the probe's mails drain; the soak counts its own
    with f.smtp.mailbox.lock:
        f.smtp.mailbox.messages.clear()
    print(f"soak: {args.duration} s at {rate:.1f} operations/s (load {load()})", flush=True)
    stats = await soak(f, tokens, rate, args)
    await asyncio.sleep(5)  # the courier queue drains
    report(f, stats, rate, capacity, args)


def main(args: argparse.Namespace) -> None:
    print(f"load before: {load()}")
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-soak-"))
    print(f"logs (replicas, nginx) in {tmp}" + ("" if args.keep_logs else ", removed at the end"))
    try:
        run(args, tmp)
    finally:
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    with private_postgres(fsync=True) as pg, private_redis(tmp) as redis_url:
        prefix = f"soak:{uuid.uuid4().hex[:8]}:"
        # The mail limits stay on, raised: one client IP sends every recovery request here.
        limits = {"rate_limit": {"send_per_address": 1_000_000, "send_per_ip": 1_000_000}}
        with fleet(
            tmp, pg.dsn, {"url": redis_url, "key_prefix": prefix}, size=args.replicas, security=limits
        ) as f:
            asyncio.run(main_async(f, args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=120)
    parser.add_argument("--fraction", type=float, default=0.7)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--probe-seconds", type=float, default=30)
    parser.add_argument("--probe-concurrency", type=int, default=16)
    parser.add_argument("--keep-logs", action="store_true", help="keep the replicas' and nginx's logs")
    parser.add_argument("--capacity", type=float, default=0, help="skip the probe: operations/s")
    main(parser.parse_args())
