"""The access log's cost in process: ``AccessLog`` around a trivial app, log off, on with a
line-buffered stream (one write per line, as before), and on through ``BufferedLineWriter`` (as
``sidecar serve`` ships: chunks written from the loop). CPU µs per request (process time, the
chunks' writes included).

``python bench/access_log.py [--requests 50000]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from typing import Any

from sidecar.line_writer import BufferedLineWriter
from sidecar.logs import AccessLog
from sidecar.metrics import Metrics

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]}
_BODY = {"type": "http.response.body", "body": b"ok\n"}


async def app(scope: Any, receive: Any, send: Any) -> None:
    scope["sidecar.rule"], scope["sidecar.decision"] = "private", "allow"
    scope["sidecar.identity_id"], scope["sidecar.route_class"] = (
        "0b3b0c8e-1111-2222-3333-444455556666",
        "proxy",
    )
    await send(_START)
    await send(_BODY)


async def send(message: Any) -> None:
    pass


async def receive() -> Any:
    return {"type": "http.request", "body": b"", "more_body": False}


def scope() -> dict[str, Any]:
    headers = [(b"host", b"app.example.com"), (b"x-session-token", b"token")]
    return {
        "type": "http",
        "method": "GET",
        "path": "/private/x",
        "headers": headers,
        "client": ("10.0.0.1", 5555),
    }


async def cpu_us(wrapper: Any, n: int) -> float:
    for _ in range(2000):
        await wrapper(scope(), receive, send)
    started = time.process_time()
    for _ in range(n):
        await wrapper(scope(), receive, send)
    return (time.process_time() - started) / n * 1e6


async def main(n: int) -> dict[str, float]:
    metrics = Metrics()
    common: dict[str, Any] = {"listener": "public", "trusted": lambda peer: False, "metrics": metrics}
    out: dict[str, list[float]] = {"off": [], "line_buffered": [], "buffered": []}
    with tempfile.TemporaryDirectory() as tmp, open(os.path.join(tmp, "log"), "w", buffering=1) as stream:  # noqa: ASYNC230
        for _ in range(3):  # interleaved rounds: the machine's noise hits all three alike
            out["off"].append(await cpu_us(AccessLog(app, enabled=False, **common), n))
            out["line_buffered"].append(await cpu_us(AccessLog(app, stream=stream, **common), n))
            writer = BufferedLineWriter(lambda: stream)
            out["buffered"].append(await cpu_us(AccessLog(app, write=writer.write, **common), n))
            writer.close()
    return {k: min(v) for k, v in out.items()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    print(json.dumps(asyncio.run(main(parser.parse_args().requests))), flush=True)
