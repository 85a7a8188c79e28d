"""``serve.public.fast_path`` over the wire: two ``sidecar serve`` processes on one database, one
answering cached decisions and whoami in the HTTP protocol (the default), one with
``fast_path: false``, the same raw bytes sent to each. Responses and access log lines must be
the same apart from the request id. The in-process tests (tests/proxy/test_fast_path.py) show the
protocol answers these without the ASGI app; this shows ``sidecar serve`` is wired the same way.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar.config.loader import deep_merge
from tests.ops.probes import api, login, register
from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

RULES = """
version: 1
rules:
  - {id: public, match: {paths: ["/public/**"]}, require: public}
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
  - {id: optional, match: {paths: ["/optional/**"]}, require: optional}
  - {id: deny, match: {paths: ["/deny/**"]}, require: deny}
  - {id: mfa, match: {paths: ["/mfa/**"]}, require: {level: authenticated, aal: aal2}}
"""
EMAIL, PASSWORD = "fast-path@example.com", "Fast-path-serve-4-argon2!"
# Trusted: 127.0.0.1 only, so a client bound to 127.0.0.2 is an untrusted peer.
TRUSTED, UNTRUSTED = "127.0.0.1", "127.0.0.2"
_GENERATED_ID = re.compile(rb"[0-9a-f]{32}")
CLOSE = (
    b"GET /.auth/authz/nginx HTTP/1.1\r\nHost: a\r\nX-Original-URI: /public/x\r\nConnection: close\r\n\r\n"
)


@contextlib.contextmanager
def pair(tmp: Path) -> Iterator[tuple[Proc, Proc]]:
    """(fast path on, fast path off) on one SQLite database."""
    (tmp / "rules.yaml").write_text(RULES)
    procs: list[Proc] = []
    with contextlib.ExitStack() as stack:
        for name, fast in (("on", True), ("off", False)):
            public_port, admin_port = ports()
            config = deep_merge(
                base_config(tmp, public_port, admin_port, rules=[str(tmp / "rules.yaml")]),
                # One base URL for both: it is in every login redirect.
                {
                    "serve": {
                        "public": {
                            "fast_path": fast,
                            "trusted_proxies": [f"{TRUSTED}/32"],
                            "base_url": "http://auth.test/.auth",
                        }
                    },
                    "selfservice": {"default_browser_return_url": "http://auth.test/"},
                },
            )
            folder = tmp / name
            folder.mkdir()
            path = write_config(folder / "sidecar.yaml", config)
            if name == "on":
                migrate(path, folder)
            procs.append(
                stack.enter_context(
                    running(serve_argv(path), cwd=folder, public_port=public_port, admin_port=admin_port)
                )
            )
        yield procs[0], procs[1]


def exchange(proc: Proc, data: bytes, peer: str = TRUSTED) -> bytes:
    """``data`` then a closing request on one connection; everything the server sent until it closed."""
    port = int(proc.public_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(peer, 0)) as sock:
        sock.sendall(data + CLOSE)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return _GENERATED_ID.sub(b"<request-id>", b"".join(chunks))


def cases(token: str, cookie: str) -> list[tuple[str, bytes, str]]:
    """(name, raw request bytes, peer)."""

    def req(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
        return "\r\n".join([f"{method} {target} HTTP/{version}", "Host: app.test", *headers, "", ""]).encode()

    tok, ck, bearer = (
        f"X-Session-Token: {token}",
        f"Cookie: {cookie}={token}",
        f"Authorization: Bearer {token}",
    )
    html = "Accept: text/html"
    fwd = ["X-Forwarded-Host: shop.example", "X-Forwarded-Proto: https"]
    out: list[tuple[str, bytes, str]] = []
    for uri in (
        "/private/x?a=1",
        "/public/x",
        "/optional/x",
        "/deny/x",
        "/mfa/x",
        "/nowhere",
        "/private/../x",
    ):
        for cred_name, cred in (("token", [tok]), ("cookie", [ck]), ("bearer", [bearer]), ("anonymous", [])):
            for accept in ([], [html]):
                nginx = req("/.auth/authz/nginx", f"X-Original-URI: {uri}", *cred, *accept, *fwd)
                out.append((f"nginx {uri} {cred_name} {accept}", nginx, TRUSTED))
            forward = req(
                "/.auth/authz/forward-auth",
                f"X-Forwarded-Uri: {uri}",
                "X-Forwarded-Method: GET",
                *cred,
                html,
                *fwd,
            )
            out.append((f"forward-auth {uri} {cred_name}", forward, TRUSTED))
            out.append((f"envoy {uri} {cred_name}", req(f"/.auth/authz/envoy{uri}", *cred), TRUSTED))
            out.append((f"oathkeeper {uri} {cred_name}", req(f"/.auth/decisions{uri}", *cred, html), TRUSTED))
    nginx_private = req("/.auth/authz/nginx", "X-Original-URI: /private/x", tok)
    out += [
        ("untrusted peer", nginx_private, UNTRUSTED),
        ("untrusted envoy", req("/.auth/authz/envoy/private/x", tok, *fwd), UNTRUSTED),
        ("HEAD", req("/.auth/authz/nginx", "X-Original-URI: /private/x", tok, method="HEAD"), TRUSTED),
        ("HEAD denied", req("/.auth/authz/forward-auth", "X-Forwarded-Uri: /deny/x", method="HEAD"), TRUSTED),
        ("HTTP/1.0", req("/.auth/authz/nginx", "X-Original-URI: /private/x", tok, version="1.0"), TRUSTED),
        ("close", req("/.auth/authz/nginx", "X-Original-URI: /private/x", tok, "Connection: close"), TRUSTED),
        ("pipelined", nginx_private * 3 + req("/.auth/authz/nginx", "X-Original-URI: /deny/x"), TRUSTED),
        (
            "request id",
            req("/.auth/authz/nginx", "X-Original-URI: /private/x", tok, "X-Request-ID: edge-1"),
            TRUSTED,
        ),
        ("untrusted request id", req("/.auth/authz/envoy/public/x", "X-Request-ID: edge-1"), UNTRUSTED),
        ("odd path", req("/.auth/authz/nginx", "X-Original-URI: /public/%2e%2e/%2fx"), TRUSTED),
        ("whoami", req("/.auth/sessions/whoami", tok), TRUSTED),
        ("whoami cookie", req("/.auth/sessions/whoami?x=1", ck), TRUSTED),
        ("whoami HEAD", req("/.auth/sessions/whoami", bearer, method="HEAD"), TRUSTED),
        ("whoami anonymous", req("/.auth/sessions/whoami"), TRUSTED),
        ("whoami unknown", req("/.auth/sessions/whoami", "X-Session-Token: ory_st_nope"), TRUSTED),
        ("jwks", req("/.auth/.well-known/jwks.json"), TRUSTED),
    ]
    return out


def access_lines(proc: Proc) -> list[dict[str, Any]]:
    out = []
    for line in proc.log().splitlines():
        if '"logger":"sidecar.access"' not in line:
            continue
        entry = json.loads(line)
        if entry["listener"] != "public" or entry["path"].startswith("/.auth/self-service"):
            continue
        for volatile in ("time", "latency_ms"):
            del entry[volatile]
        if _GENERATED_ID.fullmatch(entry["request_id"].encode()):
            entry["request_id"] = "<request-id>"
        out.append(entry)
    return out


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc]]:
    with pair(tmp_path_factory.mktemp("fast-serve")) as procs:
        yield procs


def test_sidecar_serve_answers_the_same_with_and_without_the_fast_path(servers: tuple[Proc, Proc]) -> None:
    fast, slow = servers
    assert "answered in the HTTP protocol" in fast.log()
    assert "answered in the HTTP protocol" not in slow.log()
    with api(fast) as client:
        assert register(client, EMAIL, PASSWORD).status_code == 200
        answer = login(client, EMAIL, PASSWORD)
        assert answer.status_code == 200, answer.text
        token = answer.json()["session_token"]
    for name, data, peer in cases(token, "ory_kratos_session"):
        for proc in (fast, slow):
            exchange(proc, data, peer)  # the session and its cache entry in both
        got, want = exchange(fast, data, peer), exchange(slow, data, peer)
        assert got == want, name
        assert got.startswith(b"HTTP/1.1 "), name
    # Every line is written by shutdown (buffered); a clean stop drains and exits 0.
    assert fast.terminate() == 0 and slow.terminate() == 0
    fast_lines, slow_lines = access_lines(fast), access_lines(slow)
    assert len(fast_lines) > 300
    assert fast_lines == slow_lines
