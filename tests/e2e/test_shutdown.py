"""SIGTERM during a slow proxied download: the download finishes, new connections are refused
at once, and ``sidecar serve`` exits 0, under each HTTP server (``serve.<listener>.server``)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.config.loader import deep_merge
from tests.conftest import free_port
from tests.ops.serve import SERVERS, base_config, migrate, on_server, ports, running, serve_argv, write_config

# Bodies up to 64 KiB with a Content-Length are forwarded in one read (sidecar/proxy/forward.py),
# so the stream is larger than that to be streamed chunk by chunk.
CHUNKS, CHUNK, PAUSE = 20, b"x" * 8192, 0.25  # ~5 s of streaming


@pytest.fixture
def slow_upstream() -> Iterator[int]:
    """A raw asyncio HTTP/1.1 server on 127.0.0.1 that streams its body slowly."""
    port = free_port()
    loop = asyncio.new_event_loop()
    started = threading.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n")
        writer.write(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (CHUNKS * len(CHUNK)))
        for _ in range(CHUNKS):
            writer.write(CHUNK)
            await writer.drain()
            await asyncio.sleep(PAUSE)
        writer.close()

    def run() -> None:
        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port))
        started.set()
        loop.run_forever()
        server.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(5)
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_a_streaming_download(
    tmp_path: Path, slow_upstream: int, workers: str, server: str
) -> None:
    public_port, admin_port = ports()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nrules:\n  - id: all\n    match: {paths: ['/**']}\n    require: public\n")
    config = deep_merge(
        base_config(
            tmp_path,
            public_port,
            admin_port,
            proxy={"upstream": f"http://127.0.0.1:{slow_upstream}"},
            rules=[str(rules)],
        ),
        on_server(server),
    )
    path = write_config(tmp_path / "cfg.yaml", config)
    migrate(path, tmp_path)
    with running(
        serve_argv(path, "--workers", workers), cwd=tmp_path, public_port=public_port, admin_port=admin_port
    ) as proc:
        received: list[int] = []
        result: dict[str, object] = {}

        def download() -> None:
            try:
                with httpx.stream("GET", f"{proc.public_url}/big.bin", timeout=30) as r:
                    result["status"] = r.status_code
                    for chunk in r.iter_bytes():
                        received.append(len(chunk))
            except Exception as exc:  # reported by the assertions below
                result["error"] = exc

        thread = threading.Thread(target=download)
        thread.start()
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received, f"the download did not start: {result}"

        os.kill(proc.process.pid, signal.SIGTERM)
        # Refused within a moment (each worker closes its listener as it handles the signal; on a
        # loaded CI machine a worker may take a few hundred ms to get the turn), while the download
        # still streams.
        deadline = time.monotonic() + 3
        while True:
            try:
                socket.create_connection(("127.0.0.1", public_port), 1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "new connections were still accepted 3 s after SIGTERM"
            time.sleep(0.05)
        assert thread.is_alive(), f"the download should still be streaming: {result} {sum(received)}"

        thread.join(30)
        assert result.get("status") == 200 and "error" not in result, result
        assert sum(received) == CHUNKS * len(CHUNK)
        assert proc.process.wait(30) == 0
