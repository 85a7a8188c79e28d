"""Two ``sidecar serve`` replicas on one database and one Redis: an answer remembered by one (its
listener's memo: a cache hit's answer, or with the cache off a load's), the session revoked or
its identity deactivated through the other. The first replica must deny the very next request
with the cache off, and within the revocation channel's delay with it on, then never allow
again. tests/proxy/test_memo_attacks.py shows the memo's part in process; this shows
``sidecar serve`` is wired so (the revocation listener, the memo, the known requests).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.config.loader import deep_merge
from tests.ops.probes import api, register
from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config
from tests.proxy.harness import redis_server

RULES = """
version: 1
rules:
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
"""
PASSWORD = "Memo-replicas-serve-4-argon2!"


@contextlib.contextmanager
def replicas(tmp: Path, cache: str) -> Iterator[tuple[Proc, Proc]]:
    (tmp / "rules.yaml").write_text(RULES)
    with redis_server(tmp) as redis, contextlib.ExitStack() as stack:
        procs = []
        for name in ("first", "second"):
            public_port, admin_port = ports()
            config = deep_merge(
                base_config(tmp, public_port, admin_port, rules=[str(tmp / "rules.yaml")]),
                {
                    "session": {"cache_ttl": cache},
                    "redis": {"url": f"redis://127.0.0.1:{redis.port}/0", "key_prefix": "replicas:"},
                },
            )
            folder = tmp / name
            folder.mkdir()
            path = write_config(folder / "sidecar.yaml", config)
            if name == "first":
                migrate(path, folder)
            procs.append(
                stack.enter_context(
                    running(serve_argv(path), cwd=folder, public_port=public_port, admin_port=admin_port)
                )
            )
        yield procs[0], procs[1]


class KeptAlive:
    """One keep-alive connection to a replica's public listener."""

    def __init__(self, proc: Proc) -> None:
        port = int(proc.public_url.rsplit(":", 1)[1])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)

    def ask(self, request: bytes) -> int:
        """The status of the answer to ``request`` (a decision: no body to a 200, a JSON one else)."""
        self.sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += self.sock.recv(65536)
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("cache", ["0s", "1m"])
@pytest.mark.parametrize("how", ["logout", "admin-identity-sessions", "deactivate"])
def test_a_revocation_through_one_replica_is_denied_by_the_other(
    tmp_path: Path, cache: str, how: str
) -> None:
    with replicas(tmp_path, cache) as (first, second):
        with api(first) as client:
            done = register(client, f"{how}-{cache}@example.com", PASSWORD)
            assert done.status_code == 200, done.text
            token, identity_id = done.json()["session_token"], done.json()["identity"]["id"]
        request = (
            f"GET /.auth/decisions/private/x HTTP/1.1\r\nHost: app.test\r\nX-Session-Token: {token}\r\n\r\n"
        ).encode()
        conn = KeptAlive(second)
        try:
            assert [conn.ask(request) for _ in range(5)] == [200] * 5  # remembered from the third
            if how == "logout":
                resp = httpx.request(
                    "DELETE",
                    f"{first.public_url}/.auth/self-service/logout/api",
                    json={"session_token": token},
                    timeout=10,
                )
                assert resp.status_code == 204, resp.text
            elif how == "admin-identity-sessions":
                resp = httpx.delete(f"{first.admin_url}/admin/identities/{identity_id}/sessions", timeout=10)
                assert resp.status_code == 204, resp.text
            else:
                ops = [{"op": "replace", "path": "/state", "value": "inactive"}]
                resp = httpx.patch(f"{first.admin_url}/admin/identities/{identity_id}", json=ops, timeout=10)
                assert resp.status_code == 200, resp.text
            # The cache off: the very next request loads the session. On: the channel's delay.
            deadline = time.monotonic() + (0 if cache == "0s" else 2)
            while (status := conn.ask(request)) == 200 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert status == 401
            assert [conn.ask(request) for _ in range(3)] == [401] * 3
        finally:
            conn.close()
