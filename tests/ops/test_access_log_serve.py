"""The access log of ``sidecar serve``: written in chunks by a thread, complete at shutdown."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from sidecar.config.loader import deep_merge
from tests.ops.serve import SERVERS, base_config, migrate, on_server, ports, running, serve_argv, write_config


def _access_lines(log: str) -> list[dict[str, object]]:
    return [
        e
        for e in (json.loads(x) for x in log.splitlines() if x.startswith("{"))
        if e["logger"] == "sidecar.access"
    ]


@pytest.mark.parametrize("server", SERVERS)
def test_lines_arrive_within_the_flush_interval_and_all_are_written_at_shutdown(
    tmp_path: Path, server: str
) -> None:
    public_port, admin_port = ports()
    config = deep_merge(
        base_config(tmp_path, public_port, admin_port, log={"access_flush_interval": "300ms"}),
        on_server(server),
    )
    path = write_config(tmp_path / "sidecar.yaml", config)
    migrate(path, tmp_path)
    n = 200
    with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
        with httpx.Client(base_url=proc.public_url, timeout=10) as client:
            sent = time.monotonic()
            assert client.get("/.auth/health/alive?first").status_code == 200
            proc.wait_log("/.auth/health/alive", timeout=5)
            assert time.monotonic() - sent < 3
            for i in range(n):
                assert client.get(f"/.auth/health/alive?i={i}").status_code == 200
        proc.terminate()
        lines = _access_lines(proc.log())
    alive = [e for e in lines if e["path"] == "/.auth/health/alive" and e["listener"] == "public"]
    assert len(alive) == n + 1
    assert len({e["request_id"] for e in alive}) == n + 1


def test_access_buffer_zero_writes_each_line_at_once(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    config = base_config(
        tmp_path, public_port, admin_port, log={"access_buffer": 0, "access_flush_interval": "1h"}
    )
    path = write_config(tmp_path / "sidecar.yaml", config)
    migrate(path, tmp_path)
    with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
        assert httpx.get(f"{proc.public_url}/.auth/health/alive", timeout=10).status_code == 200
        # With a one-hour flush interval only the unbuffered path can have written it this soon.
        proc.wait_log('"path":"/.auth/health/alive"', timeout=5)
