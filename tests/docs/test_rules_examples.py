"""docs/RULES.md's two examples as files: the rule format served by the real proxy, and the
policy test table run by ``sidecar rules test``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.docs.test_snippets import ROOT
from tests.ops.serve import clean_env
from tests.proxy.harness import raw_request, sidecar_server, upstream_server

FORMAT = ROOT / "examples" / "rules" / "format.yaml"
POLICY = ROOT / "examples" / "rules" / "format.test.yaml"


def request(port: int, host: str, path: str, accept: str) -> tuple[int, dict[str, str]]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Accept: {accept}", "Connection: close"]
    status, headers, _ = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    return status, headers


def test_policy_table_passes_through_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "rules", "test", str(POLICY)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("2 passed, 0 failed")


def test_format_example_decides_in_the_real_proxy(tmp_path: Path) -> None:
    with (
        upstream_server() as upstream,
        sidecar_server(tmp_path, rules=[str(FORMAT)], proxy={"upstream": upstream.url}) as sidecar,
    ):
        port = sidecar.proc.port
        # on_unauthenticated: redirect, whatever the client: an API call is sent to login too.
        for accept in ("text/html", "application/json"):
            status, headers = request(port, "app.example.com", "/billing/x", accept)
            assert status in (302, 303), (accept, status)
            assert "/self-service/login/browser" in headers["location"]
        # hosts: "*.example.com" matches a subdomain; another host matches no rule (deny).
        assert request(port, "eu.example.com", "/billing/x", "text/html")[0] in (302, 303)
        assert request(port, "other.test", "/billing/x", "text/html")[0] == 403
        # paths: "/billing/**" only.
        assert request(port, "app.example.com", "/orders", "text/html")[0] == 403
