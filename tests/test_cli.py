"""The ``sidecar`` command as a newcomer runs it: real subprocesses in an empty directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port, wait_until_ready

SIDECAR = [sys.executable, "-m", "sidecar"]


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        SIDECAR + args, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60
    )


def test_version(tmp_path: Path) -> None:
    out = _run(["version"], tmp_path)
    assert out.returncode == 0
    assert out.stdout.startswith("sidecar ")


def test_config_check_prints_key_paths(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("serve:\n  public:\n    port: many\nsesion: {}\n")
    out = _run(["config", "check", str(bad)], tmp_path)
    assert out.returncode == 1
    assert "serve.public.port:" in out.stderr
    assert "sesion: unknown key" in out.stderr
    good = tmp_path / "good.yaml"
    good.write_text("secrets: {cookie: [a-long-enough-secret-value]}\n")
    assert _run(["config", "check", str(good)], tmp_path).returncode == 0


def test_migrate_up_and_status(tmp_path: Path) -> None:
    env = {"DSN": f"sqlite:///{tmp_path}/m.db"}
    status = _run(["migrate", "status", "--dev"], tmp_path, env)
    assert status.returncode == 0, status.stderr
    assert "pending" in status.stdout and "0001" in status.stdout
    up = _run(["migrate", "up", "--dev"], tmp_path, env)
    assert up.returncode == 0, up.stderr
    assert "pending" not in up.stdout and "applied  0001" in up.stdout


def test_serve_dev_in_empty_directory(tmp_path: Path) -> None:
    public, admin = free_port(), free_port()
    env = {**os.environ, "SIDECAR_SERVE__PUBLIC__PORT": str(public), "SIDECAR_SERVE__ADMIN__PORT": str(admin)}
    proc = subprocess.Popen(
        [*SIDECAR, "serve", "--dev"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{admin}/health/ready", proc)
        created = httpx.post(
            f"http://127.0.0.1:{admin}/admin/identities",
            json={"schema_id": "default", "traits": {"email": "new@example.test"}},
        )
        assert created.status_code == 201, created.text
        listed = httpx.get(f"http://127.0.0.1:{admin}/admin/identities").json()
        assert [i["traits"]["email"] for i in listed] == ["new@example.test"]
        assert httpx.get(f"http://127.0.0.1:{public}/.auth/health/alive").json() == {"status": "ok"}
        assert (tmp_path / "sidecar.db").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0


def test_migrate_needs_only_the_dsn(tmp_path: Path) -> None:
    """As printed in the README: no secrets, no --dev, just where the database is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_") and k != "DSN"} | {
        "DSN": f"sqlite:///{tmp_path}/m.db"
    }
    status = subprocess.run(
        [*SIDECAR, "migrate", "status"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert status.stderr == ""
    up = subprocess.run(
        [*SIDECAR, "migrate", "up"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert up.returncode == 0, up.stderr
    assert up.stdout.splitlines()[0] == "migrations applied"
    assert up.stderr == ""  # no alembic chatter
