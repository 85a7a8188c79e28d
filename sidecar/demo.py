"""``sidecar demo``: sidecar on the embedded defaults in front of the demo app, one command.

Runs the demo upstream (``sidecar.demo_app``) on 127.0.0.1 and ``sidecar serve --dev`` in front
of it, so a newcomer can register, sign in and see ``X-User-ID`` arrive at the app.
"""

from __future__ import annotations

import os
import socket
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


def _free(port: int, flag: str) -> None:
    """Fail with one line when ``port`` is taken, before starting anything on it."""
    from sidecar.preflight import StartupError

    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StartupError(f"cannot listen on 127.0.0.1:{port} ({flag}): {exc.strerror}") from None


def _wait_for(port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            probe.settimeout(0.2)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


def run(config_paths: list[str], *, public_port: int, upstream_port: int) -> int:
    _free(upstream_port, "--upstream-port")
    _free(public_port, "--port")
    upstream = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "sidecar.demo_app", "--port", str(upstream_port)], env=os.environ.copy()
    )
    try:
        if not _wait_for(upstream_port, upstream):
            print(f"sidecar: the demo app could not start on 127.0.0.1:{upstream_port}", file=sys.stderr)
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
