"""The proxied request in process: CPU µs per request of the public app on ``GET /private/x``.

Builds the real public app of ``sidecar serve`` (``create_public_app`` inside ``wrap_apps``: the
access log, metrics; the shipped ``http1`` upstream client) over an embedded SQLite store, signs a
user in, starts a static nginx upstream on the load core (the one the baseline proxies to), and
calls the app as ASGI with the signed-in request, on uvloop: no client socket, no HTTP server, but
the real upstream hop (its connection pool, request write, response parse, relay to ``send``).

- ``us``: CPU µs per request (this process: user + system), best of ``--rounds`` rounds of
  ``--requests`` requests, ``--concurrency`` in flight;
- ``--path protocol_fast``: the same request as bytes through uvicorn's httptools protocol as
  ``sidecar serve`` builds it (``sidecar.http_protocol`` with the fast relay,
  ``sidecar.proxy.fast``), one keep-alive connection per lane over a transport that keeps what is
  written (no client socket): the server's side of a proxied GET less the client socket's kernel
  work; ``latency_ms``: p50 / p99 / max of the time from the request bytes to the end of the
  response, per request, in process (the tail our own code adds, without the network's), and
  ``gc``: the collector's pauses meanwhile, per generation; ``--varied``: a new path on every
  request (what is kept per request, the forward plan, never serves the next);
  ``--request-id``: each request with a new ``X-Request-ID`` (32 hex digits, as nginx's
  ``proxy_set_header X-Request-ID $request_id`` sends), ``--traceparent``: with a new W3C
  ``traceparent`` (as a tracing mesh sends), ``--untrusted``: from a peer that is not a trusted
  proxy (the access log makes its own id); the requests are made before the measured round;
- ``--log off``: ``log.level: warning`` (no access line; metrics still counted), as bench/run.py's
  ``proxy_nolog`` row, for the access log's cost per proxied request;
- ``--profile FILE``: cProfile of one round instead, the top functions by own time in FILE;
- ``--callgrind``: run under ``valgrind --tool=callgrind --instr-atstart=no``; one round is
  instrumented (``callgrind_control -i on``, then a dump): instructions per request, which the
  machine's load does not move.

``python bench/proxy_path.py [--requests 20000] [--rounds 3] [--concurrency 1] [--path asgi|protocol_fast]``;
one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import itertools
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.decision_path import RULE, receive, sign_in
from bench.instrument import callgrind, stop_background
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


PROXY_BYTES = (
    b"GET /private/%s HTTP/1.1\r\nHost: 127.0.0.1:4455\r\nUser-Agent: wrk\r\nAccept: */*\r\n"
    b"X-Session-Token: %s\r\n\r\n"
)


UNTRUSTED_PEER = "192.0.2.7"  # not in the default serve.public.trusted_proxies (loopback)


def with_ids(token: str, n: int, request_id: bool, traceparent: bool) -> list[bytes]:
    """``n`` proxied GETs, each with a new X-Request-ID (as nginx's ``$request_id``: 32 hex
    digits) and/or a new traceparent, right after Host, where nginx's ``proxy_set_header`` puts
    them."""
    out = []
    for _ in range(n):
        extra = b""
        if request_id:
            extra += b"X-Request-ID: %s\r\n" % os.urandom(16).hex().encode()
        if traceparent:
            extra += b"traceparent: 00-%s-%s-01\r\n" % (
                os.urandom(16).hex().encode(),
                os.urandom(8).hex().encode(),
            )
        request = PROXY_BYTES % (b"x", token.encode())
        out.append(request.replace(b"\r\nUser-Agent", b"\r\n" + extra + b"User-Agent", 1))
    return out


class Transport:
    """A client socket's transport as the protocol sees it: a response is complete with the
    write that ends in the body (``ok\\n``, the upstream's whole answer; the fast relay writes
    head and body at once, the ASGI path, which serves the request when the session fell out of
    the resolver's cache, in two writes); ``done`` is then set. Another status fails the run."""

    def __init__(self, peer: str = "127.0.0.1") -> None:
        self.responses = 0
        self.peer = peer
        self.done: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 40000), "sockname": ("127.0.0.1", 4455)}.get(name, default)

    def write(self, data: bytes) -> None:
        assert data.startswith((b"HTTP/1.1 200 ", b"ok\n")), data
        if data.endswith(b"ok\n"):
            self.responses += 1
            if self.done is not None and not self.done.done():
                self.done.set_result(None)

    def close(self) -> None:
        raise AssertionError("the connection was closed")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def connection(config: Any, public: Any, peer: str = "127.0.0.1") -> tuple[Any, Transport]:
    """A connection of uvicorn's protocol as ``sidecar serve`` builds it (the synchronous answers
    and the fast relay), over ``Transport``."""
    from uvicorn.server import ServerState

    from sidecar.app import fast_relays, fast_responders
    from sidecar.server import uvicorn_config

    relays = fast_relays(config, public)
    assert relays, "the fast relay is off"
    uv = uvicorn_config(public, 8 * 1024, fast_responders(config, public), relays)
    uv.load()
    proto = uv.http_protocol_class(config=uv, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = Transport(peer)
    proto.connection_made(transport)  # type: ignore[arg-type]  # a stand-in transport
    return proto, transport


async def run_protocol(
    lanes: list[tuple[Any, Transport]],
    token: str,
    n: int,
    latencies: list[float] | None = None,
    varied: bool = False,
    requests: list[bytes] | None = None,
) -> float:
    """``n`` requests over the lanes' connections, each lane one request at a time; with
    ``varied``, each to a new path (as bench/run.py's ``proxy_varied`` row: nothing kept for one
    request serves the next); ``requests``: these (``n`` of them, made beforehand) instead."""
    data = PROXY_BYTES % (b"x", token.encode())
    paths = itertools.count()
    loop = asyncio.get_running_loop()
    clock = time.perf_counter

    made = iter(requests) if requests is not None else None

    async def one_lane(proto: Any, transport: Transport, count: int) -> None:
        for _ in range(count):
            transport.done = done = loop.create_future()
            if made is not None:
                request = next(made)
            else:
                request = PROXY_BYTES % (b"%d" % next(paths), token.encode()) if varied else data
            started = clock()
            proto.data_received(request)
            await done
            if latencies is not None:
                latencies.append(clock() - started)

    per_lane = n // len(lanes)
    started = time.process_time()
    await asyncio.gather(*(one_lane(proto, transport, per_lane) for proto, transport in lanes))
    return (time.process_time() - started) / (per_lane * len(lanes)) * 1e6


class GcPauses:
    """The collector's pauses while the rounds run (``gc.callbacks``), per generation: the part
    of the tail that is garbage collection."""

    def __init__(self) -> None:
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def summary(self) -> dict[str, Any]:
        return {
            f"gen{g}": {"count": len(p), "max_ms": round(max(p, default=0) * 1e3, 3)}
            for g, p in self.pauses.items()
        }


def quantiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3, 3)

    return {"p50": pick(0.5), "p99": pick(0.99), "p999": pick(0.999), "max": round(ordered[-1] * 1e3, 3)}


