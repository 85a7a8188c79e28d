"""What the attacker-view tests share: a recording upstream, raw HTTP/1.1 requests, a running sidecar."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from sidecar.config.loader import deep_merge
from tests.ops.serve import Proc, migrate, ports, proxied_config, running, serve_argv, write_config

RULES = """version: 1
rules:
  - id: everything
    match: {paths: ["/**"]}
    require: optional
"""
PASSWORD = "a-long-probing-passphrase"


@dataclass
class Recorder:
    """An upstream that answers 200 and remembers every request line and header it was sent."""

    port: int = 0
    seen: list[tuple[bytes, list[tuple[str, bytes]]]] = field(default_factory=list)

    def targets(self) -> list[bytes]:
        return [line.split(b" ")[1] for line, _ in self.seen]

    def headers_of(self, target: bytes) -> list[tuple[str, bytes]]:
        return next(h for line, h in reversed(self.seen) if line.split(b" ")[1] == target)


@contextlib.contextmanager
def recording_upstream() -> Iterator[Recorder]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the proxy's pooled client expects

        def _answer(self) -> None:
            raw = [(k.lower(), v.encode("latin-1")) for k, v in self.headers.raw_items()]
            line: bytes = self.raw_requestline  # type: ignore[attr-defined]  # set by handle_one_request
            recorder.seen.append((line.rstrip(b"\r\n"), raw))
            body = json.dumps({"path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_HEAD = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def raw_request(port: int, head: bytes, *, timeout: float = 10) -> bytes:
    """Send ``head`` (request line and headers, no final CRLF) as is; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@contextlib.contextmanager
def probed_sidecar(
    tmp: Path, upstream: Recorder, *, redis: Mapping[str, Any] | None = None, **extra: Any
) -> Iterator[Proc]:
    """``sidecar serve`` (production mode, migrated) in front of ``upstream`` with one open rule."""
    public_port, admin_port = ports()
    sections: dict[str, Any] = {} if redis is None else {"redis": dict(redis)}
    config = deep_merge(proxied_config(tmp, public_port, admin_port, upstream.port, RULES, **sections), extra)
    path = write_config(tmp / "sidecar.yaml", config)
    migrate(path, tmp)
    with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


def api(proc: Proc) -> httpx.Client:
    return httpx.Client(base_url=f"{proc.public_url}/.auth", timeout=15)


def register(client: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    flow = client.get("/self-service/registration/api").json()
    return client.post(
        f"/self-service/registration?flow={flow['id']}",
        json={"method": "password", "traits": {"email": email}, "password": password},
    )


def login(
    client: httpx.Client, identifier: str, password: str = PASSWORD, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    flow = client.get("/self-service/login/api", headers=headers).json()
    return client.post(
        f"/self-service/login?flow={flow['id']}",
        json={"method": "password", "identifier": identifier, "password": password},
        headers=headers,
    )


def identities(proc: Proc) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(f"{proc.admin_url}/admin/identities", timeout=10).json()
    return found


def message_ids(body: Mapping[str, Any]) -> list[int]:
    ui = body.get("ui") or {}
    ids = [m["id"] for m in ui.get("messages", [])]
    for node in ui.get("nodes", []):
        ids += [m["id"] for m in node.get("messages", [])]
    return ids
