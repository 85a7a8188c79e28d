"""Identities at scale on PostgreSQL: bulk import rate, then login and admin-list latency at a
small and a large identity count (not in CI; results go to bench/RESULTS.md by hand).

    .venv/bin/python bench/identities.py --count 1000000 [--small 1000] [--samples 40] [--dsn URL]

Without ``--dsn`` it starts a private PostgreSQL (initdb/pg_ctl on a free port; fsync on unless
``--no-fsync``; tests/private_pg.py) and removes it at the end; with ``--dsn`` it creates a
fresh database next to the one named there (dropped at the end). Then it starts one
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
import shutil
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.private_pg import private_postgres  # noqa: E402

PASSWORD = "Bench-Password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def disk() -> str:
    return subprocess.run(
        ["df", "-h", "--output=avail", "/work"], capture_output=True, text=True
    ).stdout.split()[-1]


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


async def explain(dsn: str, total: int) -> None:
    """PostgreSQL's plan and timing of the admin list's first page and of a login's lookup."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    from sidecar.storage.sql.identity_query import select_identities
    from sidecar.storage.sql.tables import credential_identifiers, identities

    owner = sa.select(credential_identifiers.c.identity_id).where(
        credential_identifiers.c.type == "password",
        credential_identifiers.c.identifier == f"user{total // 2}@bench.test",
    )
    queries = {
        "list first page": select_identities("postgresql").order_by(identities.c.id).limit(251),
        "login lookup": select_identities("postgresql").where(identities.c.id.in_(owner.scalar_subquery())),
    }
    conn = await asyncpg.connect(dsn)
    try:
        for name, query in queries.items():
            dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
            sql = str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
            rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [r[0] for r in rows]
            print(f"EXPLAIN ANALYZE {name} at {total:,}:")
            print(
                "\n".join(
                    "    " + line for line in plan if "Index" in line or "Scan" in line or "time" in line
                )
            )
    finally:
        await conn.close()


async def run(args: argparse.Namespace, public: str, admin: str, hashed: str, dsn: str) -> None:
    print(f"load before: {load()}")
    await import_range(admin, 0, args.small, hashed)
    small = await measure(public, admin, args.small, args.samples)
    await explain(dsn, args.small)
    print(f"at {args.small:,}: {small} (load {load()})")
    seconds = await import_range(admin, args.small, args.count, hashed)
    rate = (args.count - args.small) / seconds
    print(
        f"imported {args.count - args.small:,} in {seconds:.0f} s: {rate:,.0f}/s"
        f" (load {load()}, /work free {disk()})"
    )
    large = await measure(public, admin, args.count, args.samples)
    await explain(dsn, args.count)
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
    if args.dsn:
        bench(args, args.dsn)
        return
    with private_postgres(fsync=not args.no_fsync) as pg:
        print(f"private PostgreSQL on port {pg.port} in {pg.root} (fsync {'off' if args.no_fsync else 'on'})")
        bench(args, pg.dsn)


def bench(args: argparse.Namespace, server_dsn: str) -> None:
    name = f"sidecar_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_sql(server_dsn, f'CREATE DATABASE "{name}"'))
    dsn = server_dsn.rsplit("/", 1)[0] + "/" + name
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
        asyncio.run(run(args, public, admin, hashed, dsn))
    finally:
        proc.terminate()  # by PID
        proc.wait(30)
        asyncio.run(_sql(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        shutil.rmtree(tmp, ignore_errors=True)  # the config and the server's log


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn", default="", help="a server to create the database on (default: a private one)"
    )
    parser.add_argument("--no-fsync", action="store_true", help="the private server without fsync")
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=40)
    main(parser.parse_args())
