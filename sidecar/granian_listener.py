"""One listener served by granian (``serve.<listener>.server: granian``) on this worker's loop.

granian's HTTP stack (hyper, in Rust) runs on one thread of its own and hands each request to
the ASGI app on our event loop, as granian's own workers do (its single-threaded runtime, the
``st`` mode). We use granian's worker directly rather than its ``Granian`` server because the
sockets are bound once in the parent (``sidecar.server.bind``) and both listeners share one
loop and one set of services; those are granian internals, so pyproject pins the minor version.

- The guard: ``RequestTargetGuard`` is the outermost app (414 / 400 before routing). hyper itself
  answers 414 for a target over 65,534 bytes and 431 for a head over ``max_buffer_size``.
- Shutdown (``stop``): granian stops accepting, closes idle keep-alive connections and lets
  in-flight requests finish; ``serve`` returns when they have, or after ``grace`` seconds, when
  the requests still running are cancelled (as uvicorn's ``timeout_graceful_shutdown`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import socket
from typing import Any, cast

from granian.http import HTTP1Settings

from sidecar.request_target import RequestTargetGuard

log = logging.getLogger("sidecar")

# granian's stub (``_granian.pyi``) lags its binary (``SocketHolder``'s and ``ASGIWorker``'s
# arguments, ``serve_str``): these two are typed as what they are to us, unchecked.
_core: Any = importlib.import_module("granian._granian")
_futures: Any = importlib.import_module("granian._futures")

MAX_CONNECTIONS = 1 << 20
"""granian's ``backpressure`` caps open connections per worker (256 by default) and leaves the
rest waiting in the kernel's queue; uvicorn has no cap, and open WebSockets count: no cap here
either, in effect (file descriptors are the limit)."""
CANCELLED_WAIT = 2.0
"""Seconds granted, after the grace period, for cancelled requests' connections to close."""


class GranianListener:
    def __init__(self, app: Any, sock: socket.socket, *, max_request_line: int, grace: float) -> None:
        self._app = RequestTargetGuard(app, max_request_line)
        self._sock = sock
        self._grace = grace
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()

    def stop(self) -> None:
        """Stop accepting and drain (``serve`` returns once drained or after the grace period)."""
        self._stopping.set()

    async def _handle(self, scope: Any, proto: Any) -> None:
        # granian's asyncio scheduler runs each request as a task of its own: this one.
        task = cast("asyncio.Task[Any]", asyncio.current_task())
        self._inflight.add(task)
        try:
            await self._app(scope, proto.receive, proto.send)
        finally:
            self._inflight.discard(task)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        drained = loop.create_future()

        def set_drained() -> None:
            if not drained.done():
                drained.set_result(None)

        def on_drained() -> None:  # called from granian's thread once its connections are closed
            loop.call_soon_threadsafe(set_drained)

        signal = _core.WorkerSignal()
        signal.add_cb(on_drained)
        # granian's listener owns (and closes, when it stops) the descriptor it is given: a copy.
        holder = _core.SocketHolder(os.dup(self._sock.fileno()), False, 2048)
        worker = _core.ASGIWorker(
            worker_id=1,  # for granian's own log lines
            sock=(None, holder),
            ipc=None,  # granian's metrics are off: ours are on /metrics
            threads=1,  # one runtime thread: hyper's share of a request is small next to the app's
            blocking_threads=512,  # granian's default
            py_threads=1,  # the ASGI app runs on our loop
            py_threads_idle_timeout=30,
            backpressure=MAX_CONNECTIONS,
            http_mode="1",  # HTTP/1.1, as with uvicorn (TLS and h2 are the front proxy's job)
            http1_opts=HTTP1Settings(),
            websockets_enabled=True,
        )
        handle = _futures._future_watcher_wrapper(self._handle)
        scheduler = _futures._new_cbscheduler(loop, handle, impl_asyncio=True)
        worker.serve_str(scheduler, loop, signal)
        try:
            await self._stopping.wait()
        finally:
            signal.set()
            # Ours too: while any descriptor of a listening socket is open, the kernel completes
            # handshakes that nobody will accept.
            self._sock.close()
        try:
            await asyncio.wait_for(asyncio.shield(drained), self._grace)
        except TimeoutError:
            log.warning(
                "%d request(s) still running after %.0f s: cancelled", len(self._inflight), self._grace
            )
            for task in list(self._inflight):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(drained), CANCELLED_WAIT)
