"""The Jsonnet sandbox shared by the OIDC claims mappers, the session tokenizer and web hook
bodies (Kratos runs all three through ``jsonnetsecure``).

A snippet runs on go-jsonnet (Kratos' engine) in a worker process with a CPU deadline, a memory
cap and an output cap: a looping or exploding snippet costs one worker, which is replaced, never
the server. Imports are refused as Kratos refuses them (a snippet is one self-contained file).
Sources come from ``file://``, ``base64://`` or a plain path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sidecar import errors, socket_child
from sidecar.admission import Admission, usable_cpus

MAX_OUTPUT = 1024 * 1024
MEMORY_LIMIT = 512 * 1024 * 1024
# go-jsonnet's default, so that a mapper recursing as deep as Kratos allows runs here too.
MAX_STACK = 500

# A worker evaluates with go-jsonnet, the implementation Kratos runs (``jsonnetsecure``), so
# results and error texts are Kratos' own; it answers length-prefixed JSON jobs until stdin closes
# (so a parent that dies, even by SIGKILL, leaves no worker behind).
#
# Memory: the Go runtime reserves ~1.5 GiB of address space when it starts, so the worker starts
# it with a first evaluation and then caps the address space at that plus ``limit``; GOMEMLIMIT
# (set by the parent) makes Go's collector work harder before the cap. Past the cap Go aborts the
# process ("fatal error: out of memory"): the parent sees a crash and replaces the worker.
#
# Deadline: go-jsonnet has none, so the worker counts the snippet's CPU time, not wall time:
# ITIMER_PROF (and RLIMIT_CPU, a second guard a blocked-signal bug cannot defeat) terminate the
# worker once the evaluation has used ``timeout`` seconds of CPU. On a machine at load 25 a good
# 5 ms snippet can wait seconds for a core; a wall clock failed those, while a loop still dies
# after its own ``timeout`` of work. The parent keeps a wall-clock backstop for a stopped worker.
#
# Imports: Kratos refuses them ("import not available <path>"). The callback never reads a file:
# it hands back a snippet that raises that error, and an evaluation that called it at all (an
# ``importstr`` or ``importbin`` takes the text as data) fails. It never raises: gojsonnet 0.22
# reads a callback's error text past its end (heap bytes, possibly an earlier job's data).
_WORKER = r"""
import json, resource, signal, struct, sys
import _gojsonnet
limit = int(sys.argv[1])
max_stack = int(sys.argv[2])
refused = []
def refuse(base, rel):
    refused.append(rel)
    return rel, ("error " + json.dumps("import not available " + rel)).encode()
_gojsonnet.evaluate_snippet("start.jsonnet", "{}")
with open("/proc/self/statm") as statm:
    started = int(statm.read().split()[0]) * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (started + limit, started + limit))
inp, out = sys.stdin.buffer, sys.stdout.buffer
out.write(b"R")
out.flush()
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    job = json.loads(inp.read(struct.unpack(">I", head)[0]))
    use = resource.getrusage(resource.RUSAGE_SELF)
    cap = int(use.ru_utime + use.ru_stime + job["timeout"]) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cap, resource.RLIM_INFINITY))
    retire = False
    refused.clear()
    signal.setitimer(signal.ITIMER_PROF, job["timeout"])
    try:
        res = _gojsonnet.evaluate_snippet(
            job["name"], job["snippet"], ext_codes=job["ext_codes"], tla_codes=job["tla_codes"],
            import_callback=refuse, max_stack=max_stack,
        )
    except MemoryError as exc:
        answer = {"error": str(exc)[:1000], "retire": True}
        retire = True
    except Exception as exc:
        answer = {"error": str(exc)[:1000]}
    else:
        answer = {"result": res}
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
    if refused and "result" in answer:
        answer = {"error": "RUNTIME ERROR: import not available " + refused[0][:900]}
    try:
        data = json.dumps(answer).encode()
    except MemoryError:
        data, retire = b'{"error": "out of memory", "retire": true}', True
    out.write(struct.pack(">I", len(data)) + data)
    out.flush()
    if retire:
        break
"""


OUTCOMES = ("ok", "error", "timeout", "crashed", "busy")
"""How an evaluation ends: a result; the snippet's own error (or output that is not JSON); the
CPU deadline; the worker died (out of memory, killed, too much output); refused, the queue full."""


class JsonnetError(Exception):
    """The snippet failed, looped, ran out of memory or returned something that is not JSON.
    ``outcome`` is one of ``OUTCOMES`` (for the pool's counts)."""

    def __init__(self, message: str, outcome: str = "error") -> None:
        super().__init__(message)
        self.outcome = outcome


def load_source(url: str, key: str) -> str:
    """The Jsonnet behind ``url`` (``file://``, ``base64://``, or a path); ``key`` names the config
    key in errors."""
    if url.startswith("base64://"):
        data = url[len("base64://") :]
        try:
            return base64.b64decode(
                data + "=" * (-len(data) % 4), altchars=b"-_" if "-" in data or "_" in data else None
            ).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{key}: invalid base64: {exc}") from None
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.netloc + parts.path))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise ValueError(f"{key}: unsupported scheme {parts.scheme!r} (use file:// or base64://)")
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None


