"""A real HTTP server on a free 127.0.0.1 port that records what it receives and answers what the
test tells it to: the fake range API, webhook receivers. It runs in a thread of the test process
and is stopped (and its port released) when the context exits."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay: float = 0.0


Responder = Callable[[Received], Answer]


@dataclass
class Receiver:
    url: str
    port: int
    received: list[Received] = field(default_factory=list)
    responder: Responder = lambda request: Answer(200)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` requests arrived (fails the test after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"expected {count} requests, got {len(self.received)}: {self.received}")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:
                # The sender died mid-request (a replica killed while it sends): nothing was
                # delivered, as any real server would see it.
                self.close_connection = True
                return
            request = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with receiver._lock:
                receiver.received.append(request)
            answer = receiver.responder(request)
            if answer.delay:
                time.sleep(answer.delay)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: object) -> None:
            return None

    return Handler


@contextlib.contextmanager
def http_receiver(responder: Responder | None = None, *, port: int = 0) -> Iterator[Receiver]:
    """A recording server; ``port`` pins a port (to bring a receiver back where it was)."""
    receiver = Receiver(url="", port=0)
    if responder is not None:
        receiver.responder = responder
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(receiver))
    server.daemon_threads = True
    receiver.port = int(server.server_address[1])
    receiver.url = f"http://127.0.0.1:{receiver.port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
