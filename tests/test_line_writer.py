"""sidecar.line_writer.BufferedLineWriter: chunks written from the loop, never blocking it, whole
lines per atomic piece on pipes, bounded while a reader lags, everything written at close."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from sidecar.line_writer import PIPE_BUF, BufferedLineWriter


class Recorder(io.StringIO):
    """A stream without a file descriptor that records each write with the thread that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []

    def write(self, text: str) -> int:
        self.writes.append((threading.current_thread().name, text))
        return len(text)

    def text(self) -> str:
        return "".join(t for _, t in self.writes)


def _of(stream: Any) -> Callable[[], Any]:
    return lambda: stream


@contextmanager
def full_pipe() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A pipe nobody reads yet, filled to the brim: the next write would block. Yields the read
    end and a text stream on the write end (as ``sys.stderr`` is one)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        while True:
            os.write(w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)  # the stream's own descriptor stays blocking, as stderr's is
    stream = open(w, "w", closefd=True)  # noqa: SIM115
    try:
        yield r, stream
    finally:
        stream.close()
        os.close(r)


def _drain(r: int) -> bytes:
    os.set_blocking(r, False)
    out = b""
    try:
        while chunk := os.read(r, 1 << 16):
            out += chunk
    except BlockingIOError:
        pass
    return out


def _in_thread(work: Callable[[], None], timeout: float = 20) -> None:
    """Run ``work`` and fail (not hang) if it blocks: a write to a full pipe never returns."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the writer blocked on a full log pipe"


async def test_a_full_buffer_is_written_in_one_chunk_by_the_caller() -> None:
    out = Recorder()
    writer = BufferedLineWriter(_of(out), buffer_size=1000, flush_interval=60)
    lines = [f"line {i:04d} " + "x" * 40 + "\n" for i in range(20)]  # 20 x 50 = 1000 characters
    for line in lines[:-1]:
        writer.write(line)
    assert out.writes == []  # under the buffer size: nothing written yet
    writer.write(lines[-1])
    assert out.writes == [(threading.current_thread().name, "".join(lines))]  # no thread of its own
    assert [t.name for t in threading.enumerate() if t.name == "log-writer"] == []
    writer.close()
    assert out.text() == "".join(lines)


async def test_a_quiet_log_is_written_by_a_timer_on_the_running_loop() -> None:
    out = Recorder()
    writer = BufferedLineWriter(_of(out), buffer_size=64 * 1024, flush_interval=0.2)
    writer.write("one\n")
    writer.write("two\n")
    assert out.writes == []  # not written by the caller
    for _ in range(300):
        if out.writes:
            break
        await asyncio.sleep(0.01)
    assert out.writes == [(threading.current_thread().name, "one\ntwo\n")]  # the loop's thread
    writer.write("three\n")  # a new timer for the next line
    for _ in range(300):
        if len(out.writes) == 2:
            break
        await asyncio.sleep(0.01)
    assert out.text() == "one\ntwo\nthree\n"
    writer.close()


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    out = Recorder()
    writer = BufferedLineWriter(_of(out), buffer_size=64 * 1024, flush_interval=60)
    writer.write("from a command\n")
    assert out.text() == "from a command\n"


def test_close_writes_what_is_left_and_refuses_later_lines() -> None:
    out = Recorder()
    writer = BufferedLineWriter(_of(out), buffer_size=64 * 1024, flush_interval=60)
    writer._arm = lambda delay: None  # type: ignore[method-assign]  # as if a loop held the timer
    writer.write("a\n")
    writer.write("b\n")
    assert out.writes == []
    writer.close()
    assert out.text() == "a\nb\n"
    writer.write("after close\n")  # refused, never written
    assert out.text() == "a\nb\n" and writer.dropped == 1


def test_a_full_pipe_never_blocks_bounds_memory_and_loses_no_line_it_kept() -> None:
    with full_pipe() as (r, stream):
        writer = BufferedLineWriter(_of(stream), buffer_size=100, flush_interval=60, max_lines=100)
        writer._arm = lambda delay: None  # type: ignore[method-assign]  # retries by hand below

        def write_many() -> None:
            for i in range(1000):
                writer.write(f"{i:03d} " + "y" * 20 + "\n")

        _in_thread(write_many)
        kept = 1000 - writer.dropped
        assert 100 <= kept < 1000  # bounded: the rest dropped and counted
        assert os.get_blocking(stream.fileno())  # the inherited descriptor was left blocking
        got = b""
        for _ in range(200):  # the reader catches up; each flush writes what the pipe takes
            got += _drain(r)
            _in_thread(writer.flush)
            if not writer._pending and not writer._lines:
                break
        writer.close(timeout=1)
        got += _drain(r)
    text = got.decode().lstrip("x")
    lines = text.splitlines()
    assert lines[:kept] == [f"{i:03d} " + "y" * 20 for i in range(kept)]  # in order, none torn
    assert lines[kept:] == [f"{writer.dropped} log lines dropped: the log stream was too slow"]


def test_pipe_pieces_are_whole_lines_of_at_most_pipe_buf_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    pieces: list[bytes] = []
    real_write = os.write

    def recording(fd: int, data: Any) -> int:
        pieces.append(bytes(data))
        return real_write(fd, data)

    r, w = os.pipe()
    reader = threading.Thread(target=lambda: _read_all(r, sink), daemon=True)
    sink: list[bytes] = []
    reader.start()
    with open(w, "w", closefd=True) as stream:
        writer = BufferedLineWriter(_of(stream), buffer_size=1 << 20, flush_interval=60)
        writer._arm = lambda delay: None  # type: ignore[method-assign]
        lines = [f"{i:05d} " + "z" * (i % 300) + "\n" for i in range(2000)]
        for line in lines:
            writer.write(line)
        monkeypatch.setattr(os, "write", recording)
        writer.close()
        monkeypatch.undo()
    reader.join(10)
    assert b"".join(sink).decode() == "".join(lines)
    assert len(pieces) > 1
    assert all(len(p) <= PIPE_BUF and p.endswith(b"\n") for p in pieces)


def _read_all(r: int, into: list[bytes]) -> None:
    with open(r, "rb", closefd=True) as f:
        while chunk := f.read1(1 << 16):
            into.append(chunk)


WORKER = """
import sys, time
from sidecar.line_writer import BufferedLineWriter
n, tag = int(sys.argv[1]), sys.argv[2]
writer = BufferedLineWriter(lambda: sys.stdout, buffer_size=64 * 1024, flush_interval=60)
writer._arm = lambda delay: None
for i in range(n):
    writer.write('{"worker":"%s","i":%d,"pad":"%s"}\\n' % (tag, i, "p" * (i % 200)))
