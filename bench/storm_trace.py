"""What a decision at concurrency 1 waits for during a login storm, from the kernel's scheduler trace.

The storm rows of ``bench/run.py`` give wrk's p99, which on a shared machine measures the
neighbours as much as the server (idle rows of 10-1000 ms at load 7-10). This runs the same
scenario (``sidecar serve`` on core 0 with ``hashers.pool``/``priority``, 20 login loops and
``wrk -c1`` on the decision from core 1) under ``perf sched record`` and splits every request
cycle in two: the server part (the event loop woken by wrk -> wrk woken by the answer) and the
client part (the rest). Each wait of the loop thread for its CPU (woken or preempted -> running)
is blamed on what ran there instead: ``hashers`` (the server's hashing processes), ``logins``
(the login loops), ``bench`` (redis, nginx), ``kernel`` threads, ``others`` (anything else on the
machine). Counts of cycles with a wait over 0.5 ms behind each, and of cycles where the loop
itself ran over 0.5 ms (Python work such as a login's steps), do not depend on the load the way
wall-clock percentiles do.

    .venv/bin/python bench/storm_trace.py [--hashers process:low] [--duration 6] [--rounds 2]

Needs ``perf`` and the right to trace (root). Prints one JSON line per round and phase (idle, storm).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run as B  # noqa: E402

LINE = re.compile(r"^\s*(.+?)\s+(-?\d+)/(-?\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
SWITCH = re.compile(
    r"prev_comm=(.*) prev_pid=(\d+) prev_prio=\d+ prev_state=(\S+) "
    r"==> next_comm=(.*) next_pid=(\d+) next_prio=\d+"
)
WAKING = re.compile(r"comm=(.*) pid=(\d+) prio")
KERNEL = ("ksoftirqd", "kworker", "rcu", "migration", "khugepaged", "kcompactd", "swapper", "kswapd")
LONG = 0.0005


@dataclass
class Thread:
    """A traced thread's waits for its CPU in the current cycle, by what ran instead."""

    tid: int
    cpu: int | None = None
    waiting_since: float | None = None
    running_since: float | None = None
    ran: float = 0.0
    blame: collections.defaultdict[str, float] = field(default_factory=lambda: collections.defaultdict(float))


def analyse(trace: Path, loop_tid: int, groups: dict[str, list[int]]) -> dict[str, Any]:
    """Cycles of ``wrk -c1`` against the loop ``loop_tid`` in a ``perf script`` text trace."""
    group_of = {pid: name for name, pids in groups.items() for pid in pids}
    tid_pid: dict[int, int] = {}
    comm: dict[int, str] = {}

    def group(tid: int) -> str:
        pid = tid_pid.get(tid, tid)
        if pid in group_of:
            return group_of[pid]
        if pid == loop_tid:
            return "server threads"
        return "kernel" if comm.get(tid, "").startswith(KERNEL) else "others"

    loop, client = Thread(loop_tid), None
    t: Thread | None
    on_cpu: dict[int, float] = {}  # cpu -> when its current task started
    request = answer = None
    cycles: list[tuple[float, float, float, float, dict[str, float], dict[str, float]]] = []
    with trace.open(errors="replace") as lines:
        for line in lines:
            m = LINE.match(line)
            if not m:
                continue
            name, pid_s, tid_s, cpu_s, ts_s, event, rest = m.groups()
            ts, tid, pid, cpu = float(ts_s), int(tid_s), int(pid_s), int(cpu_s)
            if pid > 0:
                tid_pid[tid] = pid
            comm.setdefault(tid, name)
            if event == "sched_waking":
                w = WAKING.search(rest)
                if not w:
                    continue
                woken_comm, woken = w.group(1), int(w.group(2))
                comm[woken] = woken_comm
                if client is None and woken_comm == "wrk" and tid == loop_tid:
                    client = Thread(woken)
                if client is not None and woken == loop_tid and tid == client.tid:
                    if request is not None and answer is not None:
                        cycles.append((request, answer, ts, loop.ran, dict(loop.blame), dict(client.blame)))
                    for t in (loop, client):
                        t.blame.clear()
                        t.ran = 0.0
                    request, answer = ts, None
                elif client is not None and woken == client.tid and tid == loop_tid and answer is None:
                    answer = ts
                for t in (loop, client):
                    if (
                        t is not None
                        and woken == t.tid
                        and t.waiting_since is None
                        and t.running_since is None
                    ):
                        t.waiting_since = ts
            elif event == "sched_switch":
                s = SWITCH.search(rest)
                if not s:
                    continue
                prev_comm, prev_s, prev_state, next_comm, next_s = s.groups()
                prev, nxt = int(prev_s), int(next_s)
                comm[prev], comm[nxt] = prev_comm, next_comm
                for t in (loop, client):
                    if t is None:
                        continue
                    if prev == t.tid:
                        if t.running_since is not None:
                            t.ran += ts - t.running_since
                        t.running_since = None
                        t.cpu = cpu
                        t.waiting_since = ts if prev_state.startswith("R") else None
                    elif t.waiting_since is not None and t.cpu in (None, cpu):
                        t.blame[group(prev)] += ts - max(t.waiting_since, on_cpu.get(cpu, 0.0))
                    if nxt == t.tid:
                        t.waiting_since = None
                        t.running_since = ts
                        t.cpu = cpu
                on_cpu[cpu] = ts

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return round(ordered[int(q * (len(ordered) - 1))] * 1000, 3) if ordered else float("nan")

    server = [c[1] - c[0] for c in cycles]
    whole = [c[2] - c[0] for c in cycles]
    stalled: collections.Counter[str] = collections.Counter()  # seconds in waits over 0.5 ms, by group
    for c in cycles:
        stalled.update({k: v for k, v in c[4].items() if v > LONG})
    span = (cycles[-1][2] - cycles[0][0]) if cycles else 0.0
    long_waits: dict[str, collections.Counter[str]] = {
        "server": collections.Counter(),
        "client": collections.Counter(),
    }
    for c in cycles:
        for side, blame in (("server", c[4]), ("client", c[5])):
            long_waits[side].update(k for k, v in blame.items() if v > LONG)
    return {
        "cycles": len(cycles),
        "cycle_p99_ms": pct(whole, 0.99),
        "cycle_p99_wrk_ms": corrected_p99(whole),
        "server_p99_wrk_ms": corrected_p99(server),
        "server_long_waits_share_of_time": {k: round(v / span, 4) for k, v in stalled.most_common()}
        if span
        else {},
        "server_p50_ms": pct(server, 0.5),
        "server_p99_ms": pct(server, 0.99),
        "server_p999_ms": pct(server, 0.999),
        "server_waits_over_0.5ms": dict(long_waits["server"].most_common()),
        "loop_ran_over_0.5ms": sum(1 for c in cycles if c[3] > LONG),
        "client_waits_over_0.5ms": dict(long_waits["client"].most_common()),
    }


