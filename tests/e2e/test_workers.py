"""``sidecar serve --workers 2`` with Redis: workers share sessions, and a revocation made
through the admin API is honoured by every worker within the session cache TTL; under each
HTTP server (``serve.<listener>.server``)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from sidecar.config.loader import deep_merge
from tests.ops.serve import SERVERS, base_config, migrate, on_server, ports, running, serve_argv, write_config

CACHE_TTL = 1.0


def whoami_statuses(public_url: str, token: str, n: int) -> list[int]:
    """``n`` whoami calls, each over a new connection so the kernel spreads them over workers."""
    statuses = []
    for _ in range(n):
        with httpx.Client(timeout=5) as client:
            r = client.get(f"{public_url}/.auth/sessions/whoami", headers={"X-Session-Token": token})
            statuses.append(r.status_code)
    return statuses


@pytest.mark.parametrize("server", SERVERS)
def test_workers_share_sessions_and_revocations(tmp_path: Path, redis_url: str, server: str) -> None:
    public_port, admin_port = ports()
    config = deep_merge(
        base_config(
            tmp_path,
            public_port,
            admin_port,
            redis={"url": redis_url},
            session={"cache_ttl": f"{CACHE_TTL}s"},
        ),
        on_server(server),
    )
    path = write_config(tmp_path / "cfg.yaml", config)
    migrate(path, tmp_path)
    email, password = f"w-{uuid.uuid4().hex[:8]}@example.test", "Workers-share-4-sessions!"
    with running(
        serve_argv(path, "--workers", "2"), cwd=tmp_path, public_port=public_port, admin_port=admin_port
    ) as proc:
        created = httpx.post(
            f"{proc.admin_url}/admin/identities",
            json={
                "schema_id": "default",
                "traits": {"email": email},
                "credentials": {"password": {"config": {"password": password}}},
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        # Kratos' API login flow: init on one connection, submit on another (maybe another worker).
        flow = httpx.get(f"{proc.public_url}/.auth/self-service/login/api", timeout=5).json()
        login = httpx.post(
            f"{proc.public_url}/.auth/self-service/login",
            params={"flow": flow["id"]},
            json={"method": "password", "identifier": email, "password": password},
            timeout=10,
        )
        assert login.status_code == 200, login.text
        token, session_id = login.json()["session_token"], login.json()["session"]["id"]

        assert set(whoami_statuses(proc.public_url, token, 20)) == {200}

        revoked = httpx.delete(f"{proc.admin_url}/admin/sessions/{session_id}", timeout=5)
        assert revoked.status_code == 204, revoked.text
        time.sleep(CACHE_TTL + 0.2)
        assert set(whoami_statuses(proc.public_url, token, 30)) == {401}
        assert proc.terminate() == 0