writer.close(timeout=60)
"""


def test_workers_sharing_one_slow_log_pipe_never_tear_each_others_lines() -> None:
    """Two processes (as ``--workers 2``) write into one pipe that a slow reader drains: every
    line arrives whole. A plain 64 KiB write to a full pipe is split where the pipe had room."""
    n = 20_000
    r, w = os.pipe()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(n), tag], stdout=w, cwd=Path(__file__).resolve().parents[1]
        )
        for tag in ("a", "b")
    ]
    os.close(w)
    data = bytearray()
    with open(r, "rb", closefd=True) as f:
        while chunk := f.read1(4096):  # a slow reader: the pipe is full most of the time
            data += chunk
            time.sleep(0.0005)
    for proc in procs:
        assert proc.wait(60) == 0
    seen: dict[str, list[int]] = {"a": [], "b": []}
    for line in data.decode().splitlines():
        entry = json.loads(line)  # a torn line fails here
        seen[entry["worker"]].append(entry["i"])
    assert seen == {"a": list(range(n)), "b": list(range(n))}


def test_a_full_socket_never_blocks() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(True)
    try:
        with ours.makefile("w") as stream:
            writer = BufferedLineWriter(_of(stream), buffer_size=100, flush_interval=60, max_lines=50)
            writer._arm = lambda delay: None  # type: ignore[method-assign]

            def write_many() -> None:
                for i in range(100_000):
                    writer.write(f"{i}\n")

            _in_thread(write_many)
            assert writer.dropped > 0 and writer._pending
            assert ours.getblocking()  # the stream's socket was left as it was
            writer._closing = True  # what close() would refuse; the reader never reads
    finally:
        ours.close()
        theirs.close()


def test_a_regular_file_gets_each_chunk_whole(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    with path.open("w") as stream:
        writer = BufferedLineWriter(_of(stream), buffer_size=10_000, flush_interval=60)
        writer._arm = lambda delay: None  # type: ignore[method-assign]
        stream.write("before\n")  # what the stream itself buffered goes first
        lines = [f"{i}\n" for i in range(5000)]
        for line in lines:
            writer.write(line)
        writer.close()
    assert path.read_text() == "before\n" + "".join(lines)


def test_without_proc_a_pipe_is_written_only_when_it_has_room(monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_proc(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith("/proc/"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_proc)
    with full_pipe() as (r, stream):
        writer = BufferedLineWriter(_of(stream), buffer_size=10, flush_interval=60, max_lines=10)
        writer._arm = lambda delay: None  # type: ignore[method-assign]

        def write_many() -> None:
            for i in range(100):
                writer.write(f"{i}\n")

        _in_thread(write_many)
        assert writer._pending  # refused, kept
        _drain(r)
        writer.close(timeout=2)
        assert not writer._pending
        got = _drain(r).decode()
    assert got.startswith("0\n1\n") and got.endswith("log lines dropped: the log stream was too slow\n")


def test_a_broken_stream_never_raises() -> None:
    r, w = os.pipe()
    os.close(r)  # the log shipper is gone: writes fail with EPIPE
    with open(w, "w", closefd=True) as stream:
        writer = BufferedLineWriter(_of(stream), buffer_size=1, flush_interval=60)
        writer.write("x\n")
        writer.write("y\n")
        writer.close()
    assert not writer._pending


def test_many_short_lines_are_written_not_dropped_while_the_stream_keeps_up() -> None:
    out = Recorder()
    writer = BufferedLineWriter(_of(out), buffer_size=1 << 20, flush_interval=60, max_lines=10)
    writer._arm = lambda delay: None  # type: ignore[method-assign]
    for i in range(100):
        writer.write(f"{i}\n")
    writer.close()
    assert writer.dropped == 0
    assert out.text() == "".join(f"{i}\n" for i in range(100))


def test_a_backlog_drains_chunk_by_chunk_as_new_lines_come(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the reader is behind, each try writes one chunk of about ``buffer_size`` (never a join of
    the whole backlog); once it reads again, the next buffer's worth of lines drains the backlog
    without waiting for the retry timer."""
    sizes: list[int] = []
    real_write = os.write

    def recording(fd: int, data: Any) -> int:
        sizes.append(len(data))
        return real_write(fd, data)

    with full_pipe() as (r, stream):
        writer = BufferedLineWriter(_of(stream), buffer_size=1000, flush_interval=60)
        writer._arm = lambda delay: None  # type: ignore[method-assign]  # no timer: only new lines
        monkeypatch.setattr(os, "write", recording)
        lines = [f"{i:05d} " + "b" * 43 + "\n" for i in range(3000)]  # 50 characters each

        def backlog() -> None:
            for line in lines[:2000]:
                writer.write(line)

        _in_thread(backlog)
        tries = len(sizes)
        assert 1 <= tries <= 2000 * 50 // 1000 + 1  # one try per buffer's worth while refused
        assert writer._lines  # kept, waiting
        got = _drain(r)
        for line in lines[2000:]:  # the reader is back: new lines carry the backlog out
            writer.write(line)
            got += _drain(r)
        monkeypatch.undo()
        writer.close(timeout=2)
        got += _drain(r)
    assert got.decode().lstrip("x") == "".join(lines)


