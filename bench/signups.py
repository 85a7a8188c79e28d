"""Sign-ups for the benchmark: Kratos API registrations (one argon2id hash each on the server).

``python bench/signups.py BASE_URL --concurrency 8 --duration 10`` keeps 8 registrations in flight
for 10 s; ``--burst 200`` sends 200 at once (flows fetched first, then every submission released
together). Prints one JSON line: completed sign-ups, statuses seen, seconds spent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections import Counter
from typing import Any

import aiohttp

PASSWORD = "Bench-signup-" + secrets.token_hex(8)


async def flow_id(session: aiohttp.ClientSession, base: str) -> str:
    async with session.get(f"{base}/self-service/registration/api") as r:
        return str((await r.json())["id"])


async def submit(session: aiohttp.ClientSession, base: str, flow: str, statuses: Counter[str]) -> None:
    body = {
        "method": "password",
        "traits": {"email": f"signup-{secrets.token_hex(8)}@example.com"},
        "password": PASSWORD,
    }
    try:
        async with session.post(f"{base}/self-service/registration", params={"flow": flow}, json=body) as r:
            await r.read()
            statuses[str(r.status)] += 1
    except (aiohttp.ClientError, TimeoutError) as exc:
        statuses[type(exc).__name__] += 1


async def steady(args: argparse.Namespace, statuses: Counter[str]) -> None:
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        deadline = time.monotonic() + args.duration

        async def loop() -> None:
            while time.monotonic() < deadline:
                await submit(session, args.base, await flow_id(session, args.base), statuses)

        await asyncio.gather(*(loop() for _ in range(args.concurrency)))


async def burst(args: argparse.Namespace, statuses: Counter[str]) -> None:
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=args.burst + 10)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        flows = [await flow_id(session, args.base) for _ in range(args.burst)]
        await asyncio.gather(*(submit(session, args.base, f, statuses) for f in flows))


async def main(args: argparse.Namespace) -> None:
    statuses: Counter[str] = Counter()
    started = time.monotonic()
    await (burst(args, statuses) if args.burst else steady(args, statuses))
    seconds = time.monotonic() - started
    out: dict[str, Any] = {"ok": statuses.get("200", 0), "statuses": dict(statuses), "seconds": seconds}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--burst", type=int, default=0)
    asyncio.run(main(parser.parse_args()))
