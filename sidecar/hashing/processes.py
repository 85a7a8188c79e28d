"""Hashing processes (``hashers.pool: process``): argon2 outside the server's process.

In a thread of the server, a hash still shares the server's GIL and address space with the event
loop: the thread takes the GIL to start and to hand back each hash, and at ``hashers.priority:
idle`` it can be preempted while it holds the GIL, so the loop waits behind the other hashing
threads of its own core (a priority inversion); its 64 MiB are mapped and unmapped in the loop's
address space. In a process of its own it touches neither, and its scheduling class applies to
all of its threads.

At most ``size`` processes (``hashers.max_concurrent``), each computing one request at a time,
started at the first hash that needs one (``python -m sidecar.hashing.worker``, see there),
replaced when one dies, stopped by ``close``. Requests and answers travel over a socket pair,
read by the event loop itself (no thread in the server). Memory stays bounded by the process
count whatever the callers do: a caller that gives up (cancelled) leaves its request to finish
in the background before the process takes another one.

``hashers.priority: adaptive`` (the default) starts them at ``SCHED_IDLE``, the one class the
event loop's wake-up always preempts at once. At nice +10 a hashing thread keeps the loop's
core until the next scheduler tick (4 ms at HZ=250) whenever the loop has used more than its
fair share while a hash was runnable (EEVDF lag: a login's few ms of Python): during 20 logins
the loop spent ~4 % of the time waiting so, which is what a c1 decision's p99 shows
(``bench/storm_trace.py``: a wrk-corrected server-side p99 of 3.4 ms at nice +10, 0.07 ms at
SCHED_IDLE). A ``SCHED_IDLE`` hash gets almost nothing while the core is busy with anything
else, and an unprivileged process cannot raise its priority again: so the server watches each
hash's CPU time, and one that got less than ``STARVED_SHARE`` of a CPU over
``STARVATION_WINDOW`` is killed and run again in a process at nice +10, as are all hashes for
``FALLBACK_SECONDS``; processes at nice +10 are retired once that has passed. The slot count
(and so the memory bound) never changes: the starved process is dead before its replacement
starts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import marshal
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sidecar
from sidecar import errors, socket_child
from sidecar.hashing.work import Params, Request
from sidecar.hashing.worker import HEADER, MAX_FRAME, encode

log = logging.getLogger("sidecar.hashing")

STOP_WAIT_SECONDS = 2.0
"""How long ``close`` lets a process finish its hash after its socket closed, before SIGKILL."""
STARVATION_WINDOW = 0.25
"""Seconds between two looks at the CPU time of a ``SCHED_IDLE`` process computing a hash."""
STARVED_SHARE = 0.05
"""Below this share of a CPU over a window, a ``SCHED_IDLE`` hash is starved (at nice +10 it would
get about 0.1 of a core that nice-0 work keeps busy)."""
FALLBACK_SECONDS = 10.0
"""After a starved hash, how long new hashes run at nice +10 before ``SCHED_IDLE`` is tried again."""


class HashingProcessLost(Exception):
    """The process died or broke the protocol while computing a request."""


class _Process:
    def __init__(self, params: Params, priority: str) -> None:
        package_root = str(Path(sidecar.__file__).resolve().parent.parent)
        env = dict(os.environ)
        # The package as this server imported it, even when it runs from a checkout.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # Our own interpreter and module, arguments built here: nothing comes from a request.
        self.popen, self.sock = socket_child.spawn(
            lambda fd: [
                sys.executable,
                "-m",
                "sidecar.hashing.worker",
                str(fd),
                json.dumps(params.to_dict()),
                priority,
            ],
            env=env,
        )
        self.priority = priority
        self.starved = False
        """Killed by the starvation watch (``HashingProcesses``): its request runs again elsewhere."""
        self.busy = False
        """An exchange reads the socket: it is closed when that ends, never under the pending read
        (the loop would go on watching a stale descriptor, and the next socket given that number
        would never be woken: a Jsonnet worker that "did not start", a hash that never returns)."""

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def exchange(self, request: Request) -> Any:
        loop = asyncio.get_running_loop()
        self.busy = True
        try:
            await loop.sock_sendall(self.sock, encode(request))
            (size,) = HEADER.unpack(await socket_child.read_exactly(self.sock, HEADER.size))
            if size > MAX_FRAME:
                raise HashingProcessLost(f"answer of {size} bytes")
            # marshal: plain values only, from our own child over a private socket pair.
            answer = marshal.loads(await socket_child.read_exactly(self.sock, size))  # noqa: S302
        except (OSError, EOFError, ValueError) as exc:
            raise HashingProcessLost(repr(exc)) from exc
        finally:
            self.busy = False
        if answer[0] == "ok":
            return answer[1]
        # The worker reports exceptions by name: ValueError (a password bcrypt cannot take) is
        # the caller's to handle; anything else is a bug in the worker, reported as such.
        if answer[1] in ("ValueError", "UnicodeEncodeError"):
            raise ValueError(answer[2])
        raise RuntimeError(f"hashing process: {answer[1]}: {answer[2]}")

    def stop(self) -> None:
        """End the requests: the process exits once its current hash (if any) is answered."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        if not self.busy:
            self.sock.close()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        if not self.busy:  # else the exchange reads the end of it and discards the process
            self.sock.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` and its threads, finished ones included; None
    without ``/proc`` or once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class HashingProcesses:
    """Up to ``size`` hashing processes, one request each at a time."""

    def __init__(self, size: int, params: Params, priority: str) -> None:
        self._size = size
        self._params = params
        self._priority = priority
        self._all: list[_Process] = []
        self._idle: list[_Process] = []
        self._waiters: collections.deque[asyncio.Future[_Process]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._fallback_until = 0.0
        """``adaptive``: until then (monotonic seconds) new processes run at nice +10."""

    def pids(self) -> list[int]:
        """The running processes' ids (for tests and diagnostics)."""
        return [p.pid for p in self._all]

    async def run(self, request: Request) -> Any:
        """The answer of a hashing process; 503 when the process died while computing it."""
        self._follow_loop()
        process, reused = await self._take()
        attempt = 1
        while True:
            # Shielded: if the caller is cancelled, the process still finishes and reads this
            # answer before it takes another request (one request, one answer, in order).
            exchange = asyncio.ensure_future(self._exchange(process, request))
            exchange.add_done_callback(_retrieve)  # a lost process is logged below even if nobody waits
            try:
                if process.priority == "idle" and self._priority == "adaptive":
                    await asyncio.shield(self._watch(process, exchange))
                return await asyncio.shield(exchange)
            except HashingProcessLost as exc:
                if process.starved:
                    # Not the request's fault: it runs again, at nice +10 (``_start``).
                    process, reused = await self._take()
                    continue
                log.error("hashing process %d lost (%s): starting another", process.pid, exc)
                if not reused or attempt == 2:
                    raise errors.ServiceUnavailable(
                        "A password check failed to complete, please retry", headers={"Retry-After": "1"}
                    ) from None
            # It died while idle (killed from outside, out of memory): the request never
            # reached it, so it goes once to a fresh process.
            process, reused = await self._take()
            attempt += 1

    async def _watch(self, process: _Process, exchange: asyncio.Future[Any]) -> None:
        """Return when ``exchange`` is done; kill ``process`` if its hash starves meanwhile."""
        loop = asyncio.get_running_loop()
        since, spent = loop.time(), cpu_seconds(process.pid)
        while not exchange.done():
            await asyncio.wait({exchange}, timeout=STARVATION_WINDOW)
            now, cpu = loop.time(), cpu_seconds(process.pid)
            if exchange.done() or cpu is None or spent is None:
                return
            if cpu - spent < STARVED_SHARE * (now - since):
                log.warning(
                    "hashing process %d got %.0f ms of CPU in %.0f ms at SCHED_IDLE: its hash runs "
                    "again at nice +10, and new hashes for %.0f s",
                    process.pid,
                    (cpu - spent) * 1000,
                    (now - since) * 1000,
                    FALLBACK_SECONDS,
                )
                self._fallback_until = now + FALLBACK_SECONDS
                process.starved = True
                process.kill()  # the exchange reads the end of it and discards the process
                return
            since, spent = now, cpu

    async def _exchange(self, process: _Process, request: Request) -> Any:
        try:
            result = await process.exchange(request)
        except HashingProcessLost:
            self._discard(process)
            raise
        except BaseException:
            self._give_back(process)
            raise
        self._give_back(process)
        return result

    async def _take(self) -> tuple[_Process, bool]:
        """A process for one request, and whether it has answered others before."""
        if self._closed:
            raise errors.ServiceUnavailable("The server is shutting down", headers={"Retry-After": "1"})
        while self._idle:
            process = self._idle.pop()
            if process.popen.poll() is None and not self._outlived(process):
                return process, True
            # Died while idle (killed from outside), or at nice +10 after the fallback: replace it.
            self._all.remove(process)
            process.kill()
        if len(self._all) < self._size:
            return self._start(), False
        waiter: asyncio.Future[_Process] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            return await waiter, True
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a process in the same turn as this caller gave up: pass it on, or the
                # pool is one process short for good (at one process, every later hash waits).
                self._give_back(waiter.result())
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _give_back(self, process: _Process) -> None:
        if self._closed:
            process.stop()
            return
        if self._outlived(process):
            # The fallback is over: this slot goes back to a SCHED_IDLE process (a new one, started
            # for the next request).
            process.kill()  # it is between requests: nothing is lost, and it is reaped now
            self._all.remove(process)
            self._hand_slot()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(process)
                return
        self._idle.append(process)

    def _discard(self, process: _Process) -> None:
        process.kill()
        if process in self._all:  # not after close(), which took them all
            self._all.remove(process)
        self._hand_slot()

    def _hand_slot(self) -> None:
        """A slot is free again: the first caller still waiting gets a new process."""
        while self._waiters and not self._closed:
            waiter = self._waiters.popleft()
            if not waiter.done():
                try:
                    waiter.set_result(self._start())
                except errors.ServiceUnavailable as exc:
                    waiter.set_exception(exc)
                return

    def _falling_back(self) -> bool:
        return self._loop is not None and self._loop.time() < self._fallback_until

    def _outlived(self, process: _Process) -> bool:
        """``adaptive``: a process at nice +10 once the fallback is over (a process cannot raise its
        priority back from SCHED_IDLE, so the fallback uses processes of its own)."""
        return self._priority == "adaptive" and process.priority != "idle" and not self._falling_back()

    def _start(self) -> _Process:
        priority = self._priority
        if priority == "adaptive":
            priority = "low" if self._falling_back() else "idle"
        try:
            process = _Process(self._params, priority)
        except OSError as exc:
            log.error("cannot start a hashing process: %s", exc)
            raise errors.ServiceUnavailable(
                "Passwords cannot be checked right now, please retry", headers={"Retry-After": "1"}
            ) from None
        self._all.append(process)
        return process

    def _follow_loop(self) -> None:
        """Sockets and futures belong to one event loop: a new loop (tests) starts afresh."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                for process in self._all:
                    process.kill()
                    process.sock.close()  # the old loop's: nothing reads it any more
                self._all, self._idle, self._waiters = [], [], collections.deque()
            self._loop, self._fallback_until = loop, 0.0

    async def close(self) -> None:
        """Stop every process (a hash in flight gets ``STOP_WAIT_SECONDS``), and reap them all."""
        self._closed = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(
                    errors.ServiceUnavailable("The server is shutting down", headers={"Retry-After": "1"})
                )
        self._waiters.clear()
        processes, self._all, self._idle = self._all, [], []
        for process in processes:
            process.stop()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        try:
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    # Waiting blocks: a thread, so the loop keeps draining other requests meanwhile.
                    await asyncio.to_thread(process.popen.wait, max(0.0, deadline - time.monotonic()))
        finally:
            # Past the deadline, or close() itself cancelled part-way (a shutdown's own timeout):
            # none may be left running, or exited and never reaped.
            for process in processes:
                if process.popen.poll() is None:
                    process.kill()
