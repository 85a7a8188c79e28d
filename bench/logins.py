"""Login storm for the benchmark: N concurrent API password logins in a loop (Kratos' API flow).

``python bench/logins.py BASE_URL EMAIL PASSWORD --concurrency 20 --duration 12``; prints one JSON
line with the number of completed logins and failures. Each login costs the sidecar one argon2id
verification in its hashing thread pool. Loop ``i`` signs in as ``EMAIL`` with ``-i`` before the
``@`` (``storm-3@example.com``), so with as many users as loops no brute-force counter is shared:
a storm of many users, not one user guessing in parallel.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp


def user(email: str, i: int) -> str:
    local, _, domain = email.partition("@")
    return f"{local}-{i}@{domain}"


async def one_loop(
    i: int, session: aiohttp.ClientSession, args: argparse.Namespace, stats: dict[str, Any]
) -> None:
    deadline = time.monotonic() + args.duration
    body = {"method": "password", "identifier": user(args.email, i), "password": args.password}
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{args.base}/self-service/login/api") as r:
                flow = await r.json()
            async with session.post(
                f"{args.base}/self-service/login", params={"flow": flow["id"]}, json=body
            ) as r:
                text = await r.text()
                if r.status == 200:
                    stats["ok"] += 1
                else:
                    stats["failed"] += 1
                    stats.setdefault("first_failure", f"{r.status} {text[:200]}")
        except (aiohttp.ClientError, KeyError, TimeoutError) as exc:
            stats["failed"] += 1
            stats.setdefault("first_failure", repr(exc))
            await asyncio.sleep(0.05)


async def main(args: argparse.Namespace) -> None:
    stats: dict[str, Any] = {"ok": 0, "failed": 0}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one_loop(i, session, args, stats) for i in range(args.concurrency)))
    print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("email")
    parser.add_argument("password")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--duration", type=float, default=12)
    asyncio.run(main(parser.parse_args()))
