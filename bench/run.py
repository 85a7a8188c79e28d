"""The access-path benchmark: `sidecar serve` as shipped, as a ratio to nginx in the same run.

Baseline (= 1.0): nginx as a reverse proxy to a static nginx upstream, one core each: the real
ceiling of a proxy hop. It is measured first and last; the mean is the baseline and the gap
between the two shows the drift of a shared machine. nginx in front of a Python app (the old
baseline, held back by that app) is kept as a calibration row only.

Every headline row runs the real command, ``python -m sidecar serve -c sidecar.yaml``, as a user
runs it in production: no ``--dev``, JSON access log at level ``info`` written to a file,
Prometheus metrics, Redis for sessions, the default argon2id parameters, the brute-force limits
on. Rows without the access log are diagnostics (they give the log's cost per request).

Cores (2-core machine): core 0 = the server under test (nginx proxy or one sidecar worker),
core 1 = wrk, the upstreams, Redis and the load scripts. Scenarios run one after the other.
Each row reports req/s, the ratio to the baseline, p50/p99, and the server's CPU time per
request (user + system from /proc, every thread and child): the steadiest figure on a busy VM.
Writes bench/RESULTS.md (machine state and every row of the run).

    .venv/bin/python bench/run.py [--duration 10] [--connections 50] [--repeat 2]

``--only GROUP[,GROUP...]`` runs the nginx baseline (first and last) and those row groups only
(``GROUPS`` below), prints their rows as a table and leaves bench/RESULTS.md as it is (it keeps
the last full run). The ``decision`` and ``proxy`` rows alternate with each other when both run,
as in the full run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER_CORE, LOAD_CORE = "0", "1"
LOAD = ["taskset", "-c", LOAD_CORE]
NO_DISK = ["--save", "", "--appendonly", "no"]
LOGIN_EMAIL, LOGIN_PASSWORD = "storm@example.com", "Storm-login-bench-4-argon2!"
COOKIE_SECRET = "bench-cookie-secret-0123456789abcdef"
RULES = "version: 1\nrules:\n  - {id: private, match: {paths: ['/private/**']}, require: authenticated}\n"
Row = dict[str, float]
# The same signed-in user asking for a different URL on every request (as a browser walking a site
# does): the session stays cached, but no two requests are the same, so nothing answered for one
# request can be written again for the next (the protocol's remembered answers never hit).
VARIED_URI = """local n = 0
request = function()
  n = n + 1
  wrk.headers["X-Original-URI"] = "/private/" .. n
  return wrk.format(nil)
end
"""
VARIED_PATH = """local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/private/" .. n)
end
"""
# Requests that rotate over many sessions (``%s``: Lua strings), so that hardly two at a time
# ask for the same one: with the session cache off, each is a read from the stores of its own.
ROTATED_TOKENS = """local tokens = {%s}
local n = 0
request = function()
  n = n %% #tokens + 1
  wrk.headers["X-Session-Token"] = tokens[n]
  return wrk.format(nil)
end
"""
STORM_VARIANTS = (
    (
        "process_adaptive",
        {"pool": "process", "priority": "adaptive"},
        "hashing processes, SCHED_IDLE, nice +10 when starved (as shipped)",
    ),
    (
        "process_low",
        {"pool": "process", "priority": "low"},
        "hashing processes, nice +10 (shipped until 2026-12-07)",
    ),
    ("process_idle", {"pool": "process", "priority": "idle"}, "hashing processes, SCHED_IDLE only"),
)
"""``hashers.pool`` and ``hashers.priority`` in the storm rows: the default first."""
GROUPS = {
    "calibration": "nginx -> Python upstream, bare ASGI app under uvicorn",
    "decision": "cached decision: as shipped, access log off, fast path off, granian (alternated)",
    "proxy": "full proxy, signed in: as shipped, access log off, fast path off, granian (alternated)",
    "c1": "concurrency 1: nginx, the decision, granian's decision",
    "storms": "decision during a login storm, logins during a proxy flood (hashers.pool x priority)",
    "miss": "decision with the session cache off",
    "aiohttp": "full proxy with proxy.upstream_client: aiohttp",
    "workers": "--workers 1 and 2",
    "signups": "sign-ups against the argon2 limit, and the burst",
    "inprocess": "bench/access_log.py and bench/decision_path.py",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Procs:
    """Every process the run starts, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], port: int, core: str, cwd: Path | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("wb") if log else subprocess.DEVNULL
        p = subprocess.Popen(["taskset", "-c", core, *args], stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
        self.procs.append(p)
        try:
            wait_port(port)
        except RuntimeError:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"{args[:4]} did not open port {port}:\n{tail}") from None
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(40)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def nginx_conf(root: Path, server: str, workers: int = 1) -> Path:
    temps = "".join(
        f"{n}_temp_path {root}/{n}; " for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = root / "nginx.conf"
    conf.write_text(
        f"daemon off; worker_processes {workers}; user root; pid {root}/nginx.pid; "
        f"error_log {root}/error.log warn;\n"
        f"events {{ worker_connections 4096; }}\nhttp {{ access_log off; {temps}\n{server}\n}}\n"
    )
    return conf


def start_nginx(
    procs: Procs, tmp: Path, name: str, server: str, port: int, core: str
) -> subprocess.Popen[bytes]:
    root = tmp / name
    root.mkdir()
    conf = nginx_conf(root, server)
    return procs.start(
        ["/usr/sbin/nginx", "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)], port, core
    )


@dataclass
class Baseline:
    """The nginx baseline every bench compares against: static nginx, proxy nginx in front, a Redis."""

    static_port: int
    ngx_port: int
    redis_port: int
    ngx: subprocess.Popen[bytes]

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"


def start_baseline(procs: Procs, tmp: Path, routes: dict[str, int] | None = None) -> Baseline:
    """Start the static nginx (load core), the proxy nginx (server core) and Redis (load core), and write
    ``rules.yaml``. ``routes`` maps extra path prefixes of the proxy nginx to upstream ports."""
    static_port, ngx_port, redis_port = free_port(), free_port(), free_port()
    start_nginx(
        procs,
        tmp,
        "static",
        f"server {{ listen 127.0.0.1:{static_port}; location / {{ return 200 'ok\\n'; }} }}",
        static_port,
        LOAD_CORE,
    )
    extra = routes or {}
    upstreams = "".join(
        f"upstream r{i} {{ server 127.0.0.1:{port}; keepalive 64; }}\n"
        for i, port in enumerate(extra.values())
    )
    locations = "".join(f"location {prefix} {{ proxy_pass http://r{i}; }} " for i, prefix in enumerate(extra))
    ngx = start_nginx(
        procs,
        tmp,
        "proxy",
        f"upstream st {{ server 127.0.0.1:{static_port}; keepalive 64; }}\n{upstreams}"
        f"server {{ listen 127.0.0.1:{ngx_port}; proxy_http_version 1.1; "
        f"proxy_set_header Connection ''; {locations}location / {{ proxy_pass http://st; }} }}",
        ngx_port,
        SERVER_CORE,
    )
    procs.start(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp), *NO_DISK],
        redis_port,
        LOAD_CORE,
    )
    (tmp / "rules.yaml").write_text(RULES)
    return Baseline(static_port, ngx_port, redis_port, ngx)


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's worker, ``--workers`` processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and its descendants, in clock ticks."""
    total = 0
    for p in _family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def children_ticks(pid: int) -> dict[int, int]:
    """CPU ticks of each child of ``pid`` (``--workers`` processes) and its own descendants."""
    out = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out[int(child)] = cpu_ticks(int(child))
    return out