def _job(
    source: str, ext: Mapping[str, Any] | None, tla: Mapping[str, Any] | None, timeout: float, name: str
) -> bytes:
    data = json.dumps(
        {
            "name": name,
            "snippet": source,
            "ext_codes": {k: json.dumps(v, default=str) for k, v in (ext or {}).items()},
            "tla_codes": {k: json.dumps(v, default=str) for k, v in (tla or {}).items()},
            "timeout": timeout,
        }
    ).encode()
    return struct.pack(">I", len(data)) + data


def _parse(answer: Any) -> Any:
    if "error" in answer:
        raise JsonnetError(f"failed: {answer['error']}")
    try:
        return json.loads(answer["result"])
    except (KeyError, ValueError):
        raise JsonnetError("returned invalid JSON") from None


class _Worker:
    """One sandbox process (``sidecar.socket_child``); used by one evaluation at a time."""

    def __init__(self, popen: subprocess.Popen[bytes], sock: socket.socket) -> None:
        self.popen = popen
        self.sock = sock
        self.retired = False

    @classmethod
    def start(cls, memory_limit: int) -> _Worker:
        popen, sock = socket_child.spawn(
            lambda fd: [sys.executable, "-I", "-c", _WORKER, str(memory_limit), str(MAX_STACK)],
            # As Kratos starts its workers: one Go thread running Jsonnet at a time (an evaluation
            # is single-threaded anyway), and the collector told about the cap.
            env={"GOMAXPROCS": "1", "GOMEMLIMIT": str(memory_limit)},
            on_stdio=True,
        )
        return cls(popen, sock)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return not self.retired and self.popen.poll() is None

    async def read(self, n: int) -> bytes:
        return await socket_child.read_exactly(self.sock, n)

    async def run(self, job: bytes, timeout: float) -> Any:
        # Wall-clock backstop only (the CPU deadline lives in the worker): a worker that is stopped
        # or starved this long is treated as looping.
        backstop = timeout * 5 + 5
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, job)
            head = await asyncio.wait_for(self.read(4), backstop)
            (size,) = struct.unpack(">I", head)
            if size > MAX_OUTPUT:
                self.retired = True
                raise JsonnetError("returned too much data", "crashed")
            frame = await asyncio.wait_for(self.read(size), backstop)
        except TimeoutError:
            self.retired = True
            raise JsonnetError(f"did not finish within {timeout:g}s", "timeout") from None
        except (asyncio.IncompleteReadError, ConnectionError):
            self.retired = True
            code = await self.reaped()
            if code in (-signal.SIGPROF, -signal.SIGXCPU):
                raise JsonnetError(f"did not finish within {timeout:g}s", "timeout") from None
            raise JsonnetError(f"crashed (exit status {code})", "crashed") from None
        try:
            answer = json.loads(frame)
        except ValueError:
            self.retired = True
            raise JsonnetError("returned invalid JSON", "crashed") from None
        if not isinstance(answer, dict):
            self.retired = True
            raise JsonnetError("returned invalid JSON", "crashed")
        if answer.get("retire"):
            self.retired = True  # it ran out of memory and exits: never reuse it
        return answer

    def signal_kill(self) -> None:
        """SIGKILL, at once (no await: a cancelled caller cannot leave the process running)."""
        self.retired = True
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()

    async def reaped(self) -> int:
        """The exit status, once the process has ended (waited for in a thread: the loop never
        blocks on a process the scheduler has not run yet; a cancelled caller leaves the thread to
        reap it)."""
        if self.popen.poll() is None:
            await asyncio.to_thread(self.popen.wait)
        return self.popen.returncode

    async def kill(self) -> None:
        """End the process and close its socket (only once no evaluation reads it)."""
        self.signal_kill()
        self.sock.close()
        await self.reaped()


