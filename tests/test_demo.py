"""``sidecar demo``: the README's quickstart, as a newcomer runs it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until_ready
from tests.test_preflight import listening_addresses


def test_demo_forwards_identity_headers(tmp_path: Path) -> None:
    public, upstream, admin = free_port(), free_port(), free_port()
    env = {**os.environ, "SIDECAR_SERVE__ADMIN__PORT": str(admin)}
    argv = [sys.executable, "-m", "sidecar", "demo", "--port", str(public), "--upstream-port", str(upstream)]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{public}"
    try:
        wait_until_ready(f"{base}/.auth/health/ready", proc)
        # Both the sidecar and the demo app stay on loopback.
        assert listening_addresses(public) == {"0100007F"}
        assert listening_addresses(upstream) == {"0100007F"}
        # A browser is sent to the login page, with the page it wanted as return_to.
        nav = httpx.get(base + "/orders?x=1", headers={"Accept": "text/html"}, follow_redirects=False)
        assert nav.status_code in (302, 303)
        assert nav.headers["location"].startswith(f"{base}/.auth/self-service/login/browser?return_to=")
        assert httpx.get(base + "/public").status_code == 200
        # Register through the API flow, then the app sees who it is.
        flow = httpx.get(f"{base}/.auth/self-service/registration/api").json()
        done = httpx.post(
            f"{base}/.auth/self-service/registration?flow={flow['id']}",
            json={
                "method": "password",
                "password": "a-long-demo-passphrase",
                "traits": {"email": "demo@example.test"},
            },
            # A password hash at SCHED_IDLE, then nice +10 once starved (hashers.priority:
            # adaptive): on a machine loaded by a whole parallel suite it can take longer than
            # httpx's default 5 s.
            timeout=60,
        ).json()
        token, identity_id = done["session_token"], done["identity"]["id"]
        seen = httpx.get(
            base + "/orders", headers={"Authorization": f"Bearer {token}", "X-User-ID": "spoofed"}
        ).json()
        headers = {k.lower(): v for k, v in seen["headers"]}
        assert headers["x-user-id"] == identity_id
        assert headers["x-user-email"] == "demo@example.test"
        assert "authorization" not in headers  # the sidecar's own token stays with the sidecar
        assert httpx.get(base + "/orders", headers={"Accept": "application/json"}).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


@pytest.mark.parametrize("flag", ["--port", "--upstream-port"])
def test_demo_port_in_use_is_one_line(tmp_path: Path, flag: str) -> None:
    """Never a sidecar in front of somebody else's app on a taken port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"--port": str(free_port()), "--upstream-port": str(free_port()), flag: str(port)}
        argv = [sys.executable, "-m", "sidecar", "demo", *(x for kv in ports.items() for x in kv)]
        out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == f"sidecar: cannot listen on 127.0.0.1:{port} ({flag}): Address already in use\n"
