"""The protocol-level proxy path (``sidecar.proxy.fast``) against the ASGI path, over the wire.

Two ``sidecar serve`` processes share one database and one rules file: ``fast`` as shipped,
``asgi`` with ``serve.public.fast_path: false``. Each proxies to its own scripted upstream (raw bytes
per path: Content-Length, chunked, close-delimited, 204/304, hop-by-hop and cookie headers,
large bodies, a stall past the read timeout, a port nobody listens on). The same raw requests
go to both; the upstream must see the same request heads and the client the same responses,
the request id aside (and the chunk sizes of a streamed chunked body: the payload is compared).
tests/proxy/test_fast_proxy_protocol.py shows, in process, that the protocol serves these
without the ASGI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

RULES = """version: 1
rules:
  - id: private
    match: {paths: ["/private/**"]}
    require: authenticated
  - id: open
    match: {paths: ["/open/**"]}
    require: public
"""
PASSWORD = "a-long-fast-path-passphrase"
BIG = 6 * 1024 * 1024
HOPS = b"Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\n"


def _chunked(pieces: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


# path -> (response bytes, close after writing)
RESPONSES: dict[bytes, tuple[bytes, bool]] = {
    b"/private/cl": (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\n"
        + HOPS
        + b"X-App: yes\r\nContent-Length: 5\r\n\r\nhello",
        False,
    ),
    b"/private/chunked": (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-App: c\r\n\r\n"
        + _chunked([b"one ", b"two ", b"three"]),
        False,
    ),
    b"/private/empty": (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    b"/private/204": (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", False),
    b"/private/304": (b'HTTP/1.1 304 Not Modified\r\nETag: "e"\r\n\r\n', False),
    b"/private/redirect": (b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n", False),
    b"/private/hints": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        False,
    ),
    b"/private/close": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"z" * 100_000, True),
    b"/private/big": (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"b" * BIG, False),
    b"/private/bigchunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked([b"c" * 65536] * 96),
        False,
    ),
    b"/private/truncated": (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"t" * 70_000, True),
    b"/private/bad": (b"HTTP/1.1 abc\r\n\r\n", True),
    b"/open/x": (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nopen", False),
}


@dataclass
class Scripted:
    """A raw upstream on its own thread: records each request head, answers by path."""

    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    loop: asyncio.AbstractEventLoop | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                target = head.split(b" ")[1].partition(b"?")[0]
                if target == b"/private/slow":
                    await asyncio.sleep(4)
                    return
                answer, close = RESPONSES.get(
                    target, (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", False)
                )
                if head.startswith(b"HEAD "):
                    answer = answer.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
                writer.write(answer)
                await writer.drain()
                if close or head.startswith(b"HEAD "):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.contextmanager
def scripted() -> Iterator[Scripted]:
    up = Scripted()
    started = threading.Event()
    stop: list[Any] = []

    def run() -> None:
        async def main() -> None:
            server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
            up.port = server.sockets[0].getsockname()[1]
            up.loop = asyncio.get_running_loop()
            done = asyncio.Event()
            stop.append(done)
            started.set()
            await done.wait()
            server.close()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield up
    finally:
        assert up.loop is not None
        up.loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)


@contextlib.contextmanager
def dead_port() -> Iterator[int]:
    """A port nobody listens on, for the whole block: held bound (without SO_REUSEADDR) and never
    listening, so a connection to it is refused and no other server can take it. A port only
    picked and released (bind to 0, close) goes back to the kernel's pool: a server started by a
    test running alongside could get it, and the proxy's "upstream down" request then reached that
    server (the 404 once seen instead of the 502, under load)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])


