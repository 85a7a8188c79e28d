"""Three ``sidecar serve`` replicas (like three pods) sharing PostgreSQL and Redis, behind a real
nginx load balancer; the app upstream and an SMTP server next to them.

Every process runs on free 127.0.0.1 ports, logs to a file in the test's temp dir and is stopped
by its PID. Replicas can be stopped (SIGTERM, as Kubernetes does) and started again on the same
ports, one by one, for rolling restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import FAST_ARGON2, _pg_exec, free_port
from tests.mail import SmtpServer
from tests.ops.serve import clean_env, serve_argv
from tests.proxy.harness import Proc, nginx_http_server, upstream_server

COOKIE_SECRET = "fleet-test-cookie-secret-0123456789"
RULES = """
version: 1
rules:
  - {id: app, match: {paths: ["/app/**"]}, require: authenticated}
  - {id: slow, match: {paths: ["/slow"]}, require: authenticated}
  - {id: public, match: {paths: ["/public/**"]}, require: public}
"""


@dataclass
class Replica:
    index: int
    config_path: Path
    public_port: int
    admin_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.public_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start(self, *extra: str) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                serve_argv(self.config_path, *extra),
                cwd=self.config_path.parent,
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"replica {self.index} exited:\n{self.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.public_url}/.auth/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"replica {self.index} not ready in {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM by PID (what Kubernetes sends) and wait for the drain to finish."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
            raise AssertionError(f"replica {self.index} did not stop within {timeout}s") from None

    def kill(self) -> None:
        """SIGKILL by PID: the pod dies mid-work, with no drain and no release of its claims."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@dataclass
class Fleet:
    replicas: list[Replica]
    nginx: Proc
    upstream: Proc
    smtp: SmtpServer
    dsn: str
    redis: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """nginx: where users come in."""
        return f"http://127.0.0.1:{self.nginx.port}"


def _config(tmp: Path, replica_ports: tuple[int, int], lb_port: int, **shared: Any) -> dict[str, Any]:
    public_port, admin_port = replica_ports
    lb = f"http://127.0.0.1:{lb_port}"
    config: dict[str, Any] = {
        "serve": {
            # Links and redirects name the load balancer, as in production.
            "public": {"host": "127.0.0.1", "port": public_port, "base_url": f"{lb}/.auth"},
            "admin": {"host": "127.0.0.1", "port": admin_port},
        },
        "secrets": {"cookie": [COOKIE_SECRET]},
        "hashers": {"argon2": FAST_ARGON2},
        "selfservice": {
            "default_browser_return_url": f"{lb}/",
            "flows": {"recovery": {"enabled": True}},
            "methods": {"code": {"enabled": True}},
        },
        "rules": [str(tmp / "rules.yaml")],
        "log": {"level": "info"},  # the migration lines; the access log goes to the file too
    }
    for key, value in shared.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def nginx_block(replicas: list[Replica]) -> Any:
    servers = "\n".join(
        f"    server 127.0.0.1:{r.public_port} max_fails=1 fail_timeout=1s;" for r in replicas
    )

    def block(port: int) -> str:
        # A replica that is shutting down refuses connections: nginx tries the next one (safe
        # methods only, as nginx does by default). Not on 503: in a store outage every replica
        # answers 503, and counting those as failures (max_fails) would mark all of them down
        # and turn the sidecar's 503 + Retry-After into nginx's bare 502.
        return f"""
  upstream sidecars {{
{servers}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://sidecars;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_next_upstream error timeout;
      proxy_next_upstream_tries 3;
      proxy_connect_timeout 2s;
    }}
  }}"""

    return block


@contextlib.contextmanager
def fleet(
    tmp: Path, dsn: str, redis: dict[str, Any], *, size: int = 3, migrate_together: bool = True, **shared: Any
) -> Iterator[Fleet]:
    """``size`` replicas started at the same moment (each with ``--migrate``), then nginx."""
    (tmp / "rules.yaml").write_text(RULES)
    smtp = SmtpServer(free_port())
    smtp.start()
    lb_port = free_port()
    replicas: list[Replica] = []
    try:
        with upstream_server() as upstream:
            common = {
                "dsn": dsn,
                "redis": redis,
                "proxy": {"upstream": upstream.url, **shared.pop("proxy", {})},
                "courier": {"smtp": {"connection_uri": smtp.uri}, "worker_interval": "100ms"},
                **shared,
            }
            for i in range(size):
                ports = (free_port(), free_port())
                path = tmp / f"replica-{i}.yaml"
                path.write_text(yaml.safe_dump(_config(tmp, ports, lb_port, **common)))
                replicas.append(Replica(i, path, *ports, tmp / f"replica-{i}.log"))
            for r in replicas:
                r.start("--migrate") if migrate_together else r.start()
            for r in replicas:
                r.wait_ready()
            with nginx_http_server(tmp, nginx_block(replicas), port=lb_port) as nginx:
                yield Fleet(replicas, nginx, upstream, smtp, dsn, redis, shared)
    finally:
        for r in replicas:
            with contextlib.suppress(AssertionError):
                r.stop()
        smtp.stop()


async def _drop_redis_keys(url: str, prefix: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@contextlib.contextmanager
def fleet_on_shared_servers(
    tmp: Path, postgres_server: str, redis_url: str, **shared: Any
) -> Iterator[Fleet]:
    """A fleet on a fresh database of the shared PostgreSQL and a fresh key prefix of the shared
    Redis; both dropped afterwards (never the whole server)."""
    name = f"sidecar_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(postgres_server, f'CREATE DATABASE "{name}"'))
    dsn = postgres_server.rsplit("/", 1)[0] + "/" + name
    prefix = f"sidecar-test:{uuid.uuid4().hex[:10]}:"
    try:
        with fleet(tmp, dsn, {"url": redis_url, "key_prefix": prefix}, **shared) as f:
            yield f
    finally:
        asyncio.run(_pg_exec(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        asyncio.run(_drop_redis_keys(redis_url, prefix))
