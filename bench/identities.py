"""Identities at scale on PostgreSQL: bulk import rate, then login and admin-list latency at a
small and a large identity count (not in CI; results go to bench/RESULTS.md by hand).

    .venv/bin/python bench/identities.py --dsn postgresql://postgres@127.0.0.1:5432/postgres \
        --count 1000000 [--small 1000] [--samples 40]

Creates a fresh database next to the one in ``--dsn`` (dropped at the end), starts one
``sidecar serve --migrate`` on free 127.0.0.1 ports, imports ``--small`` identities through the
admin batch API (``PATCH /admin/identities``, 1000 per request, each with a pre-hashed argon2
password as a Kratos import would carry), measures, imports up to ``--count`` and measures
again. Login = API login flow (GET flow + POST password); list = ``GET /admin/identities`` first
page and a page reached by keyset (``page_token``). Prints p50s, the ratio large/small, the
import rate and the machine load; ratios are what to compare (goal: p50 within 1.5x).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import yaml
from argon2 import PasswordHasher

PASSWORD = "Bench-Password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def import_range(admin: str, start: int, stop: int, hashed: str) -> float:
    """Identities ``start``..``stop``; returns seconds taken."""
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=admin, timeout=300) as c:
        sem = asyncio.Semaphore(2)

        async def batch(lo: int) -> None:
            body = {
                "identities": [
                    {
                        "create": {
                            "schema_id": "default",
                            "traits": {"email": f"user{i}@bench.test"},
                            "credentials": {"password": {"config": {"hashed_password": hashed}}},
                        }
                    }
                    for i in range(lo, min(lo + 1000, stop))
                ]
            }
            async with sem:
                r = await c.patch("/admin/identities", json=body)
            assert r.status_code == 200, r.text[:500]
            failed = [x for x in r.json()["identities"] if x["action"] != "create"]
            assert not failed, failed[:3]

        await asyncio.gather(*(batch(lo) for lo in range(start, stop, 1000)))
    return time.monotonic() - began


async def measure(public: str, admin: str, total: int, samples: int) -> dict[str, float]:
    logins: list[float] = []
    lists: list[float] = []
    deep: list[float] = []
    async with httpx.AsyncClient(base_url=public, timeout=60) as c, httpx.AsyncClient(base_url=admin) as a:
        for k in range(samples):
            email = f"user{(k * 7919) % total}@bench.test"
            t = time.monotonic()
            flow = (await c.get("/.auth/self-service/login/api")).json()
            body = {"method": "password", "identifier": email, "password": PASSWORD}
            r = await c.post(f"/.auth/self-service/login?flow={flow['id']}", json=body)
            assert r.status_code == 200, r.json().get("ui", {}).get("messages")
            logins.append(time.monotonic() - t)
            t = time.monotonic()
            first = await a.get("/admin/identities", params={"page_size": 250})
            assert first.status_code == 200
            lists.append(time.monotonic() - t)
            token = first.links.get("next", {}).get("url", "")
            t = time.monotonic()
            nxt = await a.get(token) if token else first
            assert nxt.status_code == 200
            deep.append(time.monotonic() - t)
    ms = 1000.0
    return {
        "login_p50_ms": statistics.median(logins) * ms,
        "list_p50_ms": statistics.median(lists) * ms,
        "list_next_page_p50_ms": statistics.median(deep) * ms,
    }


async def run(args: argparse.Namespace, public: str, admin: str, hashed: str) -> None:
    print(f"load before: {load()}")
    await import_range(admin, 0, args.small, hashed)
    small = await measure(public, admin, args.small, args.samples)
    print(f"at {args.small:,}: {small} (load {load()})")
    seconds = await import_range(admin, args.small, args.count, hashed)
    rate = (args.count - args.small) / seconds
    print(f"imported {args.count - args.small:,} in {seconds:.0f} s: {rate:,.0f}/s (load {load()})")
    large = await measure(public, admin, args.count, args.samples)
    print(f"at {args.count:,}: {large} (load {load()})")
    for key in small:
        print(f"{key}: {large[key] / small[key]:.2f}x  (goal <= 1.5x)")


async def _sql(dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def main(args: argparse.Namespace) -> None:
    name = f"sidecar_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(args.dsn, f'CREATE DATABASE "{name}"'))
    dsn = args.dsn.rsplit("/", 1)[0] + "/" + name
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    pub, adm = free_port(), free_port()
    # Login verifies this hash: argon2id with the shipped defaults (64 MiB, t=3, p=2).
    hashed = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=2).hash(PASSWORD)
    config = {
        "dsn": dsn,
        "serve": {
            "public": {"host": "127.0.0.1", "port": pub, "base_url": f"http://127.0.0.1:{pub}/.auth"},
            "admin": {"host": "127.0.0.1", "port": adm},
        },
        "secrets": {"cookie": ["bench-cookie-secret-0123456789abcdef"]},
        "log": {"level": "warning"},
        "security": {"rate_limit": {"enabled": False}},
    }
    (tmp / "sidecar.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    with (tmp / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "serve", "-c", str(tmp / "sidecar.yaml"), "--migrate"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    public, admin = f"http://127.0.0.1:{pub}", f"http://127.0.0.1:{adm}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{public}/.auth/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        asyncio.run(run(args, public, admin, hashed))
    finally:
        proc.terminate()  # by PID
        proc.wait(30)
        asyncio.run(_sql(args.dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=40)
    main(parser.parse_args())
