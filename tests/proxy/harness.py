"""Real processes for the proxy tests: the sidecar, a test upstream, nginx, Caddy, redis-server.

Every process gets free 127.0.0.1 ports and its own temp dir, and is stopped by its PID.
A missing binary fails the test (never skips).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.config.model import Config
from sidecar.identity.model import Identity, VerifiableAddress, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session
from tests.conftest import free_port, make_config

ROOT = Path(__file__).resolve().parents[2]


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open in {timeout}s")


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    log: Any = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def output(self) -> str:
        """Everything the process printed so far (a file, so a chatty process never blocks)."""
        self.log.flush()
        self.log.seek(0)
        return str(self.log.read().decode(errors="replace"))


def spawn(
    args: Sequence[str],
    port: int,
    *,
    cwd: Path = ROOT,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> Proc:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process, closed by GC
    popen = subprocess.Popen(
        list(args),
        cwd=cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    if stdin is not None and popen.stdin:
        popen.stdin.write(stdin)
        popen.stdin.close()
    proc = Proc(popen, port, log)
    try:
        wait_port(port, popen)
    except Exception:
        with contextlib.suppress(Exception):
            os.kill(popen.pid, signal.SIGKILL)
        popen.wait()
        raise RuntimeError(f"{args[0]} did not start:\n{proc.output()}") from None
    return proc


def binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed; it is required for this test", pytrace=False)
    return path


@contextlib.contextmanager
def upstream_server() -> Iterator[Proc]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "tests.proxy.upstream_app:app", "--port", str(port)]
    args += ["--log-level", "warning", "--loop", "uvloop", "--http", "httptools"]
    proc = spawn(args, port)
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def redis_server(tmp: Path) -> Iterator[Proc]:
    """A private redis-server (never the shared one on 6379): it may be stopped mid-test."""
    port = free_port()
    args = [
        binary("redis-server"),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    args += ["--dir", str(tmp)]
    proc = spawn(args, port)
    try:
        yield proc
    finally:
        proc.stop()


def sidecar_config(tmp: Path, *, port: int, **overrides: Any) -> Config:
    base: dict[str, Any] = {
        "dsn": f"sqlite:///{tmp}/sidecar.db",
        "serve": {
            "public": {"port": port, "host": "127.0.0.1", "base_url": f"http://127.0.0.1:{port}/.auth"}
        },
        "session": {"cache_ttl": "2s"},
    }
    from sidecar.config.loader import deep_merge

    return make_config(**deep_merge(base, overrides))


@dataclass
class Sidecar:
    proc: Proc
    config: Config
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proc.url


@contextlib.contextmanager
def sidecar_server(tmp: Path, **overrides: Any) -> Iterator[Sidecar]:
    port = free_port()
    config = sidecar_config(tmp, port=port, **overrides)
    payload = json.dumps({"tmp": str(tmp), "port": port, "overrides": overrides}).encode()
    proc = spawn([sys.executable, "-m", "tests.proxy.serve_sidecar"], port, stdin=payload)
    try:
        yield Sidecar(proc, config, overrides)
    finally:
        proc.stop()


def write_rules(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def make_user(
    config: Config,
    *,
    email: str = "alice@example.com",
    aal: str = "aal1",
    metadata_public: Any = None,
    verified: bool = False,
    redis_prefix: str | None = None,
) -> tuple[Identity, Session, str]:
    """Exactly what a login does: an identity, a session, and the token whose digest is stored."""
    from sidecar.storage.sql.database import SqlDatabase

    db = SqlDatabase(config.dsn)
    try:
        await db.migrate()
        identity = Identity(
            schema_id="default",
            traits={"email": email},
            metadata_public=metadata_public,
            verifiable_addresses=(VerifiableAddress(value=email, verified=verified),),
        )
        identity = await db.identities.create(identity)
        session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal=aal)
        token = new_session_token()
        if config.redis is not None:
            from sidecar.storage.redis.backend import RedisBackend

            redis = RedisBackend(config.redis)
            try:
                await redis.sessions.create(session, digest(token))
            finally:
                await redis.close()
        else:
            await db.sessions.create(session, digest(token))
        return identity, session, token
    finally:
        await db.close()


async def revoke(config: Config, session: Session) -> None:
    """What logout does: mark the session inactive and publish the revocation."""
    if config.redis is not None:
        from sidecar.session.invalidation import RedisInvalidation
        from sidecar.storage.redis.backend import RedisBackend

        redis = RedisBackend(config.redis)
        try:
            await redis.sessions.revoke(session.id)
            await RedisInvalidation(
                redis.channel, None, channel=config.redis.key_prefix + "sidecar:session-revocations"
            ).publish(session_id=session.id)
        finally:
            await redis.close()
    else:
        from sidecar.session.invalidation import PollingInvalidation
        from sidecar.storage.sql.database import SqlDatabase

        db = SqlDatabase(config.dsn)
        try:
            await db.sessions.revoke(session.id)
            await PollingInvalidation(db.kv, None).publish(session_id=session.id)
        finally:
            await db.close()


def unique_prefix() -> str:
    return f"sidecar-test:{uuid.uuid4().hex[:10]}:"


def raw_request(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given (no client-side path cleanup) and read the whole response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    return status, headers, body


def get(
    port: int, target: str, headers: dict[str, str] | list[tuple[str, str]] | None = None
) -> tuple[int, dict[str, str], bytes]:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in items]
    return raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))


def echoed(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    return doc


def header_values(doc: dict[str, Any], name: str) -> list[str]:
    """Every value the upstream saw for ``name``, matching any case and ``_`` spelling."""
    canon = name.lower().replace("_", "-")
    return [v for k, v in doc["headers"] if k.lower().replace("_", "-") == canon]


@contextlib.contextmanager
def nginx_server(tmp: Path, server_block: str) -> Iterator[Proc]:
    """Debian's nginx in the foreground with a config written here; stopped by PID."""

    def http_block(port: int) -> str:
        return f"  server {{\n    listen 127.0.0.1:{port};\n{server_block}\n  }}"

    with nginx_http_server(tmp, http_block) as proc:
        yield proc


