"""Jsonnet evaluations per second and per-call latency, in process: the warm pool
(``JsonnetSandbox``) against one process per evaluation (``jsonnet.evaluate``, the old way).

    .venv/bin/python bench/jsonnet.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from sidecar.security import jsonnet

BODY = "function(ctx) { email: ctx.identity.traits.email, id: ctx.identity.id }"
CTX = {"identity": {"id": "x", "traits": {"email": "a@example.test"}}}


async def measure(evaluate: object, calls: int) -> tuple[float, float, float]:
    laps = []
    start = time.perf_counter()
    for _ in range(calls):
        t = time.perf_counter()
        await evaluate(BODY, tla={"ctx": CTX}, timeout=2.0)  # type: ignore[operator]
        laps.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return calls / total, statistics.median(laps) * 1000, sorted(laps)[int(len(laps) * 0.99) - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    sandbox = jsonnet.JsonnetSandbox()
    try:
        await sandbox.evaluate("1", timeout=2.0)  # warm: the first call starts a worker
        pooled = await measure(sandbox.evaluate, args.calls)
        concurrent_start = time.perf_counter()
        await asyncio.gather(
            *(sandbox.evaluate(BODY, tla={"ctx": CTX}, timeout=2.0) for _ in range(args.calls))
        )
        concurrent = args.calls / (time.perf_counter() - concurrent_start)
    finally:
        await sandbox.close()
    spawned = await measure(jsonnet.evaluate, max(10, args.calls // 20))
    print(
        f"pool ({sandbox.size} workers), sequential: {pooled[0]:.0f}/s, "
        f"median {pooled[1]:.2f} ms, p99 {pooled[2]:.2f} ms"
    )
    print(f"pool, {args.calls} concurrent: {concurrent:.0f}/s")
    print(f"one process per call: {spawned[0]:.1f}/s, median {spawned[1]:.1f} ms, p99 {spawned[2]:.1f} ms")
    print(f"ratio (median latency): {spawned[1] / pooled[1]:.0f}x")


if __name__ == "__main__":
    asyncio.run(main())
