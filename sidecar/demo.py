"""``sidecar demo``: sidecar on the embedded defaults in front of the demo app, one command.

Runs the demo upstream (``sidecar.demo_app``) on 127.0.0.1 and ``sidecar serve --dev`` in front
of it, so a newcomer can register, sign in and see ``X-User-ID`` arrive at the app.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sidecar import server

RULES = Path(__file__).with_name("demo_rules.yaml")


def demo_overrides(public_port: int, upstream_port: int) -> dict[str, Any]:
    site = f"http://127.0.0.1:{public_port}/"
    return {
        "serve": {"public": {"port": public_port, "base_url": f"http://127.0.0.1:{public_port}/.auth"}},
        "proxy": {"upstream": f"http://127.0.0.1:{upstream_port}"},
        "rules": [str(RULES)],
        "selfservice": {"default_browser_return_url": site, "allowed_return_urls": [site]},
    }


def run(config_paths: list[str], *, public_port: int, upstream_port: int) -> int:
    upstream = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "sidecar.demo_app", "--port", str(upstream_port)], env=os.environ.copy()
    )
    try:
        time.sleep(0.3)
        if upstream.poll() is not None:
            print(f"the demo app could not start on 127.0.0.1:{upstream_port}", file=sys.stderr)
            return 1
        print(
            f"\n  sidecar demo: open http://127.0.0.1:{public_port}/ in a browser, register, and see the\n"
            f"  identity headers the app receives. Admin API: http://127.0.0.1:4434/admin/identities\n",
            file=sys.stderr,
        )
        return server.run(
            config_paths, dev=True, workers=1, overrides=demo_overrides(public_port, upstream_port)
        )
    finally:
        upstream.terminate()
        upstream.wait(10)
