"""Log lines written in large chunks from the event loop, never blocking it.

nginx's ``access_log ... buffer=64k flush=1s``: a request appends its line to a list and adds its
length to a count; once ``buffer_size`` characters are waiting, or ``flush_interval`` after the
first of them (a timer on the running loop), they are joined and written with as few system calls
as the stream allows. Per request that is an append; per 64 KiB, one join and one write.

Why not a writer thread (what this module did before): a thread that wakes to write makes the
event loop hand it the GIL and the core, and every such hand-off stalls all requests in flight.
Over the wire that was the p99 tail of ``sidecar serve`` (issue 15, ``bench/log_tail.py``: decision
p99 7.1-8.4 ms with the thread, 1.9-3.0 ms writing each line from the loop, 1.6-2.2 ms without the
log), whatever the thread's poll period, priority or the GIL's switch interval.

A write from the loop must never wait on the reader of the log. How each stream is written:

- a regular file (or ``/dev/null``): one blocking ``write`` of the chunk; the page cache takes it,
  as nginx's log writes do, and the kernel keeps a shared file's offset whole between processes.
- a pipe, FIFO or terminal (a container's log, a log shipper, a console): the same pipe opened a
  second time through ``/proc/self/fd`` with ``O_NONBLOCK`` on that private open file (setting it
  on the inherited one would change it for every process sharing it), written in pieces of at most
  ``PIPE_BUF`` bytes cut at line ends: such a write is atomic, so the lines of several workers
  sharing the pipe never interleave, and it either goes whole or fails at once with ``EAGAIN``.
- a socket (journald's stdout stream): ``send(..., MSG_DONTWAIT)`` in the same pieces.
- anything without a file descriptor (a test's ``StringIO``): its own ``write``.

What a full pipe refuses stays pending, before any newer line, and is tried again on a short timer
and with each further buffer's worth of lines; each try writes chunk by chunk as long as the
stream takes them, so a backlog drains as fast as the reader reads and never costs one big join.
Memory stays bounded: past ``max_lines`` waiting lines, new lines are dropped and counted, and a
line of its own says how many once the stream takes lines again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import select
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol, TextIO

RETRY = 0.05
"""Seconds before a stream that refused a write (a full pipe) is tried again."""

PIPE_BUF = select.PIPE_BUF
"""The largest write a pipe takes whole or not at all (POSIX: at least 512; Linux: 4096)."""


class _Sink(Protocol):
    def write(self, data: bytes) -> int:
        """Write a prefix of ``data`` without blocking on a reader; return its length (0: full)."""
        ...

    def wait_writable(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds until a write may go (used at close only)."""
        ...

    def close(self) -> None: ...


