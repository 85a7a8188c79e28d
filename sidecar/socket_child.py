"""A child process talking to us over a private socket pair: the Jsonnet sandbox's workers and
the hashing processes.

Started with ``subprocess.Popen`` on a socket pair, not ``asyncio.create_subprocess_exec``: the
process and its socket exist, and are the caller's, the moment ``spawn`` returns, with nothing
left to connect. asyncio's version connects the pipes in a task of its own after the process
started; a caller cancelled meanwhile waits in its clean-up for that task, and when the task is
cancelled too (the loop's shutdown cancels every task) that wait never ends (CPython 3.11's
``_make_subprocess_transport``); on uvloop the process outlived the loop. Socket reads and writes
(``sock_recv``, ``sock_sendall``) leave nothing behind when cancelled.

Close the socket only when no read is pending on it: the loop would go on watching a stale
descriptor, and the next socket given that number would never be woken.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import Callable, Mapping, Sequence


def spawn(
    argv: Callable[[int], Sequence[str]], *, env: Mapping[str, str], on_stdio: bool = False
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start ``argv(fd)`` with the other end of a new socket pair; ours comes back non-blocking.

    ``on_stdio``: the child's stdin and stdout are its end (``fd`` is 0) and its stderr goes to
    /dev/null; otherwise the descriptor ``fd`` is passed as is and stdin/stdout are /dev/null.
    Arguments come from our own code, never from a request.
    """
    ours, theirs = socket.socketpair()
    try:
        fd = theirs.fileno()
        if on_stdio:
            popen = subprocess.Popen(  # noqa: S603
                list(argv(0)), stdin=fd, stdout=fd, stderr=subprocess.DEVNULL, env=dict(env)
            )
        else:
            popen = subprocess.Popen(  # noqa: S603
                list(argv(fd)),
                pass_fds=(fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=dict(env),
            )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    return popen, ours


async def read_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``sock``; ``asyncio.IncompleteReadError`` (an ``EOFError``) if the child
    closed its end first."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(data), n)
        data += chunk
    return bytes(data)
