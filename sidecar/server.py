"""Running the two listeners (public, admin) in one or more worker processes.

Each listener is served by the HTTP server ``serve.<listener>.server`` names: uvicorn (httptools,
the request-line guard in its parser: ``sidecar.http_protocol``) or granian
(``sidecar.granian_listener``); both run on the worker's one uvloop event loop.

Sockets are bound once in the parent and inherited by spawned workers, as uvicorn and gunicorn
do; all shared state lives in the stores, so any worker can serve any user and a revocation in
one is seen by all. With more than one worker the parent points ``PROMETHEUS_MULTIPROC_DIR`` at
a fresh directory first, so ``/metrics`` (answered by any worker) adds up every worker.

Shutdown on SIGTERM or SIGINT, in each worker:
1. readiness turns false (``/health/ready`` answers 503) so load balancers stop sending;
2. the listeners close: new connections are refused (the parent closes its copies too);
3. in-flight requests, proxied streams included, run to completion for up to ``SHUTDOWN_GRACE``
   seconds, then are cancelled;
4. services stop: the courier releases the messages it claimed but did not send, pools close.
The parent exits 0 when every worker did; a worker that dies on its own takes the others down
with a non-zero exit, so the orchestrator restarts the whole unit instead of running degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import uvicorn

from sidecar.config.loader import ConfigError, load_config
from sidecar.config.model import Config

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

log = logging.getLogger("sidecar")

SHUTDOWN_GRACE = 25.0
"""Seconds in-flight requests get after SIGTERM; below Kubernetes' default 30 s grace period."""
KILL_AFTER = SHUTDOWN_GRACE + 10.0
"""The parent SIGKILLs a worker still alive this long after SIGTERM (a hung pool close)."""
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal capture: we run two of them and coordinate."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(
    app: Any,
    max_request_line: int = 8 * 1024,
    responders: tuple[Any, ...] = (),
    relays: tuple[Any, ...] = (),
) -> uvicorn.Config:
    from sidecar.http_protocol import guarded_protocol

    return uvicorn.Config(
        app,
        loop="uvloop",
        # uvicorn would otherwise rewrite the peer address from X-Forwarded-For sent by any
        # loopback client; trust is decided by serve.public.trusted_proxies alone.
        proxy_headers=False,
        # httptools, with the request-target guard (414 / 400 before any app runs) and the
        # synchronous answers (serve.public.fast_path).
        http=guarded_protocol(max_request_line, responders, relays),
        lifespan="off",
        log_config=None,
        access_log=False,  # sidecar.logs.AccessLog writes the one line per request
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE),
        ws="websockets-sansio",
    )


class _UvicornListener:
    """uvicorn with the request-line guard in its parser and ``responders`` (``sidecar.http_protocol``)."""

    def __init__(
        self,
        app: Any,
        sock: socket.socket,
        *,
        max_request_line: int,
        responders: tuple[Any, ...] = (),
        relays: tuple[Any, ...] = (),
    ) -> None:
        self._server = _Server(uvicorn_config(app, max_request_line, responders, relays))
        self._sock = sock

    def stop(self) -> None:
        self._server.should_exit = True
        # Stop listening now rather than at uvicorn's next tick (0.1 s, longer on a busy core): its
        # shutdown closes the same servers again, which is a no-op.
        for server in getattr(self._server, "servers", ()):
            server.close()

    async def serve(self) -> None:
        await self._server.serve(sockets=[self._sock])


class _Listener(Protocol):
    def stop(self) -> None: ...

    async def serve(self) -> None: ...


def _listener(
    server: str,
    app: Any,
    sock: socket.socket,
    max_request_line: int,
    responders: tuple[Any, ...] = (),
    relays: tuple[Any, ...] = (),
) -> _Listener:
    """The HTTP server ``serve.<listener>.server`` names, serving ``app`` on ``sock``; uvicorn
    also asks ``responders`` first (``sidecar.http_protocol``), granian always runs ``app``."""
    if server == "granian":
        from sidecar.granian_listener import GranianListener

        return GranianListener(app, sock, max_request_line=max_request_line, grace=SHUTDOWN_GRACE)
    return _UvicornListener(
        app, sock, max_request_line=max_request_line, responders=responders, relays=relays
    )


