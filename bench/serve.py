"""One sidecar worker for the benchmark: the real public app (gateway) under uvicorn.

``python bench/serve.py CONFIG_JSON [--session-ttl S] [--identity-ttl S]``; the TTL flags tune
the resolver after wiring, to force the cache-miss scenario.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import uvicorn
import uvloop

from sidecar.app import build_services, create_public_app
from sidecar.config.loader import load_config


async def main(args: argparse.Namespace) -> None:
    config = load_config(overrides=json.loads(args.config))
    services = build_services(config)
    await services.database.migrate()
    await services.start()
    app = create_public_app(services, manage_lifespan=False)
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
    uvloop.run(main(parser.parse_args()))
