"""100 MB both ways through the proxy with flat sidecar memory (RSS sampled while streaming)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.proxy.harness import Proc, make_user, sidecar_server, upstream_server

SIZE = 100 * 1024 * 1024
RULES = "version: 1\nrules:\n  - {id: all, match: {paths: [/upload, /download]}, require: authenticated}\n"
# Generous for allocator noise, far below the 100 MB a buffering proxy would need.
MAX_GROWTH_KIB = 40 * 1024


class PeakRss:
    def __init__(self, proc: Proc) -> None:
        self.proc, self.peak, self._stop = proc, proc.rss_kib(), threading.Event()
        self.baseline = self.peak
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.rss_kib())
            time.sleep(0.02)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("streaming")
    (tmp / "rules.yaml").write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp, proxy={"upstream": upstream.url}, rules=[str(tmp / "rules.yaml")]) as sidecar,
    ):
        yield sidecar


def read_response(sock: socket.socket) -> tuple[bytes, int]:
    """Headers, and the number of body bytes read until the server closes."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    total = len(rest)
    buf = bytearray(1 << 20)
    while True:
        n = sock.recv_into(buf)
        if not n:
            return head, total
        total += n


async def test_upload_100mb_streams(stack: Any) -> None:
    _, _, token = await make_user(stack.config)
    chunk = b"u" * (1 << 20)
    with PeakRss(stack.proc) as rss, socket.create_connection(("127.0.0.1", stack.proc.port)) as s:
        s.sendall(
            f"POST /upload HTTP/1.1\r\nHost: x\r\nX-Session-Token: {token}\r\nContent-Length: {SIZE}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        for _ in range(SIZE // len(chunk)):
            s.sendall(chunk)
        head, _ = read_response(s)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert rss.peak - rss.baseline < MAX_GROWTH_KIB, (rss.baseline, rss.peak)


async def test_upload_count_reaches_upstream(stack: Any) -> None:
    _, _, token = await make_user(stack.config, email="count@example.com")
    size = 8 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", stack.proc.port)) as s:
        s.sendall(
            f"POST /upload HTTP/1.1\r\nHost: x\r\nX-Session-Token: {token}\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        piece = b"c" * 65536
        for _ in range(size // len(piece)):
            s.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        s.sendall(b"0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    if b"transfer-encoding: chunked" in head.lower():
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    assert json.loads(body)["received"] == size


async def test_download_100mb_streams(stack: Any) -> None:
    _, _, token = await make_user(stack.config, email="down@example.com")
    with PeakRss(stack.proc) as rss, socket.create_connection(("127.0.0.1", stack.proc.port)) as s:
        s.sendall(
            f"GET /download?size={SIZE} HTTP/1.1\r\nHost: x\r\nX-Session-Token: {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        head, total = read_response(s)
    assert head.startswith(b"HTTP/1.1 200") and f"content-length: {SIZE}".encode() in head.lower()
    assert total == SIZE
    assert rss.peak - rss.baseline < MAX_GROWTH_KIB, (rss.baseline, rss.peak)
