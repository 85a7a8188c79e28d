"""The longest stall the access log's writer puts on the event loop while the reader of its pipe
lags (issue 15, "logging must add no tail"): ``bench/log_tail.py --pipe`` over the wire, without wrk
and without the wall clock, so the load of other processes does not blur it.

40,000 access lines a second of a decision's size (as ``bench/log_tail.py`` serves them) go to
``sidecar.line_writer.BufferedLineWriter`` writing a real pipe; its retry timer (every 50 ms: every
2,000 lines) is called by hand. The reader reads nothing for the first ``--lag`` lines (a container
runtime's reader on a busy core), then everything waiting every 2,000 lines. Each call into the writer
(a line, or the timer) is timed in this thread's CPU time (``time.thread_time``): the loop can serve
nothing else meanwhile, so the longest call is what a request behind it waits.

``python bench/log_stall.py [--lag 40000] [--lines 40000]``: the slowest call, the 99.9th percentile,
the total CPU time in the writer, and how many lines were dropped (the rest all reached the reader).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.line_writer import BufferedLineWriter

PER_RETRY = 2000  # lines in 50 ms at 40,000 a second
LINE = (
    json.dumps(
        {
            "time": "2026-12-07T10:00:00.000+00:00",
            "level": "info",
            "logger": "sidecar.access",
            "msg": "request",
            "request_id": "0123456789abcdef01234567",
            "method": "GET",
            "path": "/.auth/authz/nginx",
            "status": 200,
            "duration_ms": 0.412,
            "client": "127.0.0.1",
            "identity_id": "6b1f3a8e-0c7d-4c55-9c39-2f1c0d7e9a11",
            "rule": "app",
            "user_agent": "wrk",
        }
    )
    + "\n"
)


def _read_all(fd: int) -> int:
    lines = 0
    try:
        while chunk := os.read(fd, 1 << 20):
            lines += chunk.count(b"\n")
    except BlockingIOError:
        pass
    return lines


async def measure(lag: int, after: int) -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    stream = open(w, "w")  # noqa: SIM115, ASYNC230  # the write end as a text stream, as stderr is one
    writer = BufferedLineWriter(lambda: stream)
    costs: list[float] = []
    received = 0
    for i in range(lag + after):
        start = time.thread_time()
        writer.write(LINE)
        costs.append(time.thread_time() - start)
        if i % PER_RETRY == PER_RETRY - 1:
            if i >= lag:
                received += _read_all(r)
            start = time.thread_time()
            writer._on_timer()  # what the loop's retry timer calls
            costs.append(time.thread_time() - start)
    while True:  # the reader catches up; the writer's close writes the rest
        received += _read_all(r)
        writer.flush()
        if not _read_ready(r):
            break
    writer.close(timeout=0)
    received += _read_all(r)
    stream.close()
    os.close(r)
    costs.sort()
    print(
        f"lag {lag:,} lines, then {after:,}: {len(costs):,} calls, slowest {costs[-1] * 1e3:.2f} ms, "
        f"p99.9 {costs[int(len(costs) * 0.999)] * 1e3:.3f} ms, total {sum(costs) * 1e3:.0f} ms; "
        f"{received:,} lines read, {writer.dropped:,} dropped"
    )


def _read_ready(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0.05)[0])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lag", type=int, default=40_000, help="lines written before the reader reads")
    parser.add_argument("--lines", type=int, default=40_000, help="lines written after that")
    args = parser.parse_args()
    # A running loop, as in the server (timers are armed, never run: the retry is called by hand).
    asyncio.run(measure(args.lag, args.lines))


if __name__ == "__main__":
    main()
