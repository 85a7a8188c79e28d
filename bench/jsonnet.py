"""Jsonnet evaluations per second, per-call latency and CPU time per evaluation, in process: the
warm pool (``JsonnetSandbox``) against one process per evaluation (``jsonnet.evaluate``).

    .venv/bin/python bench/jsonnet.py [--calls 200]

Latency depends on the machine's load; the CPU time (this process's plus the workers', read from
``/proc/<pid>/task/*/schedstat`` in ns) much less so: compare that across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from sidecar.security import jsonnet

BODY = "function(ctx) { email: ctx.identity.traits.email, id: ctx.identity.id }"
CTX = {"identity": {"id": "x", "traits": {"email": "a@example.test"}}}


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of every thread of ``pids`` (Go's runtime threads included)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


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
        # Warm every worker: the first call on each starts it.
        await asyncio.gather(*(sandbox.evaluate("1", timeout=2.0) for _ in range(sandbox.size)))
        pids = sandbox.pids()
        own, workers = time.process_time(), cpu_seconds(pids)
        pooled = await measure(sandbox.evaluate, args.calls)
        own, workers = time.process_time() - own, cpu_seconds(pids) - workers
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
    print(
        f"CPU per evaluation: {(own + workers) / args.calls * 1000:.3f} ms "
        f"(server process {own / args.calls * 1000:.3f}, workers {workers / args.calls * 1000:.3f})"
    )
    print(f"pool, {args.calls} concurrent: {concurrent:.0f}/s")
    print(f"one process per call: {spawned[0]:.1f}/s, median {spawned[1]:.1f} ms, p99 {spawned[2]:.1f} ms")
    print(f"ratio (median latency): {spawned[1] / pooled[1]:.0f}x")


if __name__ == "__main__":
    asyncio.run(main())
