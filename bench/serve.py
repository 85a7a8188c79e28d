"""One sidecar worker for the benchmark: the real public app (gateway) under uvicorn.

``python bench/serve.py CONFIG_JSON [--session-ttl S] [--identity-ttl S] [--access-log]
[--login-user EMAIL:PASSWORD] [--hash-nice N]``

The TTL flags tune the resolver after wiring, to force the cache-miss scenario. ``--access-log``
wraps the app as ``sidecar serve`` does (``sidecar.app.wrap_apps``: request id, metrics and one
JSON access line per request, written to stderr). ``--login-user`` creates an identity with that
password (hashed with the configured argon2 parameters) for the login-storm scenario;
``--hash-nice`` runs the hashing threads at that niceness (an experiment the bench reports). The
upstream client is ``proxy.upstream_client`` in the config.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from datetime import timedelta
from typing import Any

import uvicorn
import uvloop

from sidecar.app import build_services, create_public_app, wrap_apps
from sidecar.config.loader import load_config


async def main(args: argparse.Namespace) -> None:
    config = load_config(overrides=json.loads(args.config))
    services = build_services(config)
    await services.database.migrate()
    await services.start()
    app: Any = create_public_app(services, manage_lifespan=False)
    if args.access_log:
        app, _ = wrap_apps(services, app, app)
        app.enabled = True
    if args.login_user:
        from sidecar import errors
        from sidecar.identity.manager import IdentitySpec

        email, _, password = args.login_user.partition(":")
        with contextlib.suppress(errors.Conflict):  # made by an earlier server of this run
            await services.identities.create(
                IdentitySpec(
                    traits={"email": email},
                    schema_id="default",
                    credentials={"password": {"config": {"password": password}}},
                )
            )
    if args.hash_nice:
        # Experiment (not the shipped hasher): hashing threads at a lower CPU priority, so the
        # event loop wins the core whenever it has work. Threads inherit niceness on Linux, so
        # argon2's own lane threads are covered too.
        import os
        import threading
        from concurrent.futures import ThreadPoolExecutor

        nice = args.hash_nice

        def lower_priority() -> None:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)

        hasher: Any = services.hasher
        workers = hasher._pool._max_workers
        hasher._pool = ThreadPoolExecutor(workers, thread_name_prefix="hasher", initializer=lower_priority)
    if args.session_ttl is not None:
        services.resolver.ttl = args.session_ttl
    if args.identity_ttl is not None:
        services.resolver.identity_ttl = timedelta(seconds=args.identity_ttl).total_seconds()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=config.serve.public.port,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
    )
    try:
        await server.serve()
    finally:
        await services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--session-ttl", type=float)
    parser.add_argument("--identity-ttl", type=float)
    parser.add_argument("--access-log", action="store_true")
    parser.add_argument("--login-user")
    parser.add_argument("--hash-nice", type=int, default=0)
    uvloop.run(main(parser.parse_args()))