def corrected_p99(latencies: list[float]) -> float:
    """The p99 wrk prints for these latencies: wrk adds, for each latency of at least twice the mean
    interval between requests, samples at that latency minus 1, 2, ... intervals
    (``stats_correct``, coordinated omission), so a 4 ms stall at c1 weighs as much as the requests
    it held back. Its c1 p99 is a share of wall-clock time, not of requests."""
    if not latencies:
        return float("nan")
    interval = sum(latencies) / len(latencies)
    samples = list(latencies)
    for n in latencies:
        if n >= 2 * interval:
            m = n - interval
            while m > interval:
                samples.append(m)
                m -= interval
    samples.sort()
    return round(samples[int(0.99 * (len(samples) - 1))] * 1000, 3)


def traced(out: Path, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["perf", "sched", "record", "-o", str(out), "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def script(data: Path) -> Path:
    text = data.with_suffix(".txt")
    with text.open("wb") as f:
        subprocess.run(
            ["perf", "script", "-i", str(data), "-F", "comm,pid,tid,cpu,time,event,trace"],
            stdout=f,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    data.unlink()
    return text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hashers", default="process:low", help="hashers.pool:hashers.priority")
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--logins", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("perf"):
        print("perf is required", file=sys.stderr)
        return 1
    pool, priority = args.hashers.split(":")
    procs = B.Procs()
    tmp = Path(tempfile.mkdtemp(prefix="storm-trace-"))
    try:
        base = B.start_baseline(procs, tmp)
        bench = B.Bench(procs, tmp, base.static_port, base.redis_url, f"sqlite:///{tmp}/bench.db")
        B.migrate(bench)
        side = bench.sidecar(hashers={"pool": pool, "priority": priority})
        token = B.sign_in(side, max(args.logins, 4))
        auth = {"X-Original-Method": "GET", "X-Original-URI": "/private/x", "X-Session-Token": token}
        url = f"{side.base}/.auth/authz/nginx"
        B.wrk(url, connections=50, duration=2, headers=auth)
        d = args.duration
        for i in range(args.rounds):
            for phase in ("idle", "storm"):
                logins = None
                if phase == "storm":
                    logins = subprocess.Popen(
                        [
                            *B.LOAD,
                            sys.executable,
                            str(ROOT / "bench" / "logins.py"),
                            f"{side.base}/.auth",
                            B.LOGIN_EMAIL,
                            B.LOGIN_PASSWORD,
                            f"--concurrency={args.logins}",
                            f"--duration={d + 2}",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                    time.sleep(1.5)  # every login loop is hashing by now
                data = tmp / f"{phase}{i}.data"
                perf = traced(data, d - 1)
                row = B.wrk(url, connections=1, duration=d, headers=auth, server=side.pid)
                perf.wait()
                groups = {
                    "hashers": [p for p in B._family(side.pid) if p != side.pid],
                    "logins": [logins.pid] if logins else [],
                    "bench": [p.pid for p in procs.procs if p.pid != side.pid],
                }
                result: dict[str, Any] = {"round": i, "phase": phase, "hashers": args.hashers}
                if logins is not None:
                    done = json.loads(logins.communicate(timeout=300)[0].decode().strip().splitlines()[-1])
                    result["logins"] = done["ok"]
                result |= {
                    "wrk_p99_ms": row["p99_ms"],
                    "wrk_rps": round(row["rps"]),
                    "load": round(row["load"], 2),
                }
                result |= analyse(script(data), side.pid, groups)
                print(json.dumps(result), flush=True)
        procs.stop(side.proc)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
