"""The access-path benchmark: every figure as a ratio to nginx as a reverse proxy, same run.

Cores (2-core machine): core 0 = the server under test (nginx proxy or one sidecar worker),
core 1 = wrk + the upstream + Redis. Scenarios run one after the other, so each server has core 0
to itself. The upstream is the smallest ASGI app under uvicorn (bench/upstream.py), as in the
DESIGN §6 calibration where a bare uvicorn app measured 1.02x the nginx proxy; nginx proxying
to a static nginx and a bare uvicorn app on core 0 are reported too, for calibration.
Writes bench/RESULTS.md.

    /work/venv/bin/python bench/run.py [--duration 10] [--connections 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER_CORE, LOAD_CORE = "0", "1"
LOGIN_EMAIL, LOGIN_PASSWORD = "storm@example.com", "Storm-login-bench-4-argon2!"
RULES = "version: 1\nrules:\n  - {id: private, match: {paths: ['/private/**']}, require: authenticated}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


class Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, args: list[str], port: int, core: str, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            ["taskset", "-c", core, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd
        )
        self.procs.append(p)
        wait_port(port)
        return p

    def stop(self, p: subprocess.Popen[bytes]) -> None:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def nginx_conf(root: Path, server: str) -> Path:
    temps = "".join(
        f"{n}_temp_path {root}/{n}; " for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = root / "nginx.conf"
    conf.write_text(
        f"daemon off; worker_processes 1; user root; pid {root}/nginx.pid; error_log {root}/error.log warn;\n"
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


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` and its direct children (nginx's worker), in clock ticks."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total


def wrk(
    url: str, *, connections: int, duration: int, headers: dict[str, str], server: int | None = None
) -> dict[str, float]:
    """wrk's figures; with ``server`` (a PID), also the server's CPU time per request, which a
    busy shared machine disturbs far less than requests per second."""
    before = cpu_ticks(server) if server else 0
    args = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
        return float(m.group(1)) * scale

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    cpu_us = float("nan")
    if server:
        cpu_us = (cpu_ticks(server) - before) / os.sysconf("SC_CLK_TCK") * 1e6 / max(count, 1)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "cpu_us": cpu_us,
    }


async def make_session(dsn: str, redis_url: str, prefix: str) -> str:
    from sidecar.identity.model import Identity, utcnow
    from sidecar.security.tokens import digest, new_session_token
    from sidecar.session.model import Session
    from sidecar.storage.redis.backend import RedisBackend
    from sidecar.storage.sql.database import SqlDatabase

    db = SqlDatabase(dsn)
    await db.migrate()
    identity = await db.identities.create(
        Identity(schema_id="default", traits={"email": "bench@example.com"})
    )
    await db.close()
    token = new_session_token()
    redis = RedisBackend(redis_url, prefix)
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=2))
    await redis.sessions.create(session, digest(token))
    await redis.close()
    return token


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
    import aiohttp
    import uvicorn

    return [
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- CPU: {cpu}, {os.cpu_count()} cores; {mem.split(':')[1].strip()} RAM",
        f"- load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- kernel {platform.release()}; Python {platform.python_version()}; uvicorn {uvicorn.__version__} "
        f"(uvloop, httptools); aiohttp {aiohttp.__version__}",
        f"- {nginx_v}; {wrk_v}",
        f"- pinning: server under test on core {SERVER_CORE}; "
        f"wrk, the upstream and Redis on core {LOAD_CORE}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--logins", type=int, default=20, help="concurrent logins in the storm scenario")
    args = parser.parse_args()
    for tool in ("wrk", "taskset", "redis-server"):
        if not shutil.which(tool):
            print(f"{tool} is required", file=sys.stderr)
            return 1
    state = machine_state()
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="sidecar-bench-"))
    results: dict[str, dict[str, float]] = {}
    try:
        up_port, static_port, ngx_port, redis_port = free_port(), free_port(), free_port(), free_port()
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
            [sys.executable, "-m", "uvicorn", "bench.upstream:app", "--port", str(up_port), *uvicorn_args],
            up_port,
            LOAD_CORE,
            cwd=ROOT,
        )
        start_nginx(
            procs,
            tmp,
            "static",
            f"server {{ listen 127.0.0.1:{static_port}; location / {{ return 200 'ok\\n'; }} }}",
            static_port,
            LOAD_CORE,
        )
        ngx_proc = start_nginx(
            procs,
            tmp,
            "proxy",
            f"upstream up {{ server 127.0.0.1:{up_port}; keepalive 64; }}\n"
            f"upstream st {{ server 127.0.0.1:{static_port}; keepalive 64; }}\n"
            f"server {{ listen 127.0.0.1:{ngx_port}; proxy_http_version 1.1; "
            "proxy_set_header Connection ''; location /static/ { proxy_pass http://st; } "
            "location / { proxy_pass http://up; } }",
            ngx_port,
            SERVER_CORE,
        )
        procs.start(
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            redis_port,
            LOAD_CORE,
        )
        redis_url, prefix = f"redis://127.0.0.1:{redis_port}/0", "bench:"
        dsn = f"sqlite:///{tmp}/bench.db"
        token = asyncio.run(make_session(dsn, redis_url, prefix))
        (tmp / "rules.yaml").write_text(RULES)
        d, c = args.duration, args.connections

        def ngx(key: str) -> None:
            results[key] = wrk(
                f"http://127.0.0.1:{ngx_port}/private/x",
                connections=c,
                duration=d,
                headers={},
                server=ngx_proc.pid,
            )

        ngx("ngx_proxy_start")
        results["ngx_proxy_c1"] = wrk(
            f"http://127.0.0.1:{ngx_port}/private/x",
            connections=1,
            duration=d,
            headers={},
            server=ngx_proc.pid,
        )
        results["ngx_static"] = wrk(
            f"http://127.0.0.1:{ngx_port}/static/x",
            connections=c,
            duration=d,
            headers={},
            server=ngx_proc.pid,
        )
        bare_port = free_port()
        bare = procs.start(
            [sys.executable, "-m", "uvicorn", "bench.upstream:app", "--port", str(bare_port), *uvicorn_args],
            bare_port,
            SERVER_CORE,
            cwd=ROOT,
        )
        results["bare_asgi"] = wrk(
            f"http://127.0.0.1:{bare_port}/", connections=c, duration=d, headers={}, server=bare.pid
        )
        procs.stop(bare)

        def sidecar(extra: list[str], client: str = "http1") -> tuple[subprocess.Popen[bytes], int]:
            port = free_port()
            config = {
                "dsn": dsn,
                "secrets": {"cookie": ["bench-cookie-secret-0123456789"]},
                "serve": {
                    "public": {
                        "host": "127.0.0.1",
                        "port": port,
                        "base_url": f"http://127.0.0.1:{port}/.auth",
                    }
                },
                "log": {"level": "warning"},
                "proxy": {"upstream": f"http://127.0.0.1:{up_port}", "upstream_client": client},
                "rules": [str(tmp / "rules.yaml")],
                "redis": {"url": redis_url, "key_prefix": prefix},
                # The login storm logs one user in again and again: no brute-force limit here.
                "security": {"rate_limit": {"enabled": False}},
            }
            p = procs.start(
                [sys.executable, str(ROOT / "bench" / "serve.py"), json.dumps(config), *extra],
                port,
                SERVER_CORE,
                cwd=ROOT,
            )
            return p, port

        def login_storm(port: int, decision: str, auth: dict[str, str], server: int) -> dict[str, float]:
            storm = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    LOAD_CORE,
                    sys.executable,
                    str(ROOT / "bench" / "logins.py"),
                    f"http://127.0.0.1:{port}/.auth",
                    LOGIN_EMAIL,
                    LOGIN_PASSWORD,
                    "--concurrency",
                    str(args.logins),
                    "--duration",
                    str(d + 2),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.5)  # every login loop is hashing by now
            result = wrk(decision, connections=1, duration=d, headers=auth, server=server)
            out, _ = storm.communicate(timeout=d + 60)
            logins = json.loads(out.decode().strip().splitlines()[-1])
            result["logins_ok"] = float(logins["ok"])
            result["logins_failed"] = float(logins["failed"])
            return result

        auth = {"X-Original-Method": "GET", "X-Original-URI": "/private/x", "X-Session-Token": token}
        signed_in = {"X-Session-Token": token}
        p, port = sidecar(["--login-user", f"{LOGIN_EMAIL}:{LOGIN_PASSWORD}"])
        decision = f"http://127.0.0.1:{port}/.auth/authz/nginx"
        wrk(decision, connections=c, duration=2, headers=auth)  # warm-up
        results["decision_cached"] = wrk(decision, connections=c, duration=d, headers=auth, server=p.pid)
        results["decision_cached_c1"] = wrk(decision, connections=1, duration=d, headers=auth, server=p.pid)
        # Login storm: 20 API password logins at a time (argon2id in the hashing pool, on the
        # server's core) while wrk measures the decision latency at concurrency 1.
        results["decision_storm_c1"] = login_storm(port, decision, auth, p.pid)
        proxied = f"http://127.0.0.1:{port}/private/x"
        wrk(proxied, connections=c, duration=2, headers=signed_in)
        results["proxy_signed_in"] = wrk(proxied, connections=c, duration=d, headers=signed_in, server=p.pid)
        procs.stop(p)

        p, port = sidecar([], client="aiohttp")
        proxied = f"http://127.0.0.1:{port}/private/x"
        wrk(proxied, connections=c, duration=2, headers=signed_in)
        results["proxy_signed_in_aiohttp"] = wrk(
            proxied, connections=c, duration=d, headers=signed_in, server=p.pid
        )
        procs.stop(p)

        p, port = sidecar(["--access-log"])
        proxied = f"http://127.0.0.1:{port}/private/x"
        wrk(proxied, connections=c, duration=2, headers=signed_in)
        results["proxy_signed_in_logged"] = wrk(
            proxied, connections=c, duration=d, headers=signed_in, server=p.pid
        )
        procs.stop(p)

        p, port = sidecar(["--login-user", f"{LOGIN_EMAIL}:{LOGIN_PASSWORD}", "--hash-nice", "10"])
        decision = f"http://127.0.0.1:{port}/.auth/authz/nginx"
        wrk(decision, connections=c, duration=2, headers=auth)
        results["decision_nice_c1"] = wrk(decision, connections=1, duration=d, headers=auth, server=p.pid)
        results["decision_storm_nice_c1"] = login_storm(port, decision, auth, p.pid)
        procs.stop(p)

        p, port = sidecar(["--session-ttl", "0", "--identity-ttl", "60"])
        decision = f"http://127.0.0.1:{port}/.auth/authz/nginx"
        wrk(decision, connections=c, duration=2, headers=auth)
        results["decision_miss"] = wrk(decision, connections=c, duration=d, headers=auth, server=p.pid)
        procs.stop(p)
        ngx("ngx_proxy_end")
        # The baseline is the mean of nginx measured first and last: drift on a shared VM shows
        # up as the gap between the two (both are reported).
        results["ngx_proxy"] = {
            k: (results["ngx_proxy_start"][k] + results["ngx_proxy_end"][k]) / 2
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us")
        } | {"non2xx": results["ngx_proxy_start"]["non2xx"] + results["ngx_proxy_end"]["non2xx"]}
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(state, results, args)
    print((ROOT / "bench" / "RESULTS.md").read_text())
    return 0


TARGETS = {
    "decision_cached": ("decision endpoint, cached session", 0.50),
    "decision_miss": ("decision endpoint, session-cache miss (one Redis GET)", 0.18),
    "proxy_signed_in": ("full proxy, signed-in user (cached session), http1 client", 0.20),
}
OTHERS = {
    "proxy_signed_in_aiohttp": "full proxy, signed-in user, aiohttp client (comparison)",
    "proxy_signed_in_logged": "full proxy, signed-in user, http1, with AccessLog JSON lines + metrics",
}


def write_results(state: list[str], r: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    base = r["ngx_proxy"]["rps"]

    def row(label: str, x: dict[str, float], target: str = "") -> str:
        return (
            f"| {label} | {x['rps']:,.0f} | {x['rps'] / base:.2f} | {target} | {x['p50_ms']:.2f} "
            f"| {x['p99_ms']:.2f} | {x['non2xx']:.0f} | {x['cpu_us']:.1f} |"
        )

    lines = [
        "# Access-path benchmark",
        "",
        "Command: `/work/venv/bin/python bench/run.py "
        f"--duration {args.duration} --connections {args.connections} --logins {args.logins}`",
        "",
        "## Machine state",
        *state,
        "",
        f"## Results (wrk -t1 -c{args.connections} -d{args.duration}s; "
        "ratio = requests/s / nginx proxy, same run)",
        "",
        "| scenario | req/s | ratio to nginx proxy | target | p50 ms | p99 ms | non-2xx "
        "| server CPU us/req |",
        "|---|---|---|---|---|---|---|---|",
        row("nginx reverse proxy (= 1.0; mean of first and last)", r["ngx_proxy"]),
        row("nginx reverse proxy, measured first", r["ngx_proxy_start"]),
        row("nginx reverse proxy, measured last", r["ngx_proxy_end"]),
        row("calibration: nginx proxy to a static nginx upstream", r["ngx_static"]),
        row("calibration: bare ASGI app under uvicorn on core 0", r["bare_asgi"]),
    ]
    for key, (label, target) in TARGETS.items():
        ratio = r[key]["rps"] / base
        lines.append(row(label, r[key], f">= {target:.2f} ({'met' if ratio >= target else 'MISSED'})"))
    for key, label in OTHERS.items():
        lines.append(row(label, r[key]))
    c1, n1 = r["decision_cached_c1"], r["ngx_proxy_c1"]

    def storm_row(label: str, idle: dict[str, float], storm: dict[str, float]) -> str:
        limit = 3 * idle["p99_ms"]
        return (
            f"| {label} ({storm['logins_ok']:.0f} logins done, {storm['logins_failed']:.0f} failed) "
            f"| {storm['rps']:,.0f} | {storm['p50_ms']:.3f} | {storm['p99_ms']:.3f} "
            f"| p99 <= 3x idle = {limit:.3f} ms ({'met' if storm['p99_ms'] <= limit else 'MISSED'}) |"
        )

    nice = r["decision_nice_c1"]
    lines += [
        "",
        "## Latency at concurrency 1 (wrk -c1)",
        "",
        "| scenario | req/s | p50 ms | p99 ms | target |",
        "|---|---|---|---|---|",
        f"| nginx reverse proxy | {n1['rps']:,.0f} | {n1['p50_ms']:.3f} | {n1['p99_ms']:.3f} | |",
        f"| decision endpoint, cached session | {c1['rps']:,.0f} | {c1['p50_ms']:.3f} | {c1['p99_ms']:.3f} "
        f"| p99 <= 1 ms ({'met' if c1['p99_ms'] <= 1.0 else 'MISSED'}) |",
        storm_row(f"same, during {args.logins} concurrent logins", c1, r["decision_storm_c1"]),
        f"| experiment: hashing threads at nice 10, idle | {nice['rps']:,.0f} | {nice['p50_ms']:.3f} "
        f"| {nice['p99_ms']:.3f} | |",
        storm_row(
            f"experiment: nice 10, during {args.logins} concurrent logins", nice, r["decision_storm_nice_c1"]
        ),
        "",
        "Scenarios: the decision endpoint is `/.auth/authz/nginx` with `X-Original-URI: /private/x`",
        "and a valid `X-Session-Token` (rule: authenticated). The cache-miss run sets the session-cache",
        "TTL to 0 so every request reads the session from Redis (the identity stays cached, as in",
        "production where many sessions share identities). The proxy runs stream to the same upstream",
        "app the nginx baseline uses; the upstream client is picked with `proxy.upstream_client`.",
        "The login storm runs `bench/logins.py` on the load core: API password logins (argon2id with",
        "the default parameters, in the sidecar's hashing pool on the server core) in a loop.",
        "The main rows run the gateway without the access-log wrapper (as in earlier runs); the",
        "'with AccessLog' row wraps it as `sidecar serve` does, writing one JSON line per request.",
        "'server CPU us/req' is the CPU time (user + system, from /proc) the server under test spent",
        "during the run divided by the requests wrk completed (nginx: master + worker; the sidecar's",
        "hashing threads included): other load on the shared machine moves it far less than req/s.",
    ]
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
