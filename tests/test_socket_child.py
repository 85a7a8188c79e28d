"""``sidecar.socket_child``: a child on a socket pair, read exactly, and nothing of ours left open."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from sidecar import socket_child

ECHO = "import os, sys; fd = int(sys.argv[1]); data = os.read(fd, 5); os.write(fd, data[::-1])"
ECHO_STDIO = "import os; data = os.read(0, 5); os.write(1, data[::-1])"


def open_fds() -> set[int]:
    """This process's descriptors (one of them is listdir's own, at the lowest free number)."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


@pytest.mark.parametrize("on_stdio", [False, True], ids=["passed-fd", "stdio"])
async def test_a_child_answers_over_its_end_and_the_parent_keeps_only_its_own(on_stdio: bool) -> None:
    before = open_fds()
    code = ECHO_STDIO if on_stdio else ECHO
    popen, sock = socket_child.spawn(
        lambda fd: [sys.executable, "-I", "-c", code, str(fd)], env={}, on_stdio=on_stdio
    )
    try:
        # Only our end is new in this process: the child's end was closed once it started.
        after = open_fds()
        assert len(after) == len(before) + 1 and sock.fileno() in after
        assert not sock.getblocking()
        await asyncio.get_running_loop().sock_sendall(sock, b"hello")
        assert await socket_child.read_exactly(sock, 5) == b"olleh"
        # The child exited: its end is closed, so a read past the answer is an incomplete read.
        with pytest.raises(asyncio.IncompleteReadError) as raised:
            await socket_child.read_exactly(sock, 1)
        assert isinstance(raised.value, EOFError) and raised.value.partial == b""
        assert popen.wait(10) == 0
    finally:
        sock.close()
        if popen.poll() is None:
            popen.kill()
            popen.wait()


def test_a_child_that_cannot_start_leaves_no_socket() -> None:
    before = open_fds()
    with pytest.raises(FileNotFoundError):
        socket_child.spawn(lambda fd: ["/nonexistent/python", str(fd)], env={})
    assert open_fds() == before
