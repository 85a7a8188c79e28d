"""The access log's share of the tail, over the wire: `sidecar serve` as shipped against the same
server with ``log.access_buffer: 0`` (each line written as it comes) and
with the access log off (``log.level: warning``), rows alternated, on bench/run.py's set-up (server
on core 0; wrk, the static upstream and Redis on core 1).

A diagnostic, not a headline row (bench/RESULTS.md, "Reading this run", 2026-12-07: p99 7.1-8.4 ms
with the writer thread sidecar then shipped, 1.9-3.0 ms without it, 1.6-2.2 ms with the log off;
the writer thread was then replaced by chunks written from the loop, sidecar.line_writer).

``python bench/log_tail.py [--duration 8] [--rounds 2] [--connections 50] [--proxy] [--pipe]``; one line
per row: the variant, then bench/run.py's row (req/s, p50/p99 ms, server CPU µs per request).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.run import Bench, Procs, migrate, sign_in, start_baseline, wrk

VARIANTS: dict[str, dict[str, object]] = {
    "shipped (chunks from the loop)": {},
    "log.access_buffer: 0": {"log": {"access_buffer": 0}},
    "access log off": {"log": {"level": "warning"}},
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--proxy", action="store_true", help="the proxied GET instead of the decision")
    parser.add_argument(
        "--pipe", action="store_true", help="the server writes into a pipe (as in a container)"
    )
    args = parser.parse_args()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-log-tail-"))
    try:
        baseline = start_baseline(procs, tmp)
        bench = Bench(
            procs,
            tmp,
            upstream_port=baseline.static_port,
            redis_url=baseline.redis_url,
            dsn=f"sqlite:///{tmp}/b.db",
        )
        migrate(bench)
        servers = {
            name: bench.sidecar(log_pipe=args.pipe, **overrides)  # type: ignore[arg-type]
            for name, overrides in VARIANTS.items()
        }
        token = sign_in(next(iter(servers.values())), 4)
        if args.proxy:
            path, headers = "/private/x", {"X-Session-Token": token}
        else:
            path = "/.auth/authz/nginx"
            headers = {"X-Original-Method": "GET", "X-Original-URI": "/private/x", "X-Session-Token": token}
        for round_ in range(args.rounds):
            for name, side in servers.items():
                row = wrk(
                    f"{side.base}{path}",
                    connections=args.connections,
                    duration=args.duration,
                    headers=headers,
                    server=side.pid,
                )
                figures = ", ".join(f"{k} {v:,.2f}" for k, v in row.items())
                print(f"round {round_ + 1}: {name}: {figures}", flush=True)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
