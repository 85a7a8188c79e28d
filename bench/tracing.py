"""Diagnostic: what tracing costs the decision endpoint, off and on, as ratios to nginx in one run.

Rows (decision endpoint, cached session, one sidecar worker on core 0 as in bench/run.py):
- ``before``: the tree given by ``--before`` (a checkout from before tracing existed), imported in
  place of this one through ``PYTHONPATH``; the same venv, config and machine.
- ``off``: this tree, ``tracing`` absent (the default).
- ``on``: this tree, ``tracing.provider: otel`` exporting every span (``sampling_ratio: 1``) to
  an OTLP/HTTP sink on core 1 that answers 200 and drops them.
nginx (reverse proxy to a static nginx) runs first and last; the ratio is to their mean. ``before``
and ``off`` alternate ``--repeat`` times, so drift on a shared machine hits both alike. Writes
bench/TRACING.md.

    git worktree add --detach /tmp/sidecar-before <commit before tracing>
    .venv/bin/python bench/tracing.py --before /tmp/sidecar-before [--duration 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    LOAD_CORE,
    Bench,
    Procs,
    Row,
    machine_state,
    mean_row,
    migrate,
    sign_in,
    start_baseline,
    wrk,
)


def otlp_sink() -> tuple[ThreadingHTTPServer, int]:
    """Accepts OTLP/HTTP exports and drops them (the receiver's own cost stays off core 0)."""

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="a checkout of sidecar from before tracing")
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    before_tree = Path(args.before).resolve()
    assert (before_tree / "sidecar" / "__init__.py").is_file(), f"{before_tree} is not a sidecar checkout"
    assert not (before_tree / "sidecar" / "tracing.py").exists(), f"{before_tree} already has tracing"
    os.sched_setaffinity(0, {int(LOAD_CORE)})  # this script and its sink stay off the server's core
    state = machine_state()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-tracing-"))
    sink, sink_port = otlp_sink()
    r: dict[str, Any] = {"before": [], "off": []}
    d, c = args.duration, args.connections
    try:
        baseline = start_baseline(procs, tmp)
        ngx_port, ngx = baseline.ngx_port, baseline.ngx
        bench = Bench(
            procs,
            tmp,
            upstream_port=baseline.static_port,
            redis_url=baseline.redis_url,
            dsn=f"sqlite:///{tmp}/bench.db",
        )
        migrate(bench)

        def nginx() -> Row:
            return wrk(
                f"http://127.0.0.1:{ngx_port}/private/x",
                connections=c,
                duration=d,
                headers={},
                server=ngx.pid,
            )

        def decision(**overrides: Any) -> Row:
            side = bench.sidecar(**overrides)
            try:
                auth = {"Cookie": f"ory_kratos_session={sign_in(side)}", "X-Original-URI": "/private/x"}
                url = f"{side.base}/.auth/authz/nginx"
                wrk(url, connections=c, duration=2, headers=auth)  # warm-up
                return wrk(url, connections=c, duration=d, headers=auth, server=side.pid)
            finally:
                procs.stop(side.proc)

        def before() -> Row:
            os.environ["PYTHONPATH"] = str(before_tree)
            try:
                return decision()
            finally:
                del os.environ["PYTHONPATH"]

        r["ngx_start"] = nginx()
        for _ in range(args.repeat):
            r["before"].append(before())
            r["off"].append(decision())
        tracing = {
            "provider": "otel",
            "providers": {"otlp": {"server_url": f"127.0.0.1:{sink_port}", "insecure": True}},
        }
        r["on"] = decision(tracing=tracing)
        r["ngx_end"] = nginx()
    finally:
        procs.stop_all()
        sink.shutdown()
    write(r, state, args, before_tree)
    return 0


def write(r: dict[str, Any], state: list[str], args: argparse.Namespace, before_tree: Path) -> None:
    base = statistics.fmean([r["ngx_start"]["rps"], r["ngx_end"]["rps"]])
    before, off = mean_row(r["before"]), mean_row(r["off"])

    def row(label: str, x: Row) -> str:
        return (
            f"| {label} | {x['rps']:,.0f} | {x['rps'] / base:.3f} | {x['p50_ms']:.3f} | {x['p99_ms']:.3f} "
            f"| {x['cpu_us']:.1f} | {x['load']:.2f} |"
        )

    lines = [
        "# Tracing cost on the decision endpoint (diagnostic)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"`.venv/bin/python bench/tracing.py --before {before_tree} --duration {args.duration} "
        f"--connections {args.connections} --repeat {args.repeat}`.",
        "`GET /.auth/authz/nginx`, cached session, one worker on core 0, wrk on core 1, production config",
        "(JSON access log at info, Redis, metrics). Ratio: to nginx → static nginx in the same run",
        f"(mean of first and last: {r['ngx_start']['rps']:,.0f} and {r['ngx_end']['rps']:,.0f} req/s).",
        "",
        *state,
        "",
        "| row | req/s | ratio to nginx | p50 ms | p99 ms | server CPU µs/req | load (1 min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("nginx → static nginx, first", r["ngx_start"]),
        *(row(f"before tracing existed, run {i + 1}", x) for i, x in enumerate(r["before"])),
        *(row(f"tracing off (default), run {i + 1}", x) for i, x in enumerate(r["off"])),
        row("**before tracing existed (mean)**", before),
        row("**tracing off (mean)**", off),
        row("tracing on, every span exported (`sampling_ratio: 1`)", r["on"]),
        row("nginx → static nginx, last", r["ngx_end"]),
        "",
        f"Off vs before: {off['rps'] / before['rps'] - 1:+.1%} req/s, "
        f"{off['cpu_us'] - before['cpu_us']:+.1f} µs of server CPU per request "
        f"(spread between runs of one variant: before {spread(r['before'])}, off {spread(r['off'])}).",
        f"On vs off: {r['on']['cpu_us'] - off['cpu_us']:+.1f} µs of server CPU per request.",
        "",
    ]
    (ROOT / "bench" / "TRACING.md").write_text("\n".join(lines))
    print("\n".join(lines))


def spread(rows: list[Row]) -> str:
    cpu = [x["cpu_us"] for x in rows]
    return f"{min(cpu):.1f}-{max(cpu):.1f} µs"


if __name__ == "__main__":
    raise SystemExit(main())
