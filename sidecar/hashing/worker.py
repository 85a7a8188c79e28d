"""A hashing process (``hashers.pool: process``): ``python -m sidecar.hashing.worker FD PARAMS PRIORITY``.

It lowers its own CPU priority first, then answers requests on the socket ``FD`` one at a time,
each framed as a 4-byte big-endian length and a ``marshal`` payload (plain tuples, strings,
bytes and booleans only: ``marshal`` runs no code while loading). It exits when the socket
reaches end of file, which is also what happens when the server that started it dies, however
it dies: no hashing process outlives its server for longer than the hash it is computing.
"""

from __future__ import annotations

import json
import marshal
import signal
import socket
import struct
import sys
from typing import Any

from sidecar.hashing.work import Params, compute, lower_priority

HEADER = struct.Struct(">I")
MAX_FRAME = 1 << 20  # requests are a password and a hash; anything bigger is a broken peer


def encode(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return HEADER.pack(len(payload)) + payload


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def serve(sock: socket.socket, params: Params) -> None:
    while True:
        header = _read_exactly(sock, HEADER.size)
        if header is None:
            return
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            return
        body = _read_exactly(sock, size)
        if body is None:
            return
        try:
            # marshal: plain values only, from the server that started us, over a private socket pair.
            answer: tuple[object, ...] = ("ok", compute(params, marshal.loads(body)))  # noqa: S302
        except Exception as exc:  # reported to the server, which raises it again there
            answer = ("error", type(exc).__name__, str(exc))
        sock.sendall(encode(answer))


def main(argv: list[str]) -> int:
    # Ctrl-C in a terminal reaches the whole process group: the server decides when we stop
    # (it closes the socket), so a hash in flight is not interrupted with a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd, params, priority = int(argv[0]), Params(**json.loads(argv[1])), argv[2]
    lower_priority(priority)
    with socket.socket(fileno=fd) as sock:
        try:
            serve(sock, params)
        except (ConnectionError, OSError):
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
