"""The public listener's app as ``sidecar serve`` builds it, for another ASGI server (a bench
diagnostic: granian against uvicorn on the same rows).

``BENCH_CONFIG=sidecar.yaml granian --interface asgi --loop uvloop bench.granian_app:app``. The
services start and stop with the ASGI lifespan; the access log and metrics wrap the app as in
``sidecar.server.serve_app``. uvicorn-only parts are absent here: the request-line guard
(``sidecar.http_protocol``) and the admin listener.
"""

from __future__ import annotations

import os
from typing import Any

from sidecar.app import build_services, create_admin_app, create_public_app, wrap_apps
from sidecar.config.loader import load_config
from sidecar.logs import configure_logging

config = load_config([os.environ["BENCH_CONFIG"]], environ=os.environ)
configure_logging(config.log)
services = build_services(config)
app: Any
app, _ = wrap_apps(
    services,
    create_public_app(services, manage_lifespan=True),
    create_admin_app(services, manage_lifespan=False),
)