@dataclass
class Pair:
    fast: Proc
    asgi: Proc
    ups: dict[str, Scripted]
    token: str

    def port(self, name: str) -> int:
        proc = self.fast if name == "fast" else self.asgi
        return int(proc.public_url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("fast")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    with scripted() as up_fast, scripted() as up_asgi, contextlib.ExitStack() as stack:
        procs: dict[str, Proc] = {}
        for name, up, fast in (("fast", up_fast, True), ("asgi", up_asgi, False)):
            public, admin = ports()
            config = base_config(
                tmp,
                public,
                admin,
                proxy={"upstream": f"http://127.0.0.1:{up.port}", "timeouts": {"read": "1s"}},
                rules=[str(rules)],
                log={"level": "info", "format": "json"},
            )
            config["serve"]["public"]["fast_path"] = fast
            path = write_config(tmp / f"{name}.yaml", config)
            if name == "fast":
                migrate(path, tmp)
            procs[name] = stack.enter_context(
                running(serve_argv(path), cwd=tmp, public_port=public, admin_port=admin)
            )
        token = sign_in(procs["fast"])
        yield Pair(procs["fast"], procs["asgi"], {"fast": up_fast, "asgi": up_asgi}, token)


def sign_in(proc: Proc) -> str:
    admin = httpx.post(
        f"{proc.admin_url}/admin/identities",
        json={
            "schema_id": "default",
            "traits": {"email": "fast@example.com"},
            "credentials": {"password": {"config": {"password": PASSWORD}}},
        },
        timeout=30,
    )
    assert admin.status_code == 201, admin.text
    flow = httpx.get(f"{proc.public_url}/.auth/self-service/login/api", timeout=30).json()
    login = httpx.post(
        f"{proc.public_url}/.auth/self-service/login",
        params={"flow": flow["id"]},
        json={"method": "password", "identifier": "fast@example.com", "password": PASSWORD},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    return str(login.json()["session_token"])


def exchange(port: int, data: bytes, *, timeout: float = 20) -> bytes:
    """Send ``data`` (one or more requests) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(262144):
                chunks.append(chunk)
    return b"".join(chunks)


_RID = re.compile(rb"[0-9a-f]{32}")


def responses(data: bytes, methods: list[bytes]) -> list[tuple[bytes, list[bytes], bytes]]:
    """Split a connection's bytes into (status line, header lines, decoded body) per response,
    request ids masked; chunked bodies de-chunked."""
    out = []
    rest = data
    for method in methods:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            out.append((b"<cut>", [head], b""))
            break
        lines = _RID.sub(b"<rid>", head).split(b"\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
        status = int(lines[0].split(b" ")[1])
        if method == b"HEAD" or status in (204, 304):
            body = b""
        elif b"content-length" in fields:
            n = int(fields[b"content-length"])
            body, rest = rest[:n], rest[n:]
        elif fields.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    rest = rest[2:]
                    break
                body, rest = body + rest[:size], rest[size + 2 :]
        else:
            body, rest = rest, b""
        # A JSON error names the request id; other bodies are compared as they are.
        out.append((lines[0], lines[1:], _RID.sub(b"<rid>", body) if body[:1] == b"{" else body))
    return out


def request(target: bytes, *, method: bytes = b"GET", extra: bytes = b"", close: bool = True) -> bytes:
    return (
        method
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: app.test\r\n"
        + extra
        + (b"Connection: close\r\n" if close else b"")
        + b"\r\n"
    )


def both(pair: Pair, data: bytes, methods: list[bytes]) -> tuple[Any, Any]:
    """The same bytes to each server: (fast responses, asgi responses), and the heads each
    upstream saw for them (request ids masked)."""
    seen = {name: len(up.heads) for name, up in pair.ups.items()}
    got = {}
    for name in ("fast", "asgi"):
        got[name] = responses(exchange(pair.port(name), data), methods)
    heads = {name: [_RID.sub(b"<rid>", h) for h in up.heads[seen[name] :]] for name, up in pair.ups.items()}
    return got, heads


def token_headers(pair: Pair) -> bytes:
    return b"X-Session-Token: " + pair.token.encode() + b"\r\n"


CASES = [
    "/private/cl",
    "/private/chunked",
    "/private/empty",
    "/private/204",
    "/private/304",
    "/private/redirect",
    "/private/hints",
    "/private/close",
    "/private/big",
    "/private/bigchunked",
    "/private/x?q=1&r=%2F",
    "/open/x",
]


@pytest.mark.parametrize("target", CASES)
def test_same_upstream_request_and_client_response(pair: Pair, target: str) -> None:
    extra = (
        token_headers(pair)
        + b"Cookie: theme=dark; ory_kratos_session=forged; other=1\r\n"
        + b"X-User-ID: spoofed\r\nx_user_email: spoofed@example.com\r\nX-Forwarded-For: 10.9.9.9\r\n"
        + b"X-HTTP-Method-Override: DELETE\r\nAccept: */*\r\nX-Request-ID: client-chosen\r\n"
        + b"Connection: X-Drop\r\nX-Drop: hop\r\nUser-Agent: probe\r\n"
    )
    got, heads = both(pair, request(target.encode(), extra=extra), [b"GET"])
    assert got["fast"] == got["asgi"]
    assert heads["fast"] == heads["asgi"] and len(heads["fast"]) == 1
    head = heads["fast"][0].lower()
    assert b"spoofed" not in head and b"x-drop" not in head and b"override" not in head
    assert b"ory_kratos_session" not in head and b"x-session-token" not in head


def test_keep_alive_and_pipelined_requests_keep_their_order(pair: Pair) -> None:
    t = token_headers(pair)
    data = (
        request(b"/private/cl", extra=t, close=False)
        + request(b"/private/chunked", extra=t, close=False)
        + request(b"/private/big", extra=t, close=False)
        + request(b"/private/204", extra=t, close=False)
        + request(b"/private/cl", method=b"HEAD", extra=t, close=False)
        + request(b"/open/x", extra=t)
    )
    methods = [b"GET", b"GET", b"GET", b"GET", b"HEAD", b"GET"]
    got, heads = both(pair, data, methods)
    assert [s for s, _, _ in got["fast"]] == [s for s, _, _ in got["asgi"]]
    assert got["fast"] == got["asgi"]
    assert heads["fast"] == heads["asgi"]
    assert [b[:5] for _, _, b in got["fast"]] == [b"hello", b"one t", b"bbbbb", b"", b"", b"open"]


def test_denied_and_unusual_requests_answer_the_same(pair: Pair) -> None:
    cases = [
        (request(b"/private/cl"), [b"GET"]),  # no session: redirect to login
        (request(b"/private/cl", extra=b"Accept: application/json\r\n"), [b"GET"]),
        (request(b"/private/cl", extra=b"X-Session-Token: nope\r\n"), [b"GET"]),
        (request(b"/private/cl", method=b"HEAD", extra=token_headers(pair)), [b"HEAD"]),
        (
            request(b"/private/cl", method=b"POST", extra=token_headers(pair) + b"Content-Length: 3\r\n")
            + b"abc",
            [b"POST"],
        ),
        (request(b"/private/../private/cl", extra=token_headers(pair)), [b"GET"]),
        (request(b"/nowhere", extra=token_headers(pair)), [b"GET"]),
    ]
    for data, methods in cases:
        got, heads = both(pair, data, methods)
        assert got["fast"] == got["asgi"], data
        assert heads["fast"] == heads["asgi"], data


def test_upstream_failures_are_the_same_502_and_504(pair: Pair) -> None:
    t = token_headers(pair)
    for target in (b"/private/slow", b"/private/bad"):
        got, _ = both(pair, request(target, extra=t), [b"GET"])
        assert got["fast"] == got["asgi"]
        assert got["fast"][0][0] == (
            b"HTTP/1.1 504 Gateway Timeout" if target.endswith(b"slow") else b"HTTP/1.1 502 Bad Gateway"
        )


def test_truncated_upstream_body_cuts_the_client_connection(pair: Pair) -> None:
    for name in ("fast", "asgi"):
        data = exchange(pair.port(name), request(b"/private/truncated", extra=token_headers(pair)))
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 100000" in head
        assert len(body) < 100_000


def test_client_gone_mid_body_leaves_the_server_serving(pair: Pair) -> None:
    for name in ("fast", "asgi"):
        port = pair.port(name)
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(request(b"/private/big", extra=token_headers(pair), close=False))
                assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
                time.sleep(0.2)  # the server is blocked on our full window: flow control
            # gone mid-body (a reset, as a killed client leaves it)
        got = responses(exchange(port, request(b"/private/cl", extra=token_headers(pair))), [b"GET"])
        assert got[0][2] == b"hello"


def test_a_dead_port_stays_dead_while_held() -> None:
    """What test_upstream_down_is_the_same_502 relies on: while held, connecting is refused and a
    server binding the port (as ``sidecar serve`` does, SO_REUSEADDR) cannot have it."""
    from sidecar.server import bind

    with dead_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        with pytest.raises(OSError, match="in use"):
            bind("127.0.0.1", port).close()


def test_upstream_down_is_the_same_502(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    answers = {}
    with contextlib.ExitStack() as stack:
        procs = {}
        for name, fast in (("fast", True), ("asgi", False)):
            public, admin = ports()
            config = base_config(
                tmp_path,
                public,
                admin,
                proxy={"upstream": f"http://127.0.0.1:{stack.enter_context(dead_port())}"},
                rules=[str(rules)],
            )
            config["serve"]["public"]["fast_path"] = fast
            path = write_config(tmp_path / f"{name}.yaml", config)
            if name == "fast":
                migrate(path, tmp_path)
            procs[name] = stack.enter_context(
                running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin)
            )
        for name, proc in procs.items():
            port = int(proc.public_url.rsplit(":", 1)[1])
            answers[name] = responses(exchange(port, request(b"/open/x")), [b"GET"])
    assert answers["fast"] == answers["asgi"]
    assert answers["fast"][0][0] == b"HTTP/1.1 502 Bad Gateway"
    assert b'"code":502' in answers["fast"][0][2]