@contextlib.contextmanager
def nginx_http_server(
    tmp: Path, http_block: Callable[[int], str], *, port: int | None = None
) -> Iterator[Proc]:
    """nginx whose ``http {}`` block holds ``http_block(port)`` (e.g. a shipped example file,
    included as its comment says), which must listen on 127.0.0.1:port (free unless given)."""
    port = port or free_port()
    root = tmp / f"nginx-{port}"
    root.mkdir()
    temps = "\n".join(
        f"  {name}_temp_path {root}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = f"""
daemon off;
master_process on;
worker_processes 1;
user root;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 512; }}
http {{
  access_log off;
{temps}
{http_block(port)}
}}
"""
    (root / "nginx.conf").write_text(conf)
    proc = spawn(
        [binary("nginx"), "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf")],
        port,
    )
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def caddy_server(tmp: Path, site_block: str) -> Iterator[Proc]:
    """Caddy in the foreground with a Caddyfile written here (no admin API, no HTTPS)."""

    def sites(port: int) -> str:
        return f"{{\n  auto_https off\n}}\nhttp://127.0.0.1:{port} {{\n{site_block}\n}}\n"

    with caddy_file_server(tmp, sites) as proc:
        yield proc


@contextlib.contextmanager
def caddy_file_server(tmp: Path, caddyfile: Callable[[int], str]) -> Iterator[Proc]:
    """Caddy running ``caddyfile(port)`` (e.g. a shipped example), which must serve 127.0.0.1:port.
    The admin API is switched off (a global options block is merged in)."""
    port = free_port()
    root = tmp / f"caddy-{port}"
    root.mkdir()
    text = caddyfile(port)
    if text.lstrip().startswith("{"):
        text = text.lstrip().replace("{", "{\n  admin off", 1)
    else:
        text = "{\n  admin off\n}\n" + text
    (root / "Caddyfile").write_text(text)
    env = {
        **os.environ,
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "HOME": str(root),
    }
    args = [binary("caddy"), "run", "--config", str(root / "Caddyfile"), "--adapter", "caddyfile"]
    proc = spawn(args, port, cwd=root, env=env)
    try:
        yield proc
    finally:
        proc.stop()


class Transport:
    """What a socket transport does for the protocol: records writes; ``close`` reports the loss
    of the connection on the next loop turn, as uvloop does."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.out = bytearray()
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (self.peer, 50123), "sockname": ("127.0.0.1", 4433)}.get(name, default)

    def write(self, data: bytes) -> None:
        if not self.closed:  # a closed transport drops writes
            self.out += data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


@contextlib.asynccontextmanager
async def started_public_app(config: Config) -> AsyncIterator[tuple[Any, Any, list[str]]]:
    """``(services, public, lines)``: the public app as ``sidecar serve`` wraps it (``AccessLog``
    outermost), over migrated and started services, its access lines kept in ``lines``; the
    services stop on exit."""
    from sidecar.app import build_services, create_public_app, wrap_apps
    from sidecar.logs import AccessLog

    services = build_services(config)
    await services.database.migrate()
    await services.start()
    try:
        public, _ = wrap_apps(services, create_public_app(services, manage_lifespan=False), object())
        assert isinstance(public, AccessLog)
        lines: list[str] = []
        public.write = lines.append  # type: ignore[method-assign]
        await public.app.start()  # what the first ASGI request would do
        yield services, public, lines
    finally:
        await services.stop()


async def counted(services: Any, prefixes: tuple[str, ...]) -> dict[str, float]:
    """The samples of the metrics exposition whose names start with one of ``prefixes``."""
    text, _ = await services.metrics.render()
    out = {}
    for line in text.decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith(prefixes):
            out[name] = float(value)
    return out
