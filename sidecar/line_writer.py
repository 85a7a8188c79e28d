"""Log lines written in large chunks by a thread, never by the event loop.

nginx's ``access_log ... buffer=64k flush=1s``: a request only appends its line to a queue (a
``deque``, whose ``append`` and ``popleft`` are atomic, so neither side takes a lock); a writer
thread joins what has queued and writes it with one call when ``buffer_size`` characters have
queued since the last wake-up, or ``flush_interval`` after it, and at ``close``. A write to a
slow or blocked stream (a full pipe to a log shipper) then stalls that thread, not the requests.

Memory stays bounded: past ``max_lines`` queued lines, new lines are dropped and counted, and the
writer says how many in a line of its own once it can write again.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import TextIO


class BufferedLineWriter:
    """``write(line)`` from the event loop; a daemon thread, started at the first line, does the I/O."""

    def __init__(
        self,
        stream: Callable[[], TextIO],
        *,
        buffer_size: int = 64 * 1024,
        flush_interval: float = 1.0,
        max_lines: int = 100_000,
    ) -> None:
        self._stream = stream  # looked up at each write: tests and supervisors swap sys.stderr
        self._buffer_size = buffer_size
        self._flush_interval = flush_interval
        self._max_lines = max_lines
        self._lines: deque[str] = deque()
        self._since_wake = 0  # characters queued since the writer was last woken (loop side only)
        self._wake = threading.Event()
        self._closing = False
        self._thread: threading.Thread | None = None
        self.dropped = 0
        """Lines refused because ``max_lines`` were queued (only ever grows)."""
        self._dropped_reported = 0  # writer side only

    def write(self, line: str) -> None:
        lines = self._lines
        if len(lines) >= self._max_lines or self._closing:
            self.dropped += 1
            return
        lines.append(line)
        if self._thread is None:
            self._start()
        self._since_wake += len(line)
        if self._since_wake >= self._buffer_size:
            self._since_wake = 0
            self._wake.set()

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every queued line now (the writer thread's work; ``close`` calls it last)."""
        parts: list[str] = []
        take = self._lines.popleft
        with contextlib.suppress(IndexError):
            while True:
                parts.append(take())
        dropped = self.dropped
        if dropped != self._dropped_reported:
            parts.append(
                f"{dropped - self._dropped_reported} log lines dropped: the log stream was too slow\n"
            )
            self._dropped_reported = dropped
        if not parts:
            return
        # A closed or broken log pipe must not take the server down.
        with contextlib.suppress(OSError, ValueError):
            stream = self._stream()
            stream.write("".join(parts))
            stream.flush()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread and write what is left (called at shutdown, after the last request)."""
        self._closing = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join(timeout)
        self.flush()

    async def aclose(self) -> None:
        self.close()
