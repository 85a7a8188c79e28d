"""Running the two listeners (public, admin) in one or more worker processes.

Sockets are bound once in the parent and inherited by the workers, as uvicorn and gunicorn do;
all shared state lives in the stores, so any worker can serve any user. On SIGTERM readiness
turns false first, then the servers stop accepting and finish in-flight requests up to
``SHUTDOWN_GRACE`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn

from sidecar.config.loader import load_config
from sidecar.config.model import Config

log = logging.getLogger("sidecar")

SHUTDOWN_GRACE = 25


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


def _uvicorn_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE,
        ws="websockets-sansio",
    )


async def serve_app(config: Config, sockets: tuple[socket.socket, socket.socket]) -> None:
    from sidecar.app import build_services, create_admin_app, create_public_app

    services = build_services(config)
    await services.start()
    public = _Server(_uvicorn_config(create_public_app(services, manage_lifespan=False)))
    admin = _Server(_uvicorn_config(create_admin_app(services, manage_lifespan=False)))

    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        log.info("shutdown requested: readiness is now false; draining")
        services.begin_shutdown()
        public.should_exit = True
        admin.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await asyncio.gather(public.serve(sockets=[sockets[0]]), admin.serve(sockets=[sockets[1]]))
    finally:
        await services.stop()


def _worker(config: Config, public: socket.socket, admin: socket.socket) -> None:
    import uvloop

    from sidecar.logs import configure_logging

    configure_logging(config.log)
    uvloop.run(serve_app(config, (public, admin)))


def run(config_paths: Sequence[str], *, dev: bool, workers: int) -> int:
    from sidecar.logs import configure_logging

    config = load_config(config_paths, environ=os.environ, dev=dev)
    configure_logging(config.log)
    if config.dev:
        from sidecar.storage.sql.database import SqlDatabase

        async def migrate() -> None:
            db = SqlDatabase(config.dsn)
            try:
                await db.migrate()
            finally:
                await db.close()

        asyncio.run(migrate())
    public = bind(config.serve.public.host, config.serve.public.port)
    admin = bind(config.serve.admin.host, config.serve.admin.port)
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
    # The built config (with any dev-generated secrets) goes to every worker, so all of them sign
    # and verify with the same secrets; sockets travel by multiprocessing's fd passing.
    if workers <= 1:
        _worker(config, public, admin)
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(config, public, admin), daemon=False)
        for _ in range(workers)
    ]
    for p in procs:
        p.start()

    def forward(sig: int, frame: Any) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for p in procs:
        p.join()
        code = code or (p.exitcode or 0)
    return code
