"""Run the real ``sidecar`` CLI in a subprocess on free 127.0.0.1 ports, stopped by its PID."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import FAST_ARGON2, free_port

COOKIE_SECRET = "ops-test-cookie-secret-0123456789"
SERVERS = ("uvicorn", "granian")
"""``serve.<listener>.server``: the tests of the HTTP server itself run under each."""


def on_server(server: str) -> dict[str, Any]:
    """Config keys putting both listeners on ``server`` (merge with ``deep_merge``)."""
    return {"serve": {"public": {"server": server}, "admin": {"server": server}}}


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    public_url: str  # the public listener's root (no prefix)
    admin_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_log(self, text: str, timeout: float = 10) -> str:
        """The log once it contains ``text``: access lines are written in chunks, up to a second
        (``log.access_flush_interval``) after the request."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged within {timeout}s:\n{log[-4000:]}")
            time.sleep(0.05)
        return log

    def terminate(self, timeout: float = 40) -> int:
        """SIGTERM by PID and wait; SIGKILL (and fail) if it does not stop in time."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"sidecar did not stop within {timeout}s:\n{self.log()[-4000:]}") from None


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config)), encoding="utf-8")
    return path


def base_config(tmp: Path, public_port: int, admin_port: int, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "dsn": f"sqlite:///{tmp}/sidecar.db",
        "serve": {
            "public": {
                "host": "127.0.0.1",
                "port": public_port,
                "base_url": f"http://127.0.0.1:{public_port}/.auth",
            },
            "admin": {"host": "127.0.0.1", "port": admin_port},
        },
        "secrets": {"cookie": [COOKIE_SECRET]},
        "hashers": {"argon2": FAST_ARGON2},
        "selfservice": {"default_browser_return_url": f"http://127.0.0.1:{public_port}/"},
    }
    for key, value in extra.items():
        config[key] = value
    return config


OPEN_AND_MEMBERS = """version: 1
rules:
  - id: open
    match: {paths: ["/public/**"]}
    require: public
  - id: members
    match: {paths: ["/**"]}
    require: authenticated
"""
"""Access rules: ``/public/**`` is open, every other path needs a session."""


def proxied_config(
    tmp: Path,
    public_port: int,
    admin_port: int,
    upstream_port: int,
    rules: str = OPEN_AND_MEMBERS,
    **extra: Any,
) -> dict[str, Any]:
    """``base_config`` of a sidecar in front of the app on ``upstream_port`` with the access
    ``rules`` (written to ``tmp/rules.yaml``)."""
    path = tmp / "rules.yaml"
    path.write_text(rules)
    proxy = {"upstream": f"http://127.0.0.1:{upstream_port}"}
    return base_config(tmp, public_port, admin_port, proxy=proxy, rules=[str(path)], **extra)


def wait_alive(
    admin_url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sidecar exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{admin_url}/health/alive", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"sidecar did not come up in {timeout}s:\n{log_path.read_text()[-4000:]}")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any SIDECAR_*/DSN/PROMETHEUS_* leaking in from the caller."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIDECAR_", "PROMETHEUS_")) and k not in ("DSN", "prometheus_multiproc_dir")
    }
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    cwd: Path,
    public_port: int,
    admin_port: int,
    env: Mapping[str, str] | None = None,
) -> Iterator[Proc]:
    log_path = cwd / f"sidecar-{public_port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(process, f"http://127.0.0.1:{public_port}", f"http://127.0.0.1:{admin_port}", log_path)
    try:
        wait_alive(proc.admin_url, process, log_path)
        yield proc
    finally:
        if process.poll() is None:
            proc.terminate()


def serve_argv(config_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sidecar", "serve", "-c", str(config_path), *extra]


def migrate(config_path: Path, cwd: Path) -> None:
    """``sidecar migrate up -c config_path``, run in this process: what the command runs, without
    a Python start that imports everything again (about a second of CPU each, ~40 calls a suite).
    A relative SQLite path is relative to ``cwd``: those go through the command itself."""
    from sidecar.config.loader import load_config
    from sidecar.preflight import open_sqlite
    from sidecar.storage.sql.database import SqlDatabase

    config = load_config([str(config_path)], environ=clean_env(), require_secrets=False)
    if config.dsn.startswith("sqlite") and not config.dsn.startswith("sqlite:////"):
        subprocess.run(
            [sys.executable, "-m", "sidecar", "migrate", "up", "-c", str(config_path)],
            cwd=cwd,
            env=clean_env(),
            check=True,
            capture_output=True,
        )
        return

    async def up() -> None:
        db = SqlDatabase(config.dsn)
        try:
            await db.migrate()
        finally:
            await db.close()

    def run() -> None:  # its own thread: callers may be inside a running event loop
        open_sqlite(config.dsn)
        asyncio.run(up())

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()


def ports() -> tuple[int, int]:
    return free_port(), free_port()


def children_with(server_pid: int, marker: bytes) -> list[int]:
    """The server's descendant processes whose command line contains ``marker``."""
    found, todo = [], [server_pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                todo += children
                for pid in children:
                    with contextlib.suppress(OSError):
                        if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                            found.append(pid)
    return found


def still_running(pid: int) -> bool:
    """False once ``pid`` has exited (reaped, or a zombie left to an init that does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
