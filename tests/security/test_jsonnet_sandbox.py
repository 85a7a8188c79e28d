"""The warm pool of Jsonnet sandbox processes (``security/jsonnet.py``): real worker processes,
real rlimits and signals. No timed assertions: deadlines are CPU seconds inside the worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar import errors
from sidecar.metrics import Metrics
from sidecar.security.jsonnet import JsonnetError, JsonnetSandbox
from tests.ops.test_metrics import value

SPIN = (  # 10^10 additions: only the deadline stops it
    "std.foldl(function(a, b) std.foldl(function(c, d) c + d, std.range(0, 100000), a),"
    " std.range(0, 100000), 0)"
)
BOMB = "std.length(std.makeArray(400000000, function(i) i))"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def wait_until(check: object, *, limit: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


@pytest.fixture
async def sandbox() -> AsyncIterator[JsonnetSandbox]:
    pool = JsonnetSandbox(2, 4)
    try:
        yield pool
    finally:
        await pool.close()


async def test_ext_vars_and_tlas_reach_the_snippet(sandbox: JsonnetSandbox) -> None:
    out = await sandbox.evaluate(
        "function(ctx) { a: ctx.x, b: std.extVar('e') }", ext={"e": [1]}, tla={"ctx": {"x": "y"}}, timeout=2
    )
    assert out == {"a": "y", "b": [1]}


async def test_a_worker_is_reused_between_evaluations(sandbox: JsonnetSandbox) -> None:
    await sandbox.evaluate("1", timeout=2)
    first = sandbox.pids()
    await sandbox.evaluate("2", timeout=2)
    assert sandbox.pids() == first and len(first) == 1


async def test_an_error_keeps_go_jsonnets_text(sandbox: JsonnetSandbox) -> None:
    # As Kratos reports it: go-jsonnet's message, then the stack of file:line:column ranges.
    with pytest.raises(JsonnetError) as caught:
        await sandbox.evaluate("error 'no'", timeout=2, name="body.jsonnet")
    assert str(caught.value) == "failed: RUNTIME ERROR: no\n\tbody.jsonnet:1:1-11\t$\n\tDuring evaluation\t\n"


async def test_a_syntax_error_names_the_place(sandbox: JsonnetSandbox) -> None:
    with pytest.raises(JsonnetError, match=r"^failed: m\.jsonnet:1:2 Unexpected: end of file"):
        await sandbox.evaluate("{", timeout=2, name="m.jsonnet")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("import '/etc/hostname'", id="import"),
        pytest.param("std.length(importstr '/etc/hostname')", id="importstr"),
        pytest.param("std.length(importbin '/etc/hostname')", id="importbin"),
    ],
)
async def test_imports_are_refused_as_kratos_refuses_them(sandbox: JsonnetSandbox, source: str) -> None:
    with pytest.raises(JsonnetError, match=r"^failed: RUNTIME ERROR: import not available /etc/hostname"):
        await sandbox.evaluate(source, timeout=2)
    assert await sandbox.evaluate("{ ok: true }", timeout=2) == {"ok": True}


async def test_an_import_in_an_unused_branch_is_never_resolved(sandbox: JsonnetSandbox) -> None:
    # Jsonnet is lazy, in go-jsonnet as here: Kratos evaluates this snippet too.
    assert await sandbox.evaluate("local unused = import 'x.libsonnet'; 1", timeout=2) == 1


async def test_recursion_stops_at_go_jsonnets_stack_limit(sandbox: JsonnetSandbox) -> None:
    assert await sandbox.evaluate("local f(n) = if n == 0 then 0 else 1 + f(n - 1); f(400)", timeout=5) == 400
    with pytest.raises(JsonnetError, match="max stack frames exceeded"):
        await sandbox.evaluate("local f(n) = if n == 0 then 0 else 1 + f(n - 1); f(600)", timeout=5)


async def test_a_looping_snippet_times_out_and_the_next_runs_on_a_fresh_worker(
    sandbox: JsonnetSandbox,
) -> None:
    await sandbox.evaluate("1", timeout=2)
    (old,) = sandbox.pids()
    with pytest.raises(JsonnetError, match=r"^did not finish within 0\.5s$"):
        await sandbox.evaluate(SPIN, timeout=0.5)
    assert not alive(old)
    assert await sandbox.evaluate("{ ok: true }", timeout=2) == {"ok": True}
    assert old not in sandbox.pids()


async def test_a_memory_bomb_is_refused_and_the_pool_recovers() -> None:
    pool = JsonnetSandbox(1, 0, memory_limit=256 * 1024 * 1024)
    try:
        with pytest.raises(JsonnetError):
            await pool.evaluate(BOMB, timeout=30)
        assert await pool.evaluate("[1, 2]", timeout=2) == [1, 2]
    finally:
        await pool.close()


async def test_concurrency_above_the_pool_size_queues_and_completes(sandbox: JsonnetSandbox) -> None:
    results = await asyncio.gather(*(sandbox.evaluate(f"{i} * 2", timeout=5) for i in range(6)))
    assert results == [i * 2 for i in range(6)]
    assert len(sandbox.pids()) <= 2


async def test_past_the_queue_bound_an_evaluation_is_refused() -> None:
    pool = JsonnetSandbox(1, 1)
    try:
        # One looping evaluation holds the only worker, one waits; the third is refused at once.
        slow = asyncio.ensure_future(pool.evaluate(SPIN, timeout=30))
        await wait_until(lambda: len(pool.pids()) == 1)
        waiting = asyncio.ensure_future(pool.evaluate("1", timeout=5))
        await wait_until(lambda: pool._admission.queue_depth == 1)
        with pytest.raises(errors.ServiceUnavailable):
            await pool.evaluate("2", timeout=5)
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)
        # Killed while starting or while evaluating, depending on how fast the worker came up.
        with pytest.raises(JsonnetError, match=r"crashed|did not start"):
            await slow
        assert await waiting == 1
    finally:
        await pool.close()


async def test_a_worker_killed_from_outside_is_replaced(sandbox: JsonnetSandbox) -> None:
    await sandbox.evaluate("1", timeout=2)
    (victim,) = sandbox.pids()
    os.kill(victim, signal.SIGKILL)
    await wait_until(lambda: victim not in sandbox.pids())
    assert await sandbox.evaluate("3", timeout=2) == 3
    assert victim not in sandbox.pids() and len(sandbox.pids()) == 1


async def test_outcomes_replacements_and_queue_reach_the_metrics(sandbox: JsonnetSandbox) -> None:
    metrics = Metrics(jsonnet=sandbox)
    assert await sandbox.evaluate("1", timeout=2) == 1
    with pytest.raises(JsonnetError):
        await sandbox.evaluate("error 'no'", timeout=2)
    with pytest.raises(JsonnetError, match="did not finish"):
        await sandbox.evaluate(SPIN, timeout=0.2)
    text = (await metrics.render())[0].decode()
    assert value(text, "sidecar_jsonnet_evaluations_total", outcome="ok") == 1
    assert value(text, "sidecar_jsonnet_evaluations_total", outcome="error") == 1
    assert value(text, "sidecar_jsonnet_evaluations_total", outcome="timeout") == 1
    assert value(text, "sidecar_jsonnet_evaluations_total", outcome="busy") == 0
    assert value(text, "sidecar_jsonnet_worker_replacements_total") == 1
    assert value(text, "sidecar_jsonnet_queue_depth") == 0
    # Counts are synced, not re-added, on the next scrape.
    await sandbox.evaluate("2", timeout=2)
    text = (await metrics.render())[0].decode()
    assert value(text, "sidecar_jsonnet_evaluations_total", outcome="ok") == 2
    assert value(text, "sidecar_jsonnet_worker_replacements_total") == 1


async def test_a_refusal_counts_as_busy_and_the_wait_as_queue_depth() -> None:
    pool = JsonnetSandbox(1, 1)
    metrics = Metrics(jsonnet=pool)
    try:
        slow = asyncio.ensure_future(pool.evaluate(SPIN, timeout=30))
        await wait_until(lambda: len(pool.pids()) == 1)
        waiting = asyncio.ensure_future(pool.evaluate("1", timeout=5))
        await wait_until(lambda: pool.queue_depth == 1)
        with pytest.raises(errors.ServiceUnavailable):
            await pool.evaluate("2", timeout=5)
        text = (await metrics.render())[0].decode()
        assert value(text, "sidecar_jsonnet_queue_depth") == 1
        assert value(text, "sidecar_jsonnet_evaluations_total", outcome="busy") == 1
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(JsonnetError, match=r"crashed|did not start"):
            await slow
        assert await waiting == 1
        assert pool.outcomes["crashed"] == 1
    finally:
        await pool.close()


async def test_close_leaves_no_worker_process() -> None:
    pool = JsonnetSandbox(2, 4)
    await asyncio.gather(pool.evaluate("1", timeout=5), pool.evaluate("2", timeout=5))
    pids = pool.pids()
    assert len(pids) == 2
    await pool.close()
    assert not any(alive(pid) for pid in pids)
    assert pool.pids() == []
    with pytest.raises(JsonnetError, match="shut down"):
        await pool.evaluate("1", timeout=2)


# A server shutting down with evaluations in flight: close(), the callers cancelled (or not), then
# the loop ends (asyncio.run / uvloop.run cancel every task left, asyncio's own included). Some calls are
# starting their workers at that moment. Run as a process of its own: a hang must fail, not hang
# the test run, and only a process's loop can end that way.
SHUTDOWN = textwrap.dedent(
    """
    import asyncio, json, os, sys
    import uvloop
    from sidecar.security.jsonnet import JsonnetSandbox

    def children():
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if int(stat.read().rsplit(") ", 1)[1].split()[1]) == os.getpid():
                        found.append(int(pid))
            except OSError:
                pass
        return found

    async def main():
        pool = JsonnetSandbox(2, 256)
        calls = [asyncio.ensure_future(pool.evaluate("1", timeout=5)) for _ in range(400)]
        await asyncio.sleep(0)  # two calls are starting their workers
        started = children()
        await asyncio.wait_for(pool.close(), 10)
        if sys.argv[2] == "cancel":
            for call in calls:
                call.cancel()
        print(json.dumps(sorted(set(started + children()))), flush=True)

    (uvloop.run if sys.argv[1] == "uvloop" else asyncio.run)(main())
    print(json.dumps(children()), flush=True)
    """
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("callers", ["cancel", "left_to_the_loop"])
def test_shutdown_with_workers_starting_ends_and_leaves_no_process(loop: str, callers: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", SHUTDOWN, loop, callers],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the loop never finished shutting down: {exc.stdout!r}") from None
    assert done.returncode == 0, done.stderr[-2000:]
    seen, left = (json.loads(line) for line in done.stdout.splitlines())
    assert seen, "no worker was starting: the race was not exercised"
    assert left == []  # none left, not even unreaped
    assert not any(alive(pid) for pid in seen)
