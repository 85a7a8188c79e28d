"""The proxied request in process: CPU µs per request of the public app on ``GET /private/x``.

Builds the real public app of ``sidecar serve`` (``create_public_app`` inside ``wrap_apps``: the
access log, metrics; the shipped ``http1`` upstream client) over an embedded SQLite store, signs a
user in, starts a static nginx upstream on the load core (the one the baseline proxies to), and
calls the app as ASGI with the signed-in request, on uvloop: no client socket, no HTTP server, but
the real upstream hop (its connection pool, request write, response parse, relay to ``send``).

- ``us``: CPU µs per request (this process: user + system), best of ``--rounds`` rounds of
  ``--requests`` requests, ``--concurrency`` in flight;
- ``--profile FILE``: cProfile of one round instead, the top functions by own time in FILE;
- ``--callgrind``: run under ``valgrind --tool=callgrind --instr-atstart=no``; one round is
  instrumented (``callgrind_control -i on``, then a dump): instructions per request, which the
  machine's load does not move.

``python bench/proxy_path.py [--requests 20000] [--rounds 3] [--concurrency 1]``; one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decision_path import RULE, receive, sign_in
from bench.run import LOAD_CORE, Procs, free_port, start_nginx
from sidecar.config.loader import load_config


def proxy_scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/private/x",
        "raw_path": b"/private/x",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:4455"), (b"x-session-token", token.encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 4455),
    }


class Sink:
    status = 0
    body = b""

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body += message.get("body", b"")


async def run(app: Any, token: str, n: int, concurrency: int) -> float:
    async def one_lane(count: int) -> None:
        for _ in range(count):
            sink = Sink()
            await app(proxy_scope(token), receive, sink)
            assert sink.status == 200 and sink.body == b"ok\n", (sink.status, sink.body)

    started = time.process_time()
    await asyncio.gather(*(one_lane(n // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (n // concurrency * concurrency) * 1e6


def callgrind(*args: str) -> None:
    """``callgrind_control``: the process's own instrumentation, switched around the measured round
    (blocking on purpose: nothing else runs meanwhile)."""
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def dumped_instructions(pid: str) -> int:
    """Instructions in the last dump (``callgrind_control -d``); the dumps are removed."""
    dumps = sorted(Path.cwd().glob(f"callgrind.out.{pid}.*"), key=lambda p: p.stat().st_mtime)
    totals = next(
        line for line in dumps[-1].read_text().splitlines() if line.startswith(("totals:", "summary:"))
    )
    for dump in Path.cwd().glob(f"callgrind.out.{pid}*"):
        dump.unlink()
    return int(totals.split()[1])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from sidecar.app import build_services, create_public_app, wrap_apps

    out: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency}
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-path-"))
    saved = sys.stderr
    try:
        port = free_port()
        static = f"server {{ listen 127.0.0.1:{port}; location / {{ return 200 'ok\\n'; }} }}"
        start_nginx(procs, tmp, "static", static, port, LOAD_CORE)
        (tmp / "rules.yaml").write_text("version: 1\nrules:\n" + RULE)
        sys.stderr = (tmp / "stderr.log").open("w")  # the JSON lines land here
        config = load_config(
            overrides={
                "dsn": f"sqlite:///{tmp}/bench.db",
                "secrets": {"cookie": ["bench-cookie-secret-0123456789abcdef"]},
                "serve": {"public": {"base_url": "http://127.0.0.1:4455/.auth"}},
                "log": {"level": "info", "format": "json"},
                "rules": [str(tmp / "rules.yaml")],
                "proxy": {"upstream": f"http://127.0.0.1:{port}"},
            }
        )
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        public, _ = wrap_apps(services, create_public_app(services, manage_lifespan=False), object())
        token = await sign_in(services)
        await run(public, token, 1000, args.concurrency)  # warm-up: session cached, pool filled
        if args.callgrind:
            pid = str(os.getpid())
            callgrind("-i", "on", pid)
            await run(public, token, args.requests, args.concurrency)
            callgrind("-d", pid)
            callgrind("-i", "off", pid)
            out["instructions_per_request"] = dumped_instructions(pid) // args.requests
        elif args.profile:
            prof = cProfile.Profile()
            prof.enable()
            out["us_profiled"] = await run(public, token, args.requests, args.concurrency)
            prof.disable()
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(40)
            Path(args.profile).write_text(text.getvalue())  # noqa: ASYNC240  # after the measured round
        else:
            rounds = [await run(public, token, args.requests, args.concurrency) for _ in range(args.rounds)]
            out["us"] = round(min(rounds), 2)
            out["rounds"] = [round(r, 2) for r in rounds]
        await services.stop()
    finally:
        if sys.stderr is not saved:
            sys.stderr.close()
            sys.stderr = saved
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--profile", help="write a cProfile of one round to this file")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request (under callgrind)")
    print(json.dumps(uvloop.run(main(parser.parse_args()))), flush=True)
