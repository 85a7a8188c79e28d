"""sidecar.line_writer.BufferedLineWriter: chunks from a thread, bounded, flushed at close."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sidecar.line_writer import BufferedLineWriter


class Recorder:
    """A stream that records each write with the thread that made it; ``gate`` can hold writes."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = False

    def write(self, text: str) -> int:
        self.gate.wait(10)
        if self.fail:
            raise BrokenPipeError("the log pipe is gone")
        self.writes.append((threading.current_thread().name, text))
        return len(text)

    def flush(self) -> None:
        pass

    def text(self) -> str:
        return "".join(t for _, t in self.writes)


def wait_for(cond: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_full_buffer_is_written_in_one_chunk_by_the_writer_thread() -> None:
    out = Recorder()
    writer = BufferedLineWriter(lambda: out, buffer_size=1000, flush_interval=60)  # type: ignore[arg-type,return-value]
    lines = [f"line {i:04d} " + "x" * 40 + "\n" for i in range(20)]  # 20 x 50 = 1000 characters
    for line in lines:
        writer.write(line)
    wait_for(lambda: bool(out.writes))
    assert out.writes == [("log-writer", "".join(lines))]
    writer.close()
    assert out.text() == "".join(lines)


def test_a_quiet_log_is_written_after_the_flush_interval() -> None:
    out = Recorder()
    writer = BufferedLineWriter(lambda: out, buffer_size=64 * 1024, flush_interval=0.2)  # type: ignore[arg-type,return-value]
    started = time.monotonic()
    writer.write("one\n")
    assert out.writes == []  # not written by the caller
    wait_for(lambda: bool(out.writes))
    assert 0.1 < time.monotonic() - started < 3
    assert out.writes == [("log-writer", "one\n")]
    writer.close()


def test_close_writes_what_is_left_and_stops_the_thread() -> None:
    out = Recorder()
    writer = BufferedLineWriter(lambda: out, buffer_size=64 * 1024, flush_interval=60)  # type: ignore[arg-type,return-value]
    writer.write("a\n")
    writer.write("b\n")
    writer.close()
    assert out.text() == "a\nb\n"
    assert not [t for t in threading.enumerate() if t.name == "log-writer"]
    writer.write("after close\n")  # refused, never written by the caller
    assert out.text() == "a\nb\n" and writer.dropped == 1


def test_a_stuck_stream_bounds_memory_and_reports_what_it_dropped() -> None:
    out = Recorder()
    out.gate.clear()  # the log pipe is full: the writer thread blocks in write
    writer = BufferedLineWriter(lambda: out, buffer_size=10, flush_interval=0.05, max_lines=100)  # type: ignore[arg-type,return-value]
    writer.write("first\n")
    time.sleep(0.3)  # the writer took "first" and is stuck writing it
    started = time.monotonic()
    for i in range(1000):
        writer.write(f"{i}\n")  # never blocks the caller
    assert time.monotonic() - started < 1
    assert writer.dropped == 900
    out.gate.set()
    writer.close()
    text = out.text()
    assert text.startswith("first\n0\n1\n") and "99\n" in text and "100\n" not in text
    assert "900 log lines dropped" in text


def test_a_broken_stream_never_raises() -> None:
    out = Recorder()
    out.fail = True
    writer = BufferedLineWriter(lambda: out, buffer_size=1, flush_interval=0.05)  # type: ignore[arg-type,return-value]
    writer.write("x\n")
    time.sleep(0.2)
    writer.write("y\n")
    writer.close()
    assert out.writes == []