class _TextSink:
    """A stream without a file descriptor: its ``write`` takes text and never waits on anyone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        self._stream.write(data.decode("utf-8", "replace"))
        self._stream.flush()
        return len(data)

    def wait_writable(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


class _FileSink:
    """A regular file or ``/dev/null``: a blocking write of the whole chunk."""

    def __init__(self, fd: int) -> None:
        self._fd = fd  # the stream's own: never closed here

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return len(data)

    def wait_writable(self, timeout: float) -> None:
        pass

    def close(self) -> None:
        pass


class _PipeSink:
    """A pipe, FIFO, terminal or socket, written without blocking in atomic pieces.

    ``send`` writes one piece of at most ``PIPE_BUF`` bytes and raises ``BlockingIOError`` when the
    reader is behind; ``fd`` is what ``select`` waits on at close; ``owned`` is closed with the sink.
    """

    def __init__(self, send: Callable[[memoryview], int], fd: int, owned: Callable[[], None]) -> None:
        self._send = send
        self._fd = fd
        self._close = owned

    def write(self, data: bytes) -> int:
        done = 0
        end = len(data)
        view = memoryview(data)
        send = self._send
        while done < end:
            stop = done + PIPE_BUF
            if stop < end:
                # Cut after the last line end within the piece, so the piece is whole lines; a
                # single line longer than a piece goes in pieces (it may interleave, as in nginx).
                cut = data.rfind(b"\n", done, stop)
                if cut >= done:
                    stop = cut + 1
            else:
                stop = end
            try:
                done += send(view[done:stop])
            except BlockingIOError:
                break
        return done

    def wait_writable(self, timeout: float) -> None:
        with contextlib.suppress(OSError, ValueError):
            select.select([], [self._fd], [], timeout)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._close()


def _sink_for(stream: TextIO) -> _Sink:
    """How to write ``stream`` without blocking the loop (module docstring)."""
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return _TextSink(stream)
    with contextlib.suppress(OSError, ValueError):
        stream.flush()  # what the stream holds goes first: our writes bypass its buffer
    if stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not os.isatty(fd)):
        return _FileSink(fd)
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=os.dup(fd))  # a second descriptor: closing it leaves the stream's

        def send(piece: memoryview) -> int:
            return sock.send(piece, socket.MSG_DONTWAIT)

        return _PipeSink(send, sock.fileno(), sock.close)
    try:
        # A new open file of the same pipe or terminal: O_NONBLOCK on it is ours alone.
        private = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        # No /proc (or the pipe's reader is gone): write a piece only when select says the pipe
        # has room for one, which a concurrent writer can still take first (rare, brief).
        def polled(piece: memoryview) -> int:
            if not select.select([], [fd], [], 0)[1]:
                raise BlockingIOError(errno.EAGAIN, "the log pipe is full")
            return os.write(fd, piece)

        return _PipeSink(polled, fd, lambda: None)

    def write(piece: memoryview) -> int:
        return os.write(private, piece)

    return _PipeSink(write, private, lambda: os.close(private))


class BufferedLineWriter:
    """``write(line)`` from the event loop; chunks go out from the loop, never blocking it."""

    def __init__(
        self,
        stream: Callable[[], TextIO],
        *,
        buffer_size: int = 64 * 1024,
        flush_interval: float = 1.0,
        max_lines: int = 100_000,
        retry: float = RETRY,
    ) -> None:
        self._stream = stream  # looked up at each flush: tests and supervisors swap sys.stderr
        self._buffer_size = buffer_size
        self._flush_interval = flush_interval
        self._retry = min(retry, flush_interval)
        self._max_lines = max_lines
        self._lines: deque[str] = deque()
        self._size = 0  # characters in ``_lines``
        # Flush once ``_size`` reaches this: ``buffer_size``, or after a refused write one more
        # buffer's worth later (one try per chunk of new lines while the reader is behind).
        self._due = buffer_size
        self._pending = b""  # what the stream refused last time: goes before any newer line
        self._timer: asyncio.TimerHandle | None = None
        self._sink: _Sink | None = None
        self._sink_of: TextIO | None = None
        self._closing = False
        self.dropped = 0
        """Lines refused because ``max_lines`` were waiting (only ever grows)."""
        self._dropped_reported = 0

    def write(self, line: str) -> None:
        lines = self._lines
        if len(lines) >= self._max_lines or self._closing:
            if not self._closing and not self._pending:
                self.flush()  # many short lines under the buffer size: room, not a slow reader
            if len(lines) >= self._max_lines or self._closing:
                self.dropped += 1
                return
        lines.append(line)
        self._size += len(line)
        if self._size >= self._due:
            self.flush()
        elif self._timer is None:
            self._arm(self._flush_interval)

    def _arm(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a command, a test): nothing may wait for a timer
            self.flush()
            return
        self._timer = loop.call_later(delay, self._on_timer)

    def _retry_later(self) -> None:
        """Try a refused write again soon (without a loop: at the next flush, or at close)."""
        with contextlib.suppress(RuntimeError):
            self._timer = asyncio.get_running_loop().call_later(self._retry, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def flush(self) -> None:
        """Write what is waiting now, as far as the stream takes it without blocking."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            sink = self._current_sink()
            # Chunk by chunk while the stream takes them: a reader that is behind costs one
            # refused write, never a join of everything waiting.
            while data := self._pending or self._take():
                written = sink.write(data)
                self._pending = data[written:]
                if self._pending:
                    break
        except (OSError, ValueError):
            # A closed or broken log stream must not take the server down: what waits is lost.
            self._pending = b""
            self._lines.clear()
            self._size = 0
        if self._pending:
            self._due = self._size + self._buffer_size
            if not self._closing:
                self._retry_later()
        else:
            self._due = self._buffer_size

    def _take(self) -> bytes:
        """The next chunk: waiting lines of about ``buffer_size`` characters, oldest first; with the
        last of them, the dropped-lines note when lines were dropped since the last note."""
        lines = self._lines
        parts: list[str]
        if lines and self._size - len(lines[-1]) < self._buffer_size:
            # All of them (the loop below would take them all): one join in C, no loop over
            # the lines (~1k instructions a line at the usual flush, one line past the size).
            parts = list(lines)
            lines.clear()
            size = self._size
        else:
            take = lines.popleft
            parts = []
            size = 0
            while lines and size < self._buffer_size:
                line = take()
                parts.append(line)
                size += len(line)
        self._size -= size
        dropped = self.dropped
        if not lines and dropped != self._dropped_reported:  # after the lines kept before the drops
            parts.append(
                f"{dropped - self._dropped_reported} log lines dropped: the log stream was too slow\n"
            )
            self._dropped_reported = dropped
        return "".join(parts).encode("utf-8", "backslashreplace") if parts else b""

    def _current_sink(self) -> _Sink:
        stream = self._stream()
        if self._sink is None or stream is not self._sink_of:
            if self._sink is not None:
                self._sink.close()
            self._sink, self._sink_of = _sink_for(stream), stream
        return self._sink

    def close(self, timeout: float = 5.0) -> None:
        """Write everything left, waiting up to ``timeout`` for a slow reader (at shutdown, after
        the last request), then refuse further lines."""
        self._closing = True
        deadline = time.monotonic() + timeout
        self.flush()
        while self._pending and (left := deadline - time.monotonic()) > 0:
            if self._sink is not None:
                self._sink.wait_writable(min(left, 0.1))
            self.flush()
        if self._sink is not None:
            self._sink.close()
            self._sink = self._sink_of = None

    async def aclose(self) -> None:
        self.close()