def freeze_heap() -> int:
    """Take the worker's start-up heap out of the garbage collector's reach; the objects frozen.

    A worker builds about 250k tracked objects (services, apps, schemas, catalogs, rules, the
    modules imported) that live as long as it does. In the collector's oldest generation each
    full collection walked them all: 100-200 ms with the event loop stopped, several times a
    minute under load (issue 15; docs/SCALING.md). ``gc.freeze`` moves them to a generation that
    is never scanned; they are still freed by reference counting if they die. Garbage is
    collected first, so no unreachable cycle is frozen for ever. The collection after the freeze
    has nothing to scan, but it resets the collector's count of long-lived objects: left at the
    start-up count, it would hold the first full collection back until a quarter of that many
    objects had aged, and then scan them all at once.

    Workers are spawned, not forked (``run``), so there is no copy-on-write to protect: this is
    about pauses only.
    """
    gc.collect()
    gc.freeze()
    gc.collect()
    return gc.get_freeze_count()


async def serve_app(config: Config, sockets: tuple[socket.socket, socket.socket]) -> None:
    from sidecar.app import (
        build_services,
        create_admin_app,
        create_public_app,
        fast_relays,
        fast_responders,
        wrap_apps,
    )

    services = build_services(config)
    await services.start()
    public_app, admin_app = wrap_apps(
        services,
        create_public_app(services, manage_lifespan=False),
        create_admin_app(services, manage_lifespan=False),
    )
    serve = config.serve
    responders = fast_responders(config, public_app) if serve.public.server == "uvicorn" else ()
    relays = fast_relays(config, public_app) if serve.public.server == "uvicorn" else ()
    if responders:
        log.info("public listener: cached decisions and whoami answered in the HTTP protocol (fast_path)")
    public = _listener(
        serve.public.server, public_app, sockets[0], serve.public.max_request_line_size, responders, relays
    )
    admin = _listener(serve.admin.server, admin_app, sockets[1], serve.admin.max_request_line_size)

    loop = asyncio.get_running_loop()
    stopping = False

    def on_signal() -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        log.info("shutdown requested: readiness is now false; draining in-flight requests")
        services.begin_shutdown()
        public.stop()
        admin.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    metrics = services.metrics
    # Everything built so far lives as long as the worker: out of the collector's scans.
    metrics.heap_frozen(freeze_heap())
    on_gc = metrics.on_gc
    gc.callbacks.append(on_gc)
    refresher = asyncio.create_task(metrics.run_refresher()) if metrics.multiprocess else None
    log.info("worker %d serving", os.getpid())
    try:
        await asyncio.gather(public.serve(), admin.serve())
    finally:
        gc.callbacks.remove(on_gc)
        if refresher is not None:
            refresher.cancel()
        await services.stop()
        log.info("worker %d stopped", os.getpid())


def _worker(config: Config, public: socket.socket, admin: socket.socket) -> None:
    import uvloop

    from sidecar.logs import configure_logging

    configure_logging(config.log)
    uvloop.run(serve_app(config, (public, admin)))


