"""The cached decision path in process: CPU µs per request and allocations per request.

Builds the real public app of ``sidecar serve`` (``create_public_app`` inside ``wrap_apps``: the
access log, metrics) over an embedded SQLite store, signs a user in (the session a login stores),
and calls the app directly with the nginx decision request (``GET /.auth/authz/nginx``,
``X-Original-URI: /private/x``, ``X-Session-Token``): no socket, no HTTP parser. Figures:

- ``us``: CPU µs per request, best of ``--rounds`` rounds of ``--requests`` calls, for the access
  log on (as shipped) and off (``log.level: warning``), and for ``Access.check`` alone (rule
  match, session cache, judgement);
- ``us.protocol_fast`` / ``us.protocol_asgi``: the same request as bytes through uvicorn's
  httptools protocol as ``sidecar serve`` builds it (``sidecar.http_protocol``, a keep-alive
  connection over a transport that drops what is written; no socket), with the synchronous
  answers (``serve.public.fast_path``, the default) and without (every request an ASGI task): the
  server's side of a request less the kernel's. The same request again is answered from the
  protocol's memo of answers; ``us.protocol_unique`` asks for another original URI each time
  (``/private/x<n>``), so every answer is made by the responders (and remembered), as for a
  proxy whose users never ask twice for the same URI;
- ``allocs``: memory blocks allocated per request and still alive afterwards (tracemalloc, over
  ``--requests`` calls, after a warm-up): 0 means the path leaves nothing behind;
- ``peak_bytes``: the most memory a single request had allocated at once (tracemalloc's peak),
  the response and its headers included;
- ``rules``: with ``--rules N``, N extra rules in front of the one that matches (other hosts,
  other prefixes), to show the match does not scan them;
- ``us.miss`` / ``us.miss_redis`` (only with ``--measure``): the decision with the session cache
  off (``session.cache_ttl: 0s``, bench/run.py's "cache off" row): every request loads the
  session and its identity from the stores, the embedded SQLite store alone, or sessions in a
  private ``redis-server`` (started on a free port) and identities in SQLite as bench/run.py
  runs it; called as an ASGI app, as ``on``; ``us.protocol_miss`` / ``us.protocol_miss_redis``:
  the same as bytes through the protocol as ``protocol_fast`` (the miss answered in the protocol:
  ``sidecar.http_protocol``'s "Answers that need I/O"), ``us.protocol_asgi_miss[_redis]`` with
  the fast path off (uvicorn's ASGI task per request), each request sent once the one before was
  answered; ``..._c50``: 50 connections at once, as bench/run.py's wrk (the misses of one token
  share the stores' reads); ``us.miss_postgres`` / ``us.miss_redis_postgres``: the same with the
  identities (and without Redis the sessions) in PostgreSQL (a database of the run's own on
  ``--postgres``, the server at 127.0.0.1:5432 by default, dropped afterwards); ``resolve_miss`` and the like:
  ``SessionResolver.resolve`` alone on them.

``python bench/decision_path.py [--requests 20000] [--rounds 3] [--rules 0] [--measure NAME]``;
prints one JSON line. ``--measure protocol_fast`` (or ``protocol_unique``, ``protocol_asgi``, ``on``, ``off``,
``check``, ``miss``, ``miss_redis``, ``miss_postgres``, ``miss_redis_postgres``, ``resolve_miss`` and
the like)
runs that loop alone, without the allocation figures. Instructions per request, which the
machine's load does not move: ``valgrind --tool=callgrind --instr-atstart=no python
bench/decision_path.py --measure protocol_fast --rounds 1 --requests 2000 --callgrind``, then the
total ``Ir`` (``callgrind_annotate``) over the requests: only the measured rounds are
instrumented. The event loop is uvloop's, as in ``sidecar serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.instrument import callgrind, stop_background
from sidecar.config.loader import deep_merge, load_config
from sidecar.identity.model import Identity, VerifiableAddress, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session

RULE = "  - {id: private, match: {paths: ['/private/**']}, require: authenticated}\n"


def rules_text(extra: int) -> str:
    lines = ["version: 1", "rules:"]
    for i in range(extra):
        # Rules a real file has in front: other hosts, other path prefixes, other methods.
        if i % 3 == 0:
            match = f"{{hosts: [app{i}.example.com], paths: ['/**']}}"
            lines.append(f"  - {{id: host{i}, match: {match}, require: public}}")
        elif i % 3 == 1:
            lines.append(f"  - {{id: api{i}, match: {{paths: ['/api/v{i}/**']}}, require: authenticated}}")
        else:
            lines.append(
                f"  - {{id: post{i}, match: {{methods: [POST], paths: ['/forms/{i}/*']}}, require: optional}}"
            )
    return "\n".join(lines) + "\n" + RULE


async def sign_in(services: Any) -> str:
    email = "bench@example.com"
    identity = Identity(
        schema_id="default",
        traits={"email": email},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
    )
    identity = await services.database.identities.create(identity)
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal="aal1")
    token = new_session_token()
    await services.resolver.sessions.create(session, digest(token))  # Redis, or SQL without it
    return token


def decision_scope(token: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/.auth/authz/nginx",
        "raw_path": b"/.auth/authz/nginx",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:4455"),
            (b"user-agent", b"wrk"),
            (b"x-original-method", b"GET"),
            (b"x-original-uri", b"/private/x"),
            (b"x-session-token", token.encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 4455),
    }


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Sink:
    """The server's ``send``: keeps the status so the run can check every answer was a 200."""

    status = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]