class JsonnetSandbox:
    """A warm, bounded pool of sandbox processes: at most ``size`` workers, started on first use,
    at most ``max_queue`` evaluations waiting for one (past that: 503). A worker that loops, runs
    out of memory, crashes or is killed from outside is replaced; ``close`` ends them all.

    Built once per server process (``app.build_services``) and passed to every Jsonnet caller:
    asyncio pipes belong to the loop that made them, so each ``--workers`` process has its own."""

    def __init__(
        self,
        size: int = 0,
        max_queue: int = 256,
        *,
        memory_limit: int = MEMORY_LIMIT,
        start_timeout: float = 60.0,
    ) -> None:
        # One worker per usable CPU, at most 4: evaluations are ms of CPU, more processes only
        # cost memory (~20 MiB each).
        self._admission = Admission(
            size or min(4, usable_cpus()), max_queue, refusal="The Jsonnet sandbox is busy, try again."
        )
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._memory_limit = memory_limit
        self._start_timeout = start_timeout
        self._closed = False
        # Plain counts since start, read by the metrics at scrape time (as the rules' matches are).
        self.outcomes: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.replacements = 0
        """Workers ended while the pool was open (deadline, crash, memory, killed from outside)."""

    @property
    def size(self) -> int:
        return self._admission.concurrency

    @property
    def queue_depth(self) -> int:
        """Evaluations waiting for a free worker."""
        return self._admission.queue_depth

    def pids(self) -> list[int]:
        """The live workers' process ids (for tests and metrics)."""
        return [w.pid for w in self._workers if w.popen.poll() is None]

    async def evaluate(
        self,
        source: str,
        *,
        ext: Mapping[str, Any] | None = None,
        tla: Mapping[str, Any] | None = None,
        timeout: float,
        name: str = "snippet.jsonnet",
    ) -> Any:
        """Evaluate ``source`` with ``ext`` as ``std.extVar`` and ``tla`` as top-level arguments
        (both JSON values); the result, parsed. ``timeout`` is CPU seconds of the snippet."""
        try:
            result = await self._evaluate(_job(source, ext, tla, timeout, name), timeout)
        except JsonnetError as exc:
            self.outcomes[exc.outcome] += 1
            raise
        except errors.ServiceUnavailable:
            self.outcomes["busy"] += 1
            raise
        self.outcomes["ok"] += 1
        return result

    async def _evaluate(self, job: bytes, timeout: float) -> Any:
        async with self._admission.admitted():
            if self._closed:
                raise JsonnetError("failed: the Jsonnet sandbox is shut down", "busy")
            worker = await self._checkout()
            try:
                answer = await worker.run(job, timeout)
            except BaseException:
                # Cancelled or failed mid-job: the worker's state is unknown, replace it.
                await self._discard(worker)
                raise
            await self._checkin(worker)
        return _parse(answer)

    async def _checkout(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.alive:
                return worker
            await self._discard(worker)  # killed from outside while idle
        return await self._spawn()

    async def _checkin(self, worker: _Worker) -> None:
        if self._closed or not worker.alive:
            await self._discard(worker)
            return
        self._idle.append(worker)

    async def _spawn(self) -> _Worker:
        if self._closed:
            raise JsonnetError("failed: the Jsonnet sandbox is shut down", "busy")
        try:
            worker = _Worker.start(self._memory_limit)
        except OSError:
            raise JsonnetError("failed: the Jsonnet sandbox did not start", "crashed") from None
        self._workers.add(worker)  # before any await: close() sees it whatever happens next
        try:
            # Start-up is not the snippet's time: at load 25 it alone took over 2 s.
            ready = await asyncio.wait_for(worker.read(1), self._start_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            await self._discard(worker)
            raise JsonnetError("failed: the Jsonnet sandbox did not start", "crashed") from None
        except BaseException:
            await self._discard(worker)
            raise
        if ready != b"R":
            await self._discard(worker)
            raise JsonnetError("failed: the Jsonnet sandbox did not start", "crashed")
        return worker

    async def _discard(self, worker: _Worker) -> None:
        if worker in self._workers and not self._closed:
            self.replacements += 1
        self._workers.discard(worker)
        await worker.kill()

    async def close(self) -> None:
        """End every worker (shutdown): none outlives the server."""
        self._closed = True
        workers, idle, self._idle = list(self._workers), self._idle, []
        self._workers.clear()
        for worker in workers:
            worker.signal_kill()  # all of them before the first await
        for worker in workers:
            if worker in idle:
                worker.sock.close()
            # A busy worker's socket stays open until its evaluation, which now reads the end of
            # it, discards the worker: closed under a pending read, it would never wake.
            await worker.reaped()


async def evaluate(
    source: str,
    *,
    ext: Mapping[str, Any] | None = None,
    tla: Mapping[str, Any] | None = None,
    timeout: float,
    name: str = "snippet.jsonnet",
) -> Any:
    """One evaluation in a process of its own (a pool of one, closed after): for callers not yet
    handed the service's ``JsonnetSandbox`` (the federation claims mappers)."""
    sandbox = JsonnetSandbox(1, 0)
    try:
        return await sandbox.evaluate(source, ext=ext, tla=tla, timeout=timeout, name=name)
    finally:
        await sandbox.close()