@contextlib.contextmanager
def multiprocess_metrics_dir(environ: dict[str, str] | os._Environ[str]) -> Iterator[Path]:
    """A clean ``PROMETHEUS_MULTIPROC_DIR`` for this run, inherited by the spawned workers.

    A directory given by the operator is emptied of old ``*.db`` files (stale counters from a
    previous run would be added in) and kept; one we create is removed afterwards.
    """
    given = environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink()
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="sidecar-metrics-"))
    environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def supervise(procs: list[BaseProcess], listeners: Sequence[socket.socket], metrics_dir: Path) -> int:
    """Wait for the workers; forward SIGTERM/SIGINT; the first worker's failure stops them all."""
    from prometheus_client import multiprocess

    stopping_since: float | None = None

    def stop(reason: str) -> None:
        nonlocal stopping_since
        if stopping_since is None:
            stopping_since = time.monotonic()
            log.info("stopping %d worker(s): %s", len(procs), reason)
            # The kernel keeps completing handshakes while any process holds a listening socket:
            # close ours so that, once the workers close theirs, new connections are refused.
            for sock in listeners:
                sock.close()
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    def on_signal(sig: int, frame: Any) -> None:
        stop(signal.Signals(sig).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    alive = list(procs)
    while alive:
        # A short timeout instead of blocking: signal handlers and the kill deadline need turns.
        for sentinel in wait([p.sentinel for p in alive], timeout=1.0):
            p = next(p for p in alive if p.sentinel == sentinel)
            p.join()
            alive.remove(p)
            if p.pid is not None:
                multiprocess.mark_process_dead(p.pid, str(metrics_dir))  # type: ignore[no-untyped-call]
            exitcode = p.exitcode or 0
            if exitcode == -signal.SIGTERM and stopping_since is not None:
                # Our own SIGTERM reached a worker still starting, before its handler was set:
                # it had accepted nothing, so this is a clean stop.
                exitcode = 0
            if exitcode != 0 or stopping_since is None:
                log.error("worker %s exited with code %s", p.pid, exitcode)
                code = code or (exitcode if exitcode > 0 else 1)
                stop(f"worker {p.pid} exited")
        if alive and stopping_since is not None and time.monotonic() - stopping_since > KILL_AFTER:
            for p in alive:
                log.error("worker %s did not stop in time: killing it", p.pid)
                p.kill()
            code = code or 1
    return code


def _check_rules(config: Config) -> None:
    """Refuse to start (``RulesError``, printed by the CLI) before binding or spawning workers."""
    from sidecar.rules.loader import expand_paths, load_rules

    load_rules(
        expand_paths(config.rules), order=config.rules_order, reserved_prefix=config.serve.public.prefix
    )


def _listen(config: Config) -> tuple[socket.socket, socket.socket]:
    from sidecar.preflight import StartupError

    sockets: list[socket.socket] = []
    for name, listener in (("public", config.serve.public), ("admin", config.serve.admin)):
        try:
            sockets.append(bind(listener.host, listener.port))
        except OSError as exc:
            for sock in sockets:
                sock.close()
            keys = f"serve.{name}.host, serve.{name}.port"
            reason = exc.strerror or str(exc)
            raise StartupError(
                f"cannot listen on {listener.host}:{listener.port} ({keys}): {reason}"
            ) from None
    return sockets[0], sockets[1]


def run(
    config_paths: Sequence[str],
    *,
    dev: bool,
    workers: int,
    overrides: dict[str, Any] | None = None,
    migrate: bool = False,
) -> int:
    """Check everything (``sidecar.preflight``), bind, and serve until SIGTERM.

    Start-up failures raise ``ConfigError`` or ``preflight.StartupError``, which the CLI prints
    as lines naming the key, before anything listens.
    """
    from sidecar import preflight
    from sidecar.logs import configure_logging

    config = load_config(config_paths, environ=os.environ, dev=dev, overrides=overrides)
    configure_logging(config.log)
    _check_rules(config)  # RulesError, printed by the CLI as "access rules refused"
    report = preflight.check_config(config)
    if report.problems:
        raise ConfigError(report.problems)
    for key, reason in report.warnings:
        log.warning("%s: %s", key, reason)
    newer = preflight.prepare_database(config, migrate=migrate or config.dev)
    if newer:
        log.warning(newer)
    public, admin = _listen(config)
    log.info(
        "sidecar listening: public http://%s:%d%s, admin http://%s:%d (%d worker%s)",
        config.serve.public.host,
        public.getsockname()[1],
        config.serve.public.prefix,
        config.serve.admin.host,
        admin.getsockname()[1],
        workers,
        "" if workers == 1 else "s",
    )
    if config.proxy.upstream:
        log.info(
            "proxying to %s (proxy.upstream_client: %s)", config.proxy.upstream, config.proxy.upstream_client
        )
    if workers <= 1:
        _worker(config, public, admin)
        return 0
    # The built config (with any dev-generated secrets) goes to every worker, so all of them sign
    # and verify with the same secrets; sockets travel by multiprocessing's fd passing.
    with multiprocess_metrics_dir(os.environ) as metrics_dir:
        ctx = multiprocessing.get_context("spawn")
        procs: list[BaseProcess] = [
            ctx.Process(target=_worker, args=(config, public, admin), daemon=False) for _ in range(workers)
        ]
        for p in procs:
            p.start()
        return supervise(procs, (public, admin), metrics_dir)
