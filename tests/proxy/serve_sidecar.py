"""Run the real public listener (gateway + Starlette app) under uvicorn, as ``sidecar serve`` does.

Reads ``{"tmp", "port", "overrides"}`` as JSON on stdin; used by ``tests.proxy.harness``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import uvicorn
import uvloop

from sidecar.app import build_services, create_public_app
from tests.proxy.harness import sidecar_config


async def main() -> None:
    spec = json.loads(sys.stdin.read())
    config = sidecar_config(Path(spec["tmp"]), port=spec["port"], **spec["overrides"])
    services = build_services(config)
    await services.database.migrate()
    await services.start()
    app = create_public_app(services, manage_lifespan=False)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=spec["port"],
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            lifespan="off",
            log_level="warning",
            access_log=False,
            # The gateway judges forwarded headers itself (trusted_proxies); uvicorn's rewrite of
            # scope["client"] from X-Forwarded-For would make a spoofed address look like the peer.
            proxy_headers=False,
        )
    )
    try:
        await server.serve()
    finally:
        await services.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s %(message)s")
    uvloop.run(main())