async def run(app: Any, token: str, n: int, concurrency: int) -> float:
    async def one_lane(count: int) -> None:
        for _ in range(count):
            sink = Sink()
            await app(proxy_scope(token), receive, sink)
            assert sink.status == 200 and sink.body == b"ok\n", (sink.status, sink.body)

    started = time.process_time()
    await asyncio.gather(*(one_lane(n // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (n // concurrency * concurrency) * 1e6


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

    out: dict[str, Any] = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "path": args.path,
        "varied": args.varied,
        "log": args.log,
        "request_id": args.request_id,
        "traceparent": args.traceparent,
        "untrusted": args.untrusted,
    }
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="proxy-path-"))
    saved = sys.stderr
    try:
        port = free_port()
        static = f"server {{ listen 127.0.0.1:{port}; location / {{ return 200 'ok\\n'; }} }}"
        start_nginx(procs, tmp, "static", static, port, LOAD_CORE)
        (tmp / "rules.yaml").write_text("version: 1\nrules:\n" + RULE)
        sys.stderr = (tmp / "stderr.log").open("w") if not os.environ.get("BENCH_STDERR") else saved
        config = load_config(
            overrides={
                "dsn": f"sqlite:///{tmp}/bench.db",
                "secrets": {"cookie": ["bench-cookie-secret-0123456789abcdef"]},
                "serve": {"public": {"base_url": "http://127.0.0.1:4455/.auth"}},
                "log": {"level": "info" if args.log == "on" else "warning", "format": "json"},
                "rules": [str(tmp / "rules.yaml")],
                "proxy": {"upstream": f"http://127.0.0.1:{port}"},
                # The session stays in the resolver's cache for the whole run: its refresh every
                # 5 s (a store read on the ASGI path) is not the proxied request's cost, and under
                # callgrind a run lasts minutes.
                "session": {"cache_ttl": "1h"},
            }
        )
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        public, _ = wrap_apps(services, create_public_app(services, manage_lifespan=False), object())
        token = await sign_in(services)
        if args.path == "protocol_fast":
            peer = UNTRUSTED_PEER if args.untrusted else "127.0.0.1"
            lanes = [connection(config, public, peer) for _ in range(args.concurrency)]
            ids = args.request_id or args.traceparent

            async def measured(
                n: int, latencies: list[float] | None = None, made: list[bytes] | None = None
            ) -> float:
                if ids and made is None:
                    made = with_ids(token, n, args.request_id, args.traceparent)
                return await run_protocol(lanes, token, n, latencies, args.varied, made)
        else:
            if args.request_id or args.traceparent or args.untrusted:
                raise SystemExit("--request-id, --traceparent and --untrusted need --path protocol_fast")

            async def measured(
                n: int, latencies: list[float] | None = None, made: list[bytes] | None = None
            ) -> float:
                return await run(public, token, n, args.concurrency)

        await run(public, token, 1000, args.concurrency)  # warm-up: gateway started, session cached
        await measured(1000)  # the pool filled
        if args.callgrind:
            await stop_background()
            pid = str(os.getpid())
            made = (
                with_ids(token, args.requests, args.request_id, args.traceparent)
                if args.request_id or args.traceparent
                else None
            )
            callgrind("-i", "on")
            await measured(args.requests, None, made)
            callgrind("-d")
            callgrind("-i", "off")
            out["instructions_per_request"] = dumped_instructions(pid) // args.requests
        elif args.profile:
            prof = cProfile.Profile(time.process_time)  # CPU time: the machine is shared
            prof.enable()
            out["us_profiled"] = await measured(args.requests)
            prof.disable()
            if args.profile.endswith(".pstats"):
                prof.dump_stats(args.profile)
            text = io.StringIO()
            pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(40)
            if not args.profile.endswith(".pstats"):
                Path(args.profile).write_text(text.getvalue())  # noqa: ASYNC240  # after the measured round
        else:
            latencies: list[float] = []
            pauses = GcPauses()
            gc.callbacks.append(pauses)
            rounds = [await measured(args.requests, latencies) for _ in range(args.rounds)]
            gc.callbacks.remove(pauses)
            out["us"] = round(min(rounds), 2)
            out["rounds"] = [round(r, 2) for r in rounds]
            if args.path == "protocol_fast":
                out["latency_ms"] = quantiles(latencies)
                out["gc"] = pauses.summary()
        if not args.callgrind:  # (its background tasks were cancelled)
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
    parser.add_argument("--path", choices=["asgi", "protocol_fast"], default="asgi")
    parser.add_argument("--varied", action="store_true", help="a new path each request (protocol_fast)")
    parser.add_argument(
        "--request-id",
        action="store_true",
        help="a new X-Request-ID each request, as nginx sends (protocol_fast)",
    )
    parser.add_argument(
        "--traceparent",
        action="store_true",
        help="a new traceparent each request, as a mesh sends (protocol_fast)",
    )
    parser.add_argument(
        "--untrusted", action="store_true", help="from a peer that is not a trusted proxy (protocol_fast)"
    )
    parser.add_argument(
        "--log", choices=["on", "off"], default="on", help="the access log (off: log.level warning)"
    )
    parser.add_argument("--profile", help="write a cProfile of one round to this file")
    parser.add_argument("--callgrind", action="store_true", help="instructions per request (under callgrind)")
    print(json.dumps(uvloop.run(main(parser.parse_args()))), flush=True)