async def cpu_us(app: Any, token: str, n: int) -> float:
    sink = Sink()
    started = time.process_time()
    for _ in range(n):
        await app(decision_scope(token), receive, sink)
    elapsed = time.process_time() - started
    assert sink.status == 200, sink.status
    return elapsed / n * 1e6


DECISION_BYTES = (
    b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: 127.0.0.1:4455\r\nUser-Agent: wrk\r\n"
    b"X-Original-Method: GET\r\nX-Original-URI: /private/x\r\nX-Session-Token: %s\r\n\r\n"
)


class Transport:
    """A socket transport as the protocol sees it; what is written is counted and dropped.
    ``written``: a future the next write resolves (the answer to a request that waits for I/O)."""

    def __init__(self) -> None:
        self.responses = 0
        self.written: asyncio.Future[None] | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 4455)}.get(name, default)

    def write(self, data: bytes) -> None:
        if data.startswith(b"HTTP/1.1 200 "):
            self.responses += 1
        written = self.written
        if written is not None:
            self.written = None
            written.set_result(None)

    def close(self) -> None:
        raise AssertionError("the connection was closed")

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def hang_up(proto: Any) -> None:
    """The client goes away once its requests were answered: the connection's keep-alive timers go
    with it. Left armed, a warm-up's connections timed out in the measured rounds under callgrind
    (``Transport.close`` raising, the loop's exception handler logging it: ~22k instructions per
    request of ``protocol_miss_redis_c50``, none of them the request's)."""
    proto._unset_keepalive_if_required()
    proto.connection_lost(ConnectionResetError())


def listener(config: Any, public: Any, fast: bool) -> Any:
    """uvicorn's config of a listener as ``sidecar serve`` builds it (its protocol class: one per
    listener, with the listener's memo of answers), for ``connection``."""
    from sidecar.app import fast_responders
    from sidecar.server import uvicorn_config

    responders = fast_responders(config, public) if fast else ()
    assert bool(responders) == fast
    uv = uvicorn_config(public, 8 * 1024, responders)
    uv.load()
    return uv


def connection(config: Any, public: Any, fast: bool, uv: Any = None) -> tuple[Any, Transport]:
    """A connection of uvicorn's protocol as ``sidecar serve`` builds it, over ``Transport``; on the
    listener ``uv`` (``listener``), else on a new one."""
    from uvicorn.server import ServerState

    if uv is None:
        uv = listener(config, public, fast)
    proto = uv.http_protocol_class(config=uv, server_state=ServerState(), app_state={})  # type: ignore[call-arg]
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]  # a stand-in transport
    return proto, transport


