"""``hashers.pool: process`` under ``sidecar serve``: the hashing processes run at the configured
priority, and none outlives the server, whether it stops cleanly or is killed (checked by PID)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.ops.serve import (
    base_config,
    children_with,
    migrate,
    ports,
    running,
    serve_argv,
    still_running,
    write_config,
)


def _wait_until_stopped(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if still_running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _sign_up(base: str, n: int) -> None:
    for i in range(n):
        # A new connection each time, so that with two workers both are likely to take some.
        with httpx.Client(base_url=base, timeout=60) as client:
            flow = client.get("/self-service/registration/api").json()["id"]
            answer = client.post(
                f"/self-service/registration?flow={flow}",
                json={
                    "method": "password",
                    "traits": {"email": f"pool-{os.getpid()}-{time.monotonic_ns()}-{i}@example.test"},
                    "password": "a-long-pool-passphrase-77",
                },
            )
            assert answer.status_code == 200, answer.text


@pytest.mark.parametrize(
    ("workers", "priority", "stop", "policy", "nice"),
    [
        pytest.param(1, "idle", signal.SIGTERM, os.SCHED_IDLE, 0, id="1-worker-idle-sigterm"),
        pytest.param(2, "low", signal.SIGTERM, os.SCHED_OTHER, 10, id="2-workers-low-sigterm"),
        pytest.param(1, "idle", signal.SIGKILL, os.SCHED_IDLE, 0, id="1-worker-idle-sigkill"),
    ],
)
def test_hashing_processes_follow_the_config_and_never_outlive_the_server(
    tmp_path: Path, workers: int, priority: str, stop: signal.Signals, policy: int, nice: int
) -> None:
    public_port, admin_port = ports()
    config = base_config(tmp_path, public_port, admin_port)
    config["hashers"] = {**config["hashers"], "pool": "process", "priority": priority, "max_concurrent": 1}
    path = write_config(tmp_path / "sidecar.yaml", config)
    migrate(path, tmp_path)
    argv = serve_argv(path, "--workers", str(workers))
    with running(argv, cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
        _sign_up(f"{proc.public_url}/.auth", 4)
        hashing = children_with(proc.process.pid, b"sidecar.hashing.worker")
        assert 1 <= len(hashing) <= workers  # max_concurrent: 1 per worker
        for pid in hashing:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            assert (int(fields[38]), int(fields[16])) == (policy, nice)  # stat fields 41 and 19
            assert os.sched_getscheduler(pid) == policy
        if stop == signal.SIGKILL:
            # No clean-up code runs: each process sees end of file on its socket and exits.
            os.kill(proc.process.pid, signal.SIGKILL)
            proc.process.wait(30)
        else:
            assert proc.terminate() == 0
    assert _wait_until_stopped(hashing) == []
