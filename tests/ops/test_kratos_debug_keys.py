"""Kratos' debugging and timing keys through ``sidecar serve``: ``serve.public.cors.debug`` logs each
cross-origin decision, ``log.leak_sensitive_values`` puts query strings and headers into the access
log (and only then), and ``hashers.argon2.expected_duration`` delays failed password checks (Kratos
``selfservice/strategy/password/login.go``: ``x.RandomDelay`` on an unknown identifier)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.ops.serve import base_config, ports, running, serve_argv, write_config

ORIGIN = "https://app.example.test"


def serve(tmp_path: Path, cors: dict[str, object] | None = None, **extra: object) -> tuple[Path, int, int]:
    public, admin = ports()
    config = base_config(tmp_path, public, admin, **extra)
    config["dev"] = True  # migrations on start
    if cors is not None:
        config["serve"]["public"]["cors"] = cors
    return write_config(tmp_path / "sidecar.yaml", config), public, admin


def access_lines(log: str) -> list[dict[str, object]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{") and '"sidecar.access"' in line:
            out.append(json.loads(line))
    return out


def test_cors_debug_and_leaked_values(tmp_path: Path) -> None:
    path, public, admin = serve(
        tmp_path,
        cors={"enabled": True, "allowed_origins": [ORIGIN], "debug": True},
        log={"leak_sensitive_values": True, "format": "json"},
    )
    with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
        base = f"{proc.public_url}/.auth"
        preflight = httpx.options(
            f"{base}/sessions/whoami",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 200
        refused = httpx.get(f"{base}/sessions/whoami", headers={"Origin": "https://evil.test"})
        assert "access-control-allow-origin" not in refused.headers
        httpx.get(f"{base}/health/alive?token=leak-me", headers={"Cookie": "ory_kratos_session=abc"})
        time.sleep(1.5)  # the access log is flushed off the event loop
        log = proc.log()
    assert f"CORS preflight for /.auth/sessions/whoami from origin '{ORIGIN}': allowed" in log
    assert (
        "CORS request /.auth/sessions/whoami from origin 'https://evil.test': not allowed (status 401)" in log
    )
    leaked = [line for line in access_lines(log) if line.get("query") == "token=leak-me"]
    assert leaked and leaked[0]["headers"]["cookie"] == "ory_kratos_session=abc"  # type: ignore[index]


def test_nothing_leaks_by_default(tmp_path: Path) -> None:
    path, public, admin = serve(tmp_path, log={"format": "json"})
    with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
        httpx.get(
            f"{proc.public_url}/.auth/health/alive?token=leak-me", headers={"Cookie": "x=secret-cookie"}
        )
        time.sleep(1.5)
        log = proc.log()
    assert access_lines(log), log
    assert "leak-me" not in log and "secret-cookie" not in log


def test_expected_duration_delays_failed_password_checks(tmp_path: Path) -> None:
    path, public, admin = serve(
        tmp_path,
        hashers={
            "argon2": {
                "memory": "8MB",
                "iterations": 1,
                "parallelism": 1,
                "expected_duration": "700ms",
                "expected_deviation": "0s",
            }
        },
    )
    with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
        base = f"{proc.public_url}/.auth"
        with httpx.Client(base_url=base, timeout=30) as client:
            for identifier in ("nobody@example.test", "nobody2@example.test"):
                flow = client.get("/self-service/login/api").json()
                started = time.monotonic()
                failed = client.post(
                    f"/self-service/login?flow={flow['id']}",
                    json={"method": "password", "identifier": identifier, "password": "wrong-password-123"},
                )
                elapsed = time.monotonic() - started
                assert failed.status_code == 400
                # A floor, never a speed target: the answer cannot come sooner than configured.
                assert elapsed >= 0.7, elapsed