async def protocol_us(
    config: Any, public: Any, token: str, n: int, fast: bool, unique: bool = False
) -> float:
    proto, transport = connection(config, public, fast)
    if unique:  # made before the clock starts: the client's work
        many = [DECISION_BYTES.replace(b"/private/x", b"/private/x%d" % i) % token.encode() for i in range(n)]
    else:
        many = [DECISION_BYTES % token.encode()] * n
    started = time.process_time()
    for data in many:
        proto.data_received(data)
        # The ASGI task runs on the next loop turn (a cached decision never suspends): a bare
        # yield costs the least, an Event or a future would add its own work to the figure.
        while proto.cycle is not None and not proto.cycle.response_complete:  # noqa: ASYNC110
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    await asyncio.sleep(0)  # the last task's done-callbacks
    assert transport.responses == n, (transport.responses, n)
    hang_up(proto)
    return elapsed / n * 1e6


async def protocol_miss_many_us(
    config: Any, public: Any, token: str, n: int, fast: bool, connections: int
) -> float:
    """``protocol_miss_us`` as wrk loads a server (bench/run.py: 50 connections, one token): each
    round a request on each of ``connections`` connections at once, the next round once all were
    answered. Concurrent misses of one token share the stores' reads (``SessionResolver``), so
    what each request costs besides is the larger part."""
    # One listener, as a server's: a protocol class of its own for each connection cost every
    # request ~100k instructions of attribute lookups missing the type cache (50 classes).
    uv = listener(config, public, fast)
    sides = [connection(config, public, fast, uv) for _ in range(connections)]
    data = DECISION_BYTES % token.encode()
    loop = asyncio.get_running_loop()
    rounds = max(1, n // connections)
    started = time.process_time()
    for _ in range(rounds):
        waits = []
        for proto, transport in sides:
            written = transport.written = loop.create_future()
            waits.append(written)
            proto.data_received(data)
        await asyncio.gather(*waits)
        for proto, _ in sides:
            while not proto.cycle.response_complete:  # noqa: ASYNC110  # the ASGI path's body write
                await asyncio.sleep(0)
    elapsed = time.process_time() - started
    await asyncio.sleep(0)
    for proto, transport in sides:
        assert transport.responses == rounds, (transport.responses, rounds)
        hang_up(proto)
    return elapsed / (rounds * connections) * 1e6


async def protocol_miss_us(config: Any, public: Any, token: str, n: int, fast: bool) -> float:
    """``protocol_us`` for requests that wait for the stores (the session cache off): each request
    is sent once the answer to the one before was written (a future the transport's write
    resolves: the loop sleeps on the stores' sockets and threads meanwhile, as a server's does)."""
    proto, transport = connection(config, public, fast)
    data = DECISION_BYTES % token.encode()
    loop = asyncio.get_running_loop()
    started = time.process_time()
    for _ in range(n):
        written = transport.written = loop.create_future()
        proto.data_received(data)
        await written
        while not proto.cycle.response_complete:  # noqa: ASYNC110  # the ASGI path's body write
            await asyncio.sleep(0)
    elapsed = time.process_time() - started
    await asyncio.sleep(0)  # the last task's done-callbacks
    assert transport.responses == n, (transport.responses, n)
    hang_up(proto)
    return elapsed / n * 1e6


async def check_us(access: Any, token: str, n: int) -> float:
    from sidecar.proxy.access import RequestFacts

    facts = RequestFacts(token=token, api=True)
    started = time.process_time()
    for _ in range(n):
        outcome = await access.check("GET", "127.0.0.1", "/private/x", facts)
    elapsed = time.process_time() - started
    assert outcome.allowed
    return elapsed / n * 1e6


async def allocations(app: Any, token: str, n: int) -> dict[str, Any]:
    sink = Sink()
    scopes = [decision_scope(token) for _ in range(n)]  # made before tracing: the server's work
    peaks: list[int] = []
    gc.collect()
    tracemalloc.start()
    try:
        await app(scopes.pop(), receive, sink)
        before = tracemalloc.take_snapshot()
        count = len(scopes)
        while scopes:
            scope = scopes.pop()  # the scope (which the app writes into) goes with the request
            current = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            await app(scope, receive, sink)
            peaks.append(tracemalloc.get_traced_memory()[1] - current)
            del scope
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    ours = [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(ours).compare_to(before.filter_traces(ours), "lineno")
    blocks = sum(s.count_diff for s in stats)
    top = [
        f"{s.traceback[0].filename.rsplit('/', 2)[-1]}:{s.traceback[0].lineno} {s.count_diff:+d}"
        for s in sorted(stats, key=lambda s: -abs(s.count_diff))[:5]
        if s.count_diff
    ]
    peaks.sort()
    return {
        "allocs_per_request": round(blocks / count, 3),
        "peak_bytes_median": peaks[len(peaks) // 2],
        "top": top,
    }


PROTOCOL_MISS = (
    "protocol_miss",
    "protocol_miss_redis",
    "protocol_asgi_miss",
    "protocol_asgi_miss_redis",
    "protocol_miss_redis_c50",
    "protocol_asgi_miss_redis_c50",
)
MISS = (
    *PROTOCOL_MISS,
    "miss",
    "miss_redis",
    "miss_postgres",
    "miss_redis_postgres",
    "resolve_miss",
    "resolve_miss_redis",
    "resolve_miss_postgres",
    "resolve_miss_redis_postgres",
)
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def private_postgres_database(admin_dsn: str) -> Iterator[str]:
    """A database of this run's own on the PostgreSQL server at ``admin_dsn``; its DSN. Dropped
    afterwards."""
    import asyncpg

    name = f"sidecar_bench_{int(time.time() * 1000)}"

    def run(sql: str) -> None:
        async def go() -> None:
            conn = await asyncpg.connect(admin_dsn)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        # Its own thread and loop: the caller's loop is running.
        import threading

        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(go())
            except BaseException as exc:  # reported in the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]

    run(f'CREATE DATABASE "{name}"')
    try:
        yield admin_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A ``redis-server`` of this run's own on a free 127.0.0.1 port, no persistence; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
    argv += ["--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


async def resolve_us(services: Any, token: str, n: int) -> float:
    resolve = services.resolver.resolve
    started = time.process_time()
    for _ in range(n):
        found = await resolve(token)
    elapsed = time.process_time() - started
    assert found is not None
    return elapsed / n * 1e6


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from sidecar.app import build_services, create_public_app, wrap_apps
    from sidecar.server import freeze_heap

    out: dict[str, Any] = {"requests": args.requests, "rules": args.rules + 1}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        rules = Path(tmp) / "rules.yaml"
        rules.write_text(rules_text(args.rules))
        sys.stderr = Path(tmp, "stderr.log").open("w")  # noqa: SIM115, ASYNC230  # the JSON lines land here
        try:
            apps = {}
            services_all = []
            names = (
                [args.measure]
                if args.measure
                else ["on", "off", "check", "protocol_fast", "protocol_unique", "protocol_asgi"]
            )
            variants: list[tuple[str, dict[str, Any]]] = [("on", {}), ("off", {"log": {"level": "warning"}})]
            dsn = f"sqlite:///{tmp}/bench-{{name}}.db"
            if args.measure in MISS:
                extra: dict[str, Any] = {"session": {"cache_ttl": "0s"}}
                if "_redis" in args.measure:
                    url = stack.enter_context(private_redis(Path(tmp)))
                    extra["redis"] = {"url": url, "key_prefix": "bench:"}
                if args.measure.endswith("_postgres"):
                    dsn = stack.enter_context(private_postgres_database(args.postgres))
                variants = [(args.measure, extra)]
            for name, extra in variants:
                overrides: dict[str, Any] = {
                    "dsn": dsn.format(name=name),
                    "secrets": {"cookie": ["bench-cookie-secret-0123456789abcdef"]},
                    "serve": {"public": {"base_url": "http://127.0.0.1:4455/.auth"}},
                    "log": {"level": "info", "format": "json"},
                    "rules": [str(rules)],
                }
                config = load_config(overrides=deep_merge(overrides, extra))
                services = build_services(config)
                await services.database.migrate()
                await services.start()
                services_all.append(services)
                public, _ = wrap_apps(services, create_public_app(services, manage_lifespan=False), object())
                token = await sign_in(services)
                await cpu_us(public, token, 500)  # warm-up: the session is cached from here on
                apps[name] = (public, token, services)
                if name.startswith("resolve_"):
                    apps[name.removeprefix("resolve_")] = apps[name]
            from sidecar.proxy.access import Access

            if "off" in apps:
                _, _, services = apps["off"]
                access = Access(services.config, services.resolver, services.rules, services.metrics)

            async def measure(name: str) -> float:
                if name == "check":
                    return await check_us(access, apps["off"][1], args.requests)
                if name.startswith("resolve_"):
                    _, token, services = apps[name]
                    return await resolve_us(services, token, args.requests)
                if name in PROTOCOL_MISS:
                    app, token, services = apps[name]
                    fast = not name.startswith("protocol_asgi")
                    if name.endswith("_c50"):
                        return await protocol_miss_many_us(
                            services.config, app, token, args.requests, fast, 50
                        )
                    return await protocol_miss_us(services.config, app, token, args.requests, fast)
                if name.startswith("protocol_"):
                    app, token, on = apps["on"]
                    return await protocol_us(
                        on.config,
                        app,
                        token,
                        args.requests,
                        name != "protocol_asgi",
                        name == "protocol_unique",
                    )
                app, token, _ = apps[name]
                return await cpu_us(app, token, args.requests)

            for name in names:  # a warm-up of each loop
                await measure(name)
            # As ``sidecar serve`` does once started: the start-up heap out of the collector's reach.
            # Without it a full collection over the ~170k objects built above fell into the
            # measured rounds or not, as the allocations of the runs before had it (~50M
            # instructions when it did: 12 % of ``protocol_miss_redis_c50``'s 2000 requests).
            freeze_heap()
            best: dict[str, list[float]] = {name: [] for name in names}
            if args.callgrind:
                await stop_background()  # the cached path needs none of it
                callgrind("-i", "on")
            for _ in range(args.rounds):  # interleaved: the machine's noise hits all alike
                for name in names:
                    best[name].append(await measure(name))
            if args.callgrind:
                callgrind("-i", "off")
            out["us"] = {k: round(min(v), 2) for k, v in best.items()}
            if args.measure:
                if not args.callgrind:  # (their background tasks were cancelled)
                    for services in services_all:
                        await services.stop()
                return out
            out["us"]["log_cost"] = round(out["us"]["on"] - out["us"]["off"], 2)
            app, token, _ = apps["on"]
            out["on"] = await allocations(app, token, min(args.requests, 5000))
            app, token, _ = apps["off"]
            out["off"] = await allocations(app, token, min(args.requests, 5000))
            for services in services_all:
                await services.stop()
        finally:
            sys.stderr.close()
            sys.stderr = sys.__stderr__
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rules", type=int, default=0, help="extra rules in front of the matching one")
    parser.add_argument(
        "--measure",
        choices=["on", "off", "check", "protocol_fast", "protocol_unique", "protocol_asgi", *MISS],
        help="that loop alone (with --rounds 1 --requests N: for instruction counts under callgrind)",
    )
    parser.add_argument(
        "--postgres",
        default=PG_ADMIN_DSN,
        help="a PostgreSQL server's admin DSN: the *_postgres measures create a database there, then drop it",
    )
    parser.add_argument(
        "--callgrind",
        action="store_true",
        help="under `valgrind --tool=callgrind --instr-atstart=no`: instrument the measured rounds only",
    )
    import uvloop

    print(json.dumps(uvloop.run(main(parser.parse_args()))), flush=True)
