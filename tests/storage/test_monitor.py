"""The store monitor: one log line when a store goes down (with its reason), one when it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import pytest

from sidecar import errors
from sidecar.storage.monitor import INTERVAL, StoreMonitor, describe
from sidecar.storage.sql.database import SqlDatabase
from tests.conftest import free_port
from tests.ops.serve import base_config, ports, running, serve_argv, write_config
from tests.proxy.harness import binary, spawn


async def test_logs_each_change_of_state_once(caplog: pytest.LogCaptureFixture) -> None:
    state = {"up": True}

    async def check() -> None:
        if not state["up"]:
            try:
                raise ConnectionRefusedError(111, "Connection refused")
            except OSError as exc:
                raise errors.ServiceUnavailable("the session store is unavailable") from exc

    now = [100.0]
    monitor = StoreMonitor({"redis": check}, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, "sidecar.storage"):
        await monitor.check_once()  # up: nothing to say
        state["up"] = False
        for _ in range(5):
            await monitor.check_once()
            now[0] += 2
        state["up"] = True
        await monitor.check_once()
        await monitor.check_once()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "redis unavailable: [Errno 111] Connection refused"),
        ("WARNING", "redis available again after 10 s"),
    ]
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_hanging_store_is_reported_as_such(caplog: pytest.LogCaptureFixture) -> None:
    async def hangs() -> None:
        await asyncio.sleep(10)

    monitor = StoreMonitor({"database": hangs}, timeout=0.05)
    with caplog.at_level(logging.INFO, "sidecar.storage"):
        await monitor.check_once()
    assert caplog.messages == ["database unavailable: no answer within 0.05 s"]


async def test_describes_the_driver_error_not_the_wrapper() -> None:
    database = SqlDatabase(f"postgres://postgres:pw@127.0.0.1:{free_port()}/x")
    try:
        with pytest.raises(errors.ServiceUnavailable) as exc:
            await database.ping()
    finally:
        await database.close()
    assert "Connect call failed" in describe(exc.value) or "refused" in describe(exc.value)
    assert "pw" not in describe(exc.value)


def test_redis_outage_through_sidecar_serve(tmp_path: Path) -> None:
    """A real redis-server stopped and started under ``sidecar serve``: two lines, no tracebacks."""

    tmp = tmp_path
    redis_port = free_port()
    redis_args = [binary("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1"]
    redis_args += ["--save", "", "--appendonly", "no", "--dir", str(tmp)]
    public_port, admin_port = ports()
    config = base_config(
        tmp, public_port, admin_port, redis={"url": f"redis://127.0.0.1:{redis_port}/0", "key_prefix": "mon:"}
    )
    path = write_config(tmp / "sidecar.yaml", config)
    redis = spawn(redis_args, redis_port)
    try:
        with running(
            serve_argv(path, "--migrate"), cwd=tmp, public_port=public_port, admin_port=admin_port
        ) as proc:
            whoami = f"{proc.public_url}/.auth/sessions/whoami"
            cookie = {"Cookie": "ory_kratos_session=ory_st_abc"}
            assert httpx.get(whoami, headers=cookie).status_code == 401
            redis.stop()
            deadline = time.monotonic() + INTERVAL + 1
            while time.monotonic() < deadline:  # traffic during the outage: 503s, not log lines
                assert httpx.get(whoami, headers=cookie).status_code == 503
                time.sleep(0.1)
            assert httpx.get(f"{proc.public_url}/.auth/health/ready").status_code == 503
            redis = spawn(redis_args, redis_port)
            deadline = time.monotonic() + 10
            while httpx.get(f"{proc.public_url}/.auth/health/ready").status_code != 200:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.1)
            time.sleep(INTERVAL + 0.5)
            assert httpx.get(whoami, headers=cookie).status_code == 401
            proc.terminate()
            log = proc.log()
    finally:
        redis.stop()
    assert "Traceback" not in log
    down = [line for line in log.splitlines() if "redis unavailable" in line]
    assert len(down) == 1, log
    assert "Connection refused" in down[0] or "Error 111" in down[0], down
    assert len([line for line in log.splitlines() if "redis available again" in line]) == 1, log
    assert log.count("revocation subscription lost") <= 1
    assert "request failed" not in log  # each 503 is in the access log; no extra line per request