async def test_a_reader_that_is_behind_is_offered_a_buffers_worth_per_try_never_the_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retry timer and each further buffer's worth of lines try one chunk of about
    ``buffer_size`` (was: everything waiting, joined again on every retry: 33-65 ms stalls in a
    pipe run's first round, bench/log_tail.py --pipe); once the reader reads, nothing is lost."""
    from sidecar import line_writer

    offered: list[int] = []
    real_write = line_writer._PipeSink.write

    def recording(sink: Any, data: bytes) -> int:
        offered.append(len(data))
        return real_write(sink, data)

    monkeypatch.setattr(line_writer._PipeSink, "write", recording)
    lines = [f"{i:05d} " + "c" * 43 + "\n" for i in range(2000)]  # 50 characters each
    with full_pipe() as (r, stream):
        writer = BufferedLineWriter(_of(stream), buffer_size=1000, flush_interval=60, retry=0.005)
        for start in range(0, len(lines), 100):  # bursts with retries in between
            for line in lines[start : start + 100]:
                writer.write(line)
            await asyncio.sleep(0.01)
        tries = len(offered)
        assert tries >= 20  # the timer kept trying while the reader was away
        assert max(offered) <= 1000 + 50, sorted(offered)[-5:]
        got = b""
        deadline = time.monotonic() + 10
        while not got.endswith(lines[-1].encode()) and time.monotonic() < deadline:
            got += _drain(r)  # the reader is back: the timer alone drains the backlog
            await asyncio.sleep(0.01)
        writer.close(timeout=2)
        got += _drain(r)
    assert got.decode().lstrip("x") == "".join(lines)
    # Draining too, each write is a buffer's worth of the backlog, not all of it at once.
    assert len(offered) > tries and max(offered) <= 1000 + 50, sorted(offered)[-5:]