def memory_kib(pid: int, field_name: str) -> int:
    """``VmRSS`` or ``VmHWM`` (peak) of ``pid`` and its descendants, KiB."""
    total = 0
    for p in _family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1])
    return total


def wrk(
    url: str,
    *,
    connections: int,
    duration: int,
    headers: dict[str, str],
    server: int | None = None,
    cores: str = LOAD_CORE,
    script: Path | None = None,
) -> Row:
    """wrk's figures, the load average when it started and, with ``server`` (a PID), the server's
    CPU time per request. ``script``: a wrk Lua script (``VARIED_URI``, ``VARIED_PATH``)."""
    load = os.getloadavg()[0]
    before = cpu_ticks(server) if server else 0
    args = ["taskset", "-c", cores, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    if script:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = float("nan")
    if server:
        cpu_us = (cpu_ticks(server) - before) / os.sysconf("SC_CLK_TCK") * 1e6 / max(count, 1)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "errors": float(sum(int(x) for x in errors.groups())) if errors else 0.0,
        "cpu_us": cpu_us,
        "load": load,
    }


def mean_row(rows: list[Row]) -> Row:
    return {k: statistics.fmean(r[k] for r in rows) for k in rows[0]}


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Bench:
    """The shared parts of one run: processes, ports, the sidecar's config and its stores."""

    procs: Procs
    tmp: Path
    upstream_port: int
    redis_url: str
    dsn: str
    results: dict[str, Row] = field(default_factory=dict)
    counter: int = 0

    def config(self, port: int, admin_port: int, **overrides: Any) -> dict[str, Any]:
        """The README production set-up: secrets, Redis, rules, an upstream, JSON logs at info."""
        config: dict[str, Any] = {
            "dsn": self.dsn,
            "secrets": {"cookie": [COOKIE_SECRET]},
            "serve": {
                "public": {
                    "host": "127.0.0.1",
                    "port": port,
                    "base_url": f"http://127.0.0.1:{port}/.auth",
                },
                "admin": {"host": "127.0.0.1", "port": admin_port},
            },
            "log": {"level": "info", "format": "json"},
            "proxy": {"upstream": f"http://127.0.0.1:{self.upstream_port}"},
            "rules": [str(self.tmp / "rules.yaml")],
            "redis": {"url": self.redis_url, "key_prefix": "bench:"},
        }
        from sidecar.config.loader import deep_merge

        return deep_merge(config, overrides)

    def sidecar(
        self, *, workers: int = 1, core: str = SERVER_CORE, log_pipe: bool = False, **overrides: Any
    ) -> Sidecar:
        """``log_pipe``: the server's output goes into a pipe that a ``cat`` on the load core copies
        to the log file, as a container runtime reads a container's output (else: the file itself)."""
        self.counter += 1
        port, admin_port = free_port(), free_port()
        folder = self.tmp / f"sidecar-{self.counter}"
        folder.mkdir()
        path = folder / "sidecar.yaml"
        path.write_text(yaml.safe_dump(self.config(port, admin_port, **overrides)))
        log = folder / "sidecar.log"
        argv = [sys.executable, "-m", "sidecar", "serve", "-c", str(path), "--workers", str(workers)]
        if log_pipe:
            # bash execs the server (same PID, so its CPU is still the server's) with its output
            # a pipe to ``cat``.
            copy = f'exec > >(exec {" ".join(LOAD)} cat > "$0") 2>&1; exec "$@"'
            argv = ["bash", "-c", copy, str(log), *argv]
        proc = self.procs.start(argv, port, core, cwd=folder, log=None if log_pipe else log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{admin_port}/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        return Sidecar(proc, port, admin_port, log)


def migrate(bench: Bench) -> None:
    path = bench.tmp / "migrate.yaml"
    path.write_text(yaml.safe_dump({"dsn": bench.dsn}))
    subprocess.run(
        [sys.executable, "-m", "sidecar", "migrate", "up", "-c", str(path)], check=True, capture_output=True
    )


def sign_in(side: Sidecar, storm_users: int = 0) -> str:
    """Create the bench user and the storm's users (``bench/logins.py`` names them) through the
    admin API, and log the bench user in through the public API flow."""
    from bench.logins import user

    for email in [LOGIN_EMAIL, *(user(LOGIN_EMAIL, i) for i in range(storm_users))]:
        created = httpx.post(
            f"http://127.0.0.1:{side.admin_port}/admin/identities",
            json={
                "schema_id": "default",
                "traits": {"email": email},
                "credentials": {"password": {"config": {"password": LOGIN_PASSWORD}}},
            },
            timeout=60,
        )
        assert created.status_code in (201, 409), created.text
    return log_in(side, LOGIN_EMAIL)


def log_in(side: Sidecar, email: str) -> str:
    """A new session of ``email`` (the bench password) through the public API flow: its token."""
    flow = httpx.get(f"{side.base}/.auth/self-service/login/api", timeout=10).json()
    login = httpx.post(
        f"{side.base}/.auth/self-service/login",
        params={"flow": flow["id"]},
        json={"method": "password", "identifier": email, "password": LOGIN_PASSWORD},
        timeout=60,
    )
    assert login.status_code == 200, login.text
    return str(login.json()["session_token"])


def argon2_cpu_seconds() -> float:
    """CPU seconds one argon2id hash with the default parameters costs (all its lanes)."""
    import argon2.low_level

    from sidecar.config.model import Argon2Config

    a = Argon2Config()
    started = time.process_time()
    n = 3
    for _ in range(n):
        argon2.low_level.hash_secret(
            b"bench-password",
            os.urandom(a.salt_length),
            time_cost=a.iterations,
            memory_cost=a.memory // 1024,
            parallelism=a.parallelism,
            hash_len=a.key_length,
            type=argon2.low_level.Type.ID,
        )
    return (time.process_time() - started) / n


def machine_state() -> list[str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        "unknown",
    )
    mem = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    nginx_v = subprocess.run(["/usr/sbin/nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    import aiohttp
    import granian
    import uvicorn

    return [
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; {mem.split(':')[1].strip()} RAM",
        f"- `uptime` before the run: {uptime}",
        f"- kernel {platform.release()}; Python {platform.python_version()}; uvicorn {uvicorn.__version__} "
        f"(uvloop, httptools); granian {granian.__version__}; aiohttp {aiohttp.__version__}",
        f"- {nginx_v}; {wrk_v}",
        f"- pinning: server under test on core {SERVER_CORE}; "
        f"wrk, the upstreams, Redis and the load scripts on core {LOAD_CORE}",
    ]


def run_script(script: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each headline row")
    parser.add_argument("--logins", type=int, default=20, help="concurrent logins in the storm scenario")
    parser.add_argument("--burst", type=int, default=200, help="simultaneous sign-ups in the burst")
    parser.add_argument("--dsn", help="the SQL database (default: a SQLite file in the run's folder)")
    parser.add_argument(
        "--only",
        type=lambda v: [g.strip() for g in v.split(",") if g.strip()],
        help="comma-separated row groups (with the nginx baseline); the table goes to stdout, not "
        "RESULTS.md: " + "; ".join(f"{k}: {v}" for k, v in GROUPS.items()),
    )
    args = parser.parse_args()
    unknown = sorted(set(args.only or ()) - set(GROUPS))
    if unknown:
        print(f"unknown row group(s) {', '.join(unknown)}; known: {', '.join(GROUPS)}", file=sys.stderr)
        return 2

    def want(group: str) -> bool:
        return args.only is None or group in args.only

    for tool in ("wrk", "taskset", "redis-server", "/usr/sbin/nginx"):
        if not shutil.which(tool):
            print(f"{tool} is required", file=sys.stderr)
            return 1
    state = machine_state()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    extra: dict[str, Any] = {}
    r: dict[str, Row] = {}
    try:
        py_port = free_port()
        uvicorn_args = [
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        procs.start(
            [sys.executable, "-m", "uvicorn", "bench.upstream:app", "--port", str(py_port), *uvicorn_args],
            py_port,
            LOAD_CORE,
            cwd=ROOT,
        )
        baseline = start_baseline(procs, tmp, {"/python/": py_port})
        ngx_port, ngx = baseline.ngx_port, baseline.ngx
        bench = Bench(
            procs,
            tmp,
            upstream_port=baseline.static_port,
            redis_url=baseline.redis_url,
            dsn=args.dsn or f"sqlite:///{tmp}/bench.db",
        )
        migrate(bench)
        d, c = args.duration, args.connections

        def nginx(path: str = "/private/x", connections: int = c) -> Row:
            return wrk(
                f"http://127.0.0.1:{ngx_port}{path}",
                connections=connections,
                duration=d,
                headers={},
                server=ngx.pid,
            )

        r["ngx_start"] = nginx()
        if want("c1"):
            r["ngx_c1"] = nginx(connections=1)
        if want("calibration"):
            r["ngx_python"] = nginx("/python/x")
            bare_port = free_port()
            bare = procs.start(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bench.upstream:app",
                    "--port",
                    str(bare_port),
                    *uvicorn_args,
                ],
                bare_port,
                SERVER_CORE,
                cwd=ROOT,
            )
            r["bare_asgi"] = wrk(
                f"http://127.0.0.1:{bare_port}/", connections=c, duration=d, headers={}, server=bare.pid
            )
            procs.stop(bare)

        # --- sidecar serve as shipped ----------------------------------------------------------
        side = bench.sidecar()
        token = sign_in(side, max(args.logins, 4))
        auth = {"X-Original-Method": "GET", "X-Original-URI": "/private/x", "X-Session-Token": token}
        signed_in = {"X-Session-Token": token}
        decision = f"{side.base}/.auth/authz/nginx"
        varied_uri, varied_path = tmp / "varied_uri.lua", tmp / "varied_path.lua"
        varied_uri.write_text(VARIED_URI)
        varied_path.write_text(VARIED_PATH)
        proxied = f"{side.base}/private/x"
        alternated = [g for g in ("decision", "proxy") if want(g)]
        if alternated or want("c1"):
            # The same server with the access log off, up at the same time (idle while the other is
            # measured): the rows alternate, so both see the same machine and the difference is the log.
            quiet = bench.sidecar(log={"level": "warning", "format": "json"})
            # And the same with the public listener under granian (``serve.public.server``), also
            # alternated with the headline rows (uvicorn, the default).
            gran = bench.sidecar(serve={"public": {"server": "granian"}})
            # And with every request through ASGI (``serve.public.fast_path: false``): what the
            # synchronous answers in the HTTP protocol save, same machine, same moment.
            asgi = bench.sidecar(serve={"public": {"fast_path": False}})
            # (row key, server, path, headers) of each group, run in this order in every repeat.
            rows = {
                "decision": [
                    ("decision_cached", side, "/.auth/authz/nginx", auth, None),
                    ("decision_varied", side, "/.auth/authz/nginx", auth, varied_uri),
                    ("decision_nolog", quiet, "/.auth/authz/nginx", auth, None),
                    ("decision_asgi", asgi, "/.auth/authz/nginx", auth, None),
                    ("granian_decision", gran, "/.auth/authz/nginx", auth, None),
                ],
                "proxy": [
                    ("proxy_signed_in", side, "/private/x", signed_in, None),
                    ("proxy_varied", side, "/private/x", signed_in, varied_path),
                    ("proxy_nolog", quiet, "/private/x", signed_in, None),
                    ("proxy_asgi", asgi, "/private/x", signed_in, None),
                    ("granian_proxy", gran, "/private/x", signed_in, None),
                ],
            }
            for s in (side, quiet, asgi, gran):  # warm-up
                wrk(f"{s.base}/.auth/authz/nginx", connections=c, duration=2, headers=auth)
            for i in range(args.repeat):
                for group in alternated:
                    for key, s, path, hdrs, script in rows[group]:
                        r[f"{key}_{i}"] = wrk(
                            f"{s.base}{path}",
                            connections=c,
                            duration=d,
                            headers=hdrs,
                            server=s.pid,
                            script=script,
                        )
            procs.stop(quiet.proc)
            procs.stop(asgi.proc)
            if want("c1"):
                r["granian_c1"] = wrk(
                    f"{gran.base}/.auth/authz/nginx", connections=1, duration=d, headers=auth, server=gran.pid
                )
            procs.stop(gran.proc)
        if want("c1"):
            r["decision_c1"] = wrk(decision, connections=1, duration=d, headers=auth, server=side.pid)

        def storms(side: Sidecar, tag: str) -> None:
            """Both directions: the decision's latency during a login storm, and the logins that
            still complete during a proxy flood."""
            decision, proxied = f"{side.base}/.auth/authz/nginx", f"{side.base}/private/x"
            for name, concurrency, url, conns, hdrs in (
                ("storm", args.logins, decision, 1, auth),
                ("flood", 4, proxied, c, signed_in),
            ):
                login_args = [
                    f"{side.base}/.auth",
                    LOGIN_EMAIL,
                    LOGIN_PASSWORD,
                    f"--concurrency={concurrency}",
                ]
                logins = subprocess.Popen(
                    [
                        *LOAD,
                        sys.executable,
                        str(ROOT / "bench" / "logins.py"),
                        *login_args,
                        f"--duration={d + 2}",
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(1.5)  # every login loop is hashing by now
                r[f"{name}_{tag}"] = wrk(url, connections=conns, duration=d, headers=hdrs, server=side.pid)
                out, _ = logins.communicate(timeout=d + 120)
                extra[f"{name}_{tag}"] = json.loads(out.decode().strip().splitlines()[-1])

        extra["log_lines"] = sum(1 for _ in side.log.open("rb"))
        procs.stop(side.proc)

        if want("storms"):
            # One fresh server per way of hashing, each with its own idle row just before its storm.
            for tag, hashers, _ in STORM_VARIANTS:
                side = bench.sidecar(hashers=hashers)
                wrk(f"{side.base}/.auth/authz/nginx", connections=c, duration=2, headers=auth)
                r[f"decision_c1_{tag}"] = wrk(
                    f"{side.base}/.auth/authz/nginx", connections=1, duration=d, headers=auth, server=side.pid
                )
                if tag == STORM_VARIANTS[0][0]:
                    # The flood without logins, for the flood's own progress during logins.
                    r["flood_alone"] = wrk(
                        f"{side.base}/private/x",
                        connections=c,
                        duration=d,
                        headers=signed_in,
                        server=side.pid,
                    )
                storms(side, tag)
                procs.stop(side.proc)

        if want("miss"):
            side = bench.sidecar(session={"cache_ttl": "0s"})
            decision = f"{side.base}/.auth/authz/nginx"
            wrk(decision, connections=c, duration=2, headers=auth)
            r["decision_miss"] = wrk(decision, connections=c, duration=d, headers=auth, server=side.pid)
            # As many sessions as connections, of the storm's users: every request a store read.
            from bench.logins import user

            users = [user(LOGIN_EMAIL, i % max(args.logins, 4)) for i in range(c)]
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                tokens = list(pool.map(lambda email: log_in(side, email), users))
            rotated = tmp / "rotated_tokens.lua"
            rotated.write_text(ROTATED_TOKENS % ", ".join(f'"{t}"' for t in tokens))
            unauth = {k: v for k, v in auth.items() if k != "X-Session-Token"}
            wrk(decision, connections=c, duration=2, headers=unauth, script=rotated)
            r["decision_miss_sessions"] = wrk(
                decision, connections=c, duration=d, headers=unauth, script=rotated, server=side.pid
            )
            procs.stop(side.proc)

        # --- diagnostics -----------------------------------------------------------------------
        if want("aiohttp"):
            side = bench.sidecar(proxy={"upstream_client": "aiohttp"})
            proxied = f"{side.base}/private/x"
            wrk(proxied, connections=c, duration=2, headers=signed_in)
            r["proxy_aiohttp"] = wrk(proxied, connections=c, duration=d, headers=signed_in, server=side.pid)
            procs.stop(side.proc)

        # --workers: one worker and two, both free to use both cores (wrk shares them); both
        # servers up at the same time and their rows alternated, like the log on/off rows.
        both = f"{SERVER_CORE},{LOAD_CORE}"
        by_workers = {n: bench.sidecar(workers=n, core=both) for n in (1, 2)} if want("workers") else {}
        for side in by_workers.values():
            wrk(f"{side.base}/.auth/authz/nginx", connections=c, duration=2, headers=auth, cores=both)
        for i in range(args.repeat if by_workers else 0):
            for n, side in by_workers.items():
                before_each = children_ticks(side.pid)
                # A new X-Original-URI each request: the server's work, not a remembered answer
                # (one worker writes those faster than one wrk thread sharing both cores can ask).
                r[f"workers_{n}_{i}"] = wrk(
                    f"{side.base}/.auth/authz/nginx",
                    connections=c,
                    duration=d,
                    headers=auth,
                    server=side.pid,
                    cores=both,
                    script=varied_uri,
                )
                if n == 2:
                    # How evenly the kernel spread wrk's connections: the busiest worker's CPU share.
                    after_each = children_ticks(side.pid)
                    spent = [after_each[p] - before_each.get(p, 0) for p in after_each]
                    r[f"workers_{n}_{i}"]["busiest_share"] = max(spent) / max(sum(spent), 1)
        for side in by_workers.values():
            procs.stop(side.proc)

        # --- sign-ups: steady rate against the argon2 limit, then a burst -----------------------
        if want("signups"):
            extra["argon2_cpu_s"] = argon2_cpu_seconds()
            side = bench.sidecar()
            before = cpu_ticks(side.pid)
            extra["signups"] = run_script(
                "signups.py", f"{side.base}/.auth", "--concurrency", "8", "--duration", str(d)
            )
            extra["signups_cpu_s"] = (cpu_ticks(side.pid) - before) / os.sysconf("SC_CLK_TCK")
            procs.stop(side.proc)
            side = bench.sidecar()
            extra["burst_rss_before_kib"] = memory_kib(side.pid, "VmRSS")
            extra["burst"] = run_script("signups.py", f"{side.base}/.auth", "--burst", str(args.burst))
            extra["burst_peak_kib"] = memory_kib(side.pid, "VmHWM")
            extra["burst_alive"] = side.proc.poll() is None
            procs.stop(side.proc)

        if want("inprocess"):
            extra["access_log_in_process"] = run_script("access_log.py")
            extra["decision_path"] = run_script("decision_path.py")
            extra["decision_path_300"] = run_script("decision_path.py", "--rules", "299", "--rounds", "2")
        r["ngx_end"] = nginx()
        r["ngx"] = mean_row([r["ngx_start"], r["ngx_end"]])
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.only is not None:
        print("\n".join(partial_results(state, r, extra, args)))
        return 0
    write_results(state, r, extra, args)
    print((ROOT / "bench" / "RESULTS.md").read_text())
    return 0


def partial_results(
    state: list[str], r: dict[str, Row], extra: dict[str, Any], args: argparse.Namespace
) -> list[str]:
    """The rows an ``--only`` run measured, each as its key, against the same run's baseline."""
    base = r["ngx"]
    lines = [
        f"`bench/run.py --only {','.join(args.only)} --duration {args.duration} "
        f"--connections {args.connections} --repeat {args.repeat}`",
        "",
        *state,
        "",
        "| row | req/s | ratio | p50 ms | p99 ms | errors | server CPU µs/req "
        "| CPU ratio (nginx µs / row's) | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[str, list[Row]] = {}
    for key, x in r.items():
        lines.append(
            f"| {key} | {x['rps']:,.0f} | {x['rps'] / base['rps']:.3f} | {x['p50_ms']:.2f} "
            f"| {x['p99_ms']:.2f} "
            f"| {x['non2xx'] + x['errors']:.0f} | {x['cpu_us']:.1f} | {base['cpu_us'] / x['cpu_us']:.3f} "
            f"| {x['load']:.2f} |"
        )
        stem, _, run = key.rpartition("_")
        if run.isdigit() and stem:
            groups.setdefault(stem, []).append(x)
    for stem, rows in groups.items():
        m = mean_row(rows)
        lines.append(
            f"| **{stem} (mean of {len(rows)})** | {m['rps']:,.0f} | {m['rps'] / base['rps']:.3f} "
            f"| {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['non2xx'] + m['errors']:.0f} | {m['cpu_us']:.1f} "
            f"| {base['cpu_us'] / m['cpu_us']:.3f} | {m['load']:.2f} |"
        )
    if extra:
        lines += ["", "```json", json.dumps({k: v for k, v in extra.items()}, indent=1, default=str), "```"]
    return lines


def server_rows(
    r: dict[str, Row], args: argparse.Namespace, row: Any, cached: Row, proxy: Row
) -> tuple[list[str], str]:
    """``serve.public.server: granian`` against the headline rows (uvicorn), alternated with them."""
    repeats = range(args.repeat)
    decision = mean_row([r[f"granian_decision_{i}"] for i in repeats])
    proxied = mean_row([r[f"granian_proxy_{i}"] for i in repeats])
    lines = [
        row("decision endpoint, cached session, `serve.public.server: granian` (mean)", decision),
        *(
            row(f"decision endpoint, cached session, granian, run {i + 1}", r[f"granian_decision_{i}"])
            for i in repeats
        ),
        row("full proxy, signed-in user, `serve.public.server: granian` (mean)", proxied),
        *(row(f"full proxy, signed-in user, granian, run {i + 1}", r[f"granian_proxy_{i}"]) for i in repeats),
        row("decision endpoint at c1, granian", r["granian_c1"]),
    ]
    saved = [
        (name, 1 - g["cpu_us"] / u["cpu_us"], g["rps"] / u["rps"])
        for name, g, u in (("decision", decision, cached), ("full proxy", proxied, proxy))
    ]
    sentence = (
        "HTTP server (`serve.public.server`; its rows alternated with the headline rows, both servers up"
        " at the same time):"
        + ";".join(
            f" {name}: granian {cut:.0%} less server CPU per request than uvicorn, {gain:.2f}x its req/s"
            for name, cut, gain in saved
        )
        + "."
    )
    return lines, sentence


def write_results(
    state: list[str], r: dict[str, Row], extra: dict[str, Any], args: argparse.Namespace
) -> None:
    base = r["ngx"]["rps"]

    def row(label: str, x: Row, goal: str = "") -> str:
        return (
            f"| {label} | {x['rps']:,.0f} | {x['rps'] / base:.3f} | {goal} | {x['p50_ms']:.2f} "
            f"| {x['p99_ms']:.2f} | {x['non2xx'] + x['errors']:.0f} | {x['cpu_us']:.1f} | {x['load']:.2f} |"
        )

    def met(ok: bool) -> str:
        return "met" if ok else "MISSED"

    repeats = range(args.repeat)
    cached = mean_row([r[f"decision_cached_{i}"] for i in repeats])
    proxy = mean_row([r[f"proxy_signed_in_{i}"] for i in repeats])
    ngx_p99 = r["ngx"]["p99_ms"]
    lines = [
        "# Access-path benchmark",
        "",
        "Command: `.venv/bin/python bench/run.py "
        f"--duration {args.duration} --connections {args.connections} --repeat {args.repeat} "
        f"--logins {args.logins} --burst {args.burst}`",
        "",
        "## Machine state",
        *state,
        "",
        f"## Throughput (wrk -t1 -c{args.connections} -d{args.duration}s; "
        "ratio = req/s over the baseline, same run)",
        "",
        "Baseline = nginx reverse proxy to a static nginx upstream (mean of first and last). Headline rows",
        "are `sidecar serve` as shipped (JSON access log, metrics, Redis, no `--dev`). 'errors' counts",
        "non-2xx answers plus wrk socket errors; 'load' is the 1-minute load average when the row began.",
        "",
        "| scenario | req/s | ratio | goal | p50 ms | p99 ms | errors | server CPU µs/req | load |",
        "|---|---|---|---|---|---|---|---|---|",
        row("**baseline**: nginx → static nginx (mean)", r["ngx"]),
        row("nginx → static nginx, measured first", r["ngx_start"]),
        row("nginx → static nginx, measured last", r["ngx_end"]),
        row("calibration: nginx → Python upstream (the old baseline)", r["ngx_python"]),
        row("calibration: bare ASGI app under uvicorn", r["bare_asgi"]),
        row(
            "decision endpoint, cached session (mean)",
            cached,
            f">= 0.50 ({met(cached['rps'] / base >= 0.5)})",
        ),
        *(row(f"decision endpoint, cached session, run {i + 1}", r[f"decision_cached_{i}"]) for i in repeats),
        row(
            "decision endpoint, cached session, a new X-Original-URI each request (mean)",
            mean_row([r[f"decision_varied_{i}"] for i in repeats]),
        ),
        row(
            "decision endpoint, cache off (`session.cache_ttl: 0s`; one session on every connection: "
            "requests in flight together share one read of Redis + SQL)",
            r["decision_miss"],
            f">= 0.25 ({met(r['decision_miss']['rps'] / base >= 0.25)})",
        ),
        row(
            f"diagnostic: decision, cache off, requests rotating over {args.connections} sessions "
            "(each a read of Redis + SQL of its own)",
            r["decision_miss_sessions"],
        ),
        row(
            "full proxy, signed-in user (mean)",
            proxy,
            f">= 0.30 ({met(proxy['rps'] / base >= 0.3)}), p99 <= 3x nginx = {3 * ngx_p99:.2f} ms "
            f"({met(proxy['p99_ms'] <= 3 * ngx_p99)})",
        ),
        *(row(f"full proxy, signed-in user, run {i + 1}", r[f"proxy_signed_in_{i}"]) for i in repeats),
        row(
            "full proxy, signed-in user, a new path each request (mean)",
            mean_row([r[f"proxy_varied_{i}"] for i in repeats]),
        ),
        *(
            row(
                f"diagnostic: decision, access log off (`log.level: warning`), run {i + 1}",
                r[f"decision_nolog_{i}"],
            )
            for i in repeats
        ),
        *(
            row(f"diagnostic: full proxy, access log off, run {i + 1}", r[f"proxy_nolog_{i}"])
            for i in repeats
        ),
        row(
            "diagnostic: decision, `serve.public.fast_path: false` (every request an ASGI task) (mean)",
            mean_row([r[f"decision_asgi_{i}"] for i in repeats]),
        ),
        *(row(f"diagnostic: decision, fast path off, run {i + 1}", r[f"decision_asgi_{i}"]) for i in repeats),
        row(
            "diagnostic: full proxy, `serve.public.fast_path: false` (every request an ASGI task) (mean)",
            mean_row([r[f"proxy_asgi_{i}"] for i in repeats]),
        ),
        *(row(f"diagnostic: full proxy, fast path off, run {i + 1}", r[f"proxy_asgi_{i}"]) for i in repeats),
        row("diagnostic: full proxy, `proxy.upstream_client: aiohttp`", r["proxy_aiohttp"]),
    ]
    granian_rows, server_sentence = server_rows(r, args, row, cached, proxy)
    lines += granian_rows
    log_decision = cached["cpu_us"] - mean_row([r[f"decision_nolog_{i}"] for i in repeats])["cpu_us"]
    log_proxy = proxy["cpu_us"] - mean_row([r[f"proxy_nolog_{i}"] for i in repeats])["cpu_us"]
    w1 = mean_row([r[f"workers_1_{i}"] for i in repeats])
    w2 = mean_row([r[f"workers_2_{i}"] for i in repeats])
    dp, dp300 = extra["decision_path"], extra["decision_path_300"]
    asgi_decision = mean_row([r[f"decision_asgi_{i}"] for i in repeats])
    lines += [
        "",
        "Synchronous answers in the HTTP protocol (`serve.public.fast_path`; rows alternated, both"
        f" servers up at the same time): cached decision {cached['cpu_us']:.1f} µs/request as shipped,"
        f" {asgi_decision['cpu_us']:.1f} with every request through ASGI; nginx → static nginx"
        f" {r['ngx']['cpu_us']:.1f}: CPU ratio (nginx µs / ours) {r['ngx']['cpu_us'] / cached['cpu_us']:.2f}"
        f" (goal 0.50: {met(r['ngx']['cpu_us'] / cached['cpu_us'] >= 0.5)}). In process, through uvicorn's"
        f" protocol without a socket (`bench/decision_path.py`): {dp['us']['protocol_fast']:.2f} µs"
        f" with, {dp['us']['protocol_asgi']:.2f} µs without.",
        "",
        "Access log cost (server CPU, log on - log off, rows alternated between two servers up at"
        f" the same time): decision {log_decision:.1f} µs/request, "
        f"proxy {log_proxy:.1f} µs/request (goal < 5: {met(max(log_decision, log_proxy) < 5)}); "
        f"{extra['log_lines']:,} JSON lines were written by the first server.",
        "",
        server_sentence,
        "",
        "In process (`bench/access_log.py`: AccessLog around a trivial app, CPU µs/request, best of 3"
        f" interleaved rounds): log off {extra['access_log_in_process']['off']:.2f}, on with one write per"
        f" line (before) {extra['access_log_in_process']['line_buffered']:.2f}, on through the buffered"
        f" writer (shipped) {extra['access_log_in_process']['buffered']:.2f}: the log costs"
        f" {extra['access_log_in_process']['buffered'] - extra['access_log_in_process']['off']:.2f} µs"
        " (goal < 5: "
        f"{met(extra['access_log_in_process']['buffered'] - extra['access_log_in_process']['off'] < 5)}).",
        "",
        "",
        "In process, the whole public app as `sidecar serve` builds it (`bench/decision_path.py`: the"
        " cached nginx decision called as ASGI, no socket; CPU µs/request, best of 3 interleaved"
        f" rounds): access log on {dp['us']['on']:.2f}, off {dp['us']['off']:.2f} (the log costs"
        f" {dp['us']['log_cost']:.2f} µs, goal < 5: {met(dp['us']['log_cost'] < 5)}); `Access.check`"
        f" alone (rule, session cache, judgement) {dp['us']['check']:.2f} µs with 1 rule,"
        f" {dp300['us']['check']:.2f} µs with 300 rules (299 of other hosts and prefixes in front of the"
        f" matching one). Memory blocks a request leaves behind (tracemalloc): log on"
        f" {dp['on']['allocs_per_request']:.3f} per request (the queued log line until the writer takes"
        f" it), log off {dp['off']['allocs_per_request']:.3f}; the most a request holds at once (response"
        f" and headers included): {dp['on']['peak_bytes_median']:,} bytes (median).",
        "",
        "## `--workers` (decision, cached session, a new X-Original-URI each request; server and wrk"
        " both free to use cores 0 and 1)",
        "",
        f"Both servers up at once, rows alternated ({args.repeat} each, means below). 'busiest"
        " worker' is the share of the 2-worker server's CPU its busier worker used (0.50 = even).",
        "",
        "| workers | req/s | p50 ms | p99 ms | server CPU µs/req | busiest worker | load |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {n} | {x['rps']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} | {x['cpu_us']:.1f} "
            f"| {x.get('busiest_share', 1.0):.2f} | {x['load']:.2f} |"
            for n, x in ((1, w1), (2, w2))
        ),
        "",
        f"2 workers / 1 worker = {w2['rps'] / w1['rps']:.2f}x req/s "
        f"(goal >= 1.8x: {met(w2['rps'] / w1['rps'] >= 1.8)}; "
        "wrk needs a core too, so on this 2-core machine the ceiling is below 2x); CPU per request"
        f" with 2 workers / with 1 = {w2['cpu_us'] / w1['cpu_us']:.2f} (1.00 = no cost of sharing).",
    ]
    c1, n1 = r["decision_c1"], r["ngx_c1"]
    lines += [
        "",
        "## Latency at concurrency 1 (wrk -c1), and the login storm in both directions",
        "",
        "| scenario | req/s | p50 ms | p99 ms | goal | logins done (failed) | load |",
        "|---|---|---|---|---|---|---|",
        f"| nginx → static nginx | {n1['rps']:,.0f} | {n1['p50_ms']:.3f} | {n1['p99_ms']:.3f} | | "
        f"| {n1['load']:.2f} |",
        f"| decision endpoint, cached session | {c1['rps']:,.0f} | {c1['p50_ms']:.3f} | {c1['p99_ms']:.3f} "
        f"| p99 <= 1 ms ({met(c1['p99_ms'] <= 1.0)}) | | {c1['load']:.2f} |",
    ]
    alone = r["flood_alone"]
    lines.append(
        f"| proxy flood (c{args.connections}) alone, {STORM_VARIANTS[0][2]} | {alone['rps']:,.0f} "
        f"| {alone['p50_ms']:.3f} | {alone['p99_ms']:.3f} | | | {alone['load']:.2f} |"
    )
    for tag, _, label in STORM_VARIANTS:
        idle = r[f"decision_c1_{tag}"]
        st, fl = r[f"storm_{tag}"], r[f"flood_{tag}"]
        sl, fll = extra[f"storm_{tag}"], extra[f"flood_{tag}"]
        failure = sl.get("first_failure") or fll.get("first_failure")
        lines += [
            f"| {label}: decision idle | {idle['rps']:,.0f} | {idle['p50_ms']:.3f} "
            f"| {idle['p99_ms']:.3f} | | | {idle['load']:.2f} |",
            f"| {label}: decision during {args.logins} concurrent logins | {st['rps']:,.0f} "
            f"| {st['p50_ms']:.3f} | {st['p99_ms']:.3f} | p99 <= 3x idle = {3 * idle['p99_ms']:.3f} ms "
            f"({met(st['p99_ms'] <= 3 * idle['p99_ms'])}; {st['p99_ms'] / idle['p99_ms']:.1f}x) "
            f"| {sl['ok']} ({sl['failed']}) | {st['load']:.2f} |",
            f"| {label}: proxy flood (c{args.connections}) with 4 login loops | {fl['rps']:,.0f} "
            f"| {fl['p50_ms']:.3f} | {fl['p99_ms']:.3f} | logins progress ({met(fll['ok'] > 0)}); "
            f"flood at {fl['rps'] / alone['rps']:.2f}x its req/s alone | {fll['ok']} ({fll['failed']}) "
            f"| {fl['load']:.2f} |",
        ]
        if failure:
            lines.append(f"| first login failure ({tag}): {failure[:100]} | | | | | | |")
    su, burst = extra["signups"], extra["burst"]
    limit = 1 / extra["argon2_cpu_s"]
    per_core = su["ok"] / extra["signups_cpu_s"] if extra["signups_cpu_s"] else float("nan")
    lines += [
        "",
        "## Sign-ups (argon2id with the default parameters: 64 MiB, t=3, p=2)",
        "",
        f"- argon2 limit: one hash costs {extra['argon2_cpu_s'] * 1000:.0f} ms of CPU (measured in the bench "
        f"process), so one core can do at most {limit:.1f} sign-ups/s.",
        f"- 8 concurrent API registrations for {args.duration} s: {su['ok']} done in {su['seconds']:.1f} s "
        f"= {su['ok'] / su['seconds']:.1f}/s on the server's one core; {per_core:.1f} per CPU-second of the "
        f"server ({per_core / limit:.0%} of the argon2 limit); statuses {su['statuses']}.",
        f"- {args.burst} simultaneous sign-ups: statuses {burst['statuses']} in {burst['seconds']:.1f} s; "
        f"server RSS {extra['burst_rss_before_kib'] / 1024:.0f} MiB before, "
        f"peak {extra['burst_peak_kib'] / 1024:.0f} MiB; "
        f"server {'still running' if extra['burst_alive'] else 'DIED'} afterwards.",
        "",
        "## Scenarios",
        "",
        "- decision: `GET /.auth/authz/nginx` with `X-Original-URI: /private/x` and a valid",
        "  `X-Session-Token` (rule: authenticated), the session made by a real API login. Proxy:",
        "  `GET /private/x` with the same token, forwarded to the static nginx the baseline proxies to.",
        "  The 'new X-Original-URI' and 'new path' rows send `/private/1`, `/private/2`, ... (a wrk Lua",
        "  script): no request repeats, so none is answered from a remembered answer or a kept plan.",
        "- The login storm runs `bench/logins.py` on the load core: API password logins in a loop (one",
        "  argon2id verification each, in the sidecar's hashing pool on the server's core).",
        "- Sign-ups run `bench/signups.py` (Kratos API registration flow, one argon2id hash each).",
        "- Server CPU µs/req: user + system CPU time of the server process and its threads and children",
        "  during the row, over the requests wrk completed; other load moves it far less than req/s.",
    ]
    path = ROOT / "bench" / "RESULTS.md"
    kept = ""
    if path.exists():
        # Sections other scripts own (bench/whoami.py --write) are kept, after this run's.
        old = path.read_text()
        start = old.find("\n## whoami")
        if start >= 0:
            kept = "\n" + old[start + 1 :]
    path.write_text("\n".join(lines) + "\n" + kept)


if __name__ == "__main__":
    sys.exit(main())
