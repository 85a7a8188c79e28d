"""The Jsonnet sandbox pool under ``sidecar serve --workers 2``: each server process starts its own
workers on first use, and none outlives the server after SIGTERM (checked by PID)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx

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
from tests.receiver import Answer, Received, http_receiver


def _answer(request: Received) -> Answer:
    return Answer(204)


def test_sandbox_workers_never_outlive_the_server(tmp_path: Path) -> None:
    body = "function(ctx) { flow: ctx.flow.id }"
    with http_receiver(_answer) as receiver:
        public_port, admin_port = ports()
        config = base_config(tmp_path, public_port, admin_port)
        config["selfservice"]["flows"] = {
            "registration": {
                "before": {
                    "hooks": [
                        {
                            "hook": "web_hook",
                            "config": {
                                "url": receiver.url + "/before",
                                "method": "POST",
                                "body": "base64://" + base64.b64encode(body.encode()).decode(),
                            },
                        }
                    ]
                }
            }
        }
        path = write_config(tmp_path / "sidecar.yaml", config)
        migrate(path, tmp_path)
        with running(
            serve_argv(path, "--workers", "2"), cwd=tmp_path, public_port=public_port, admin_port=admin_port
        ) as proc:
            for _ in range(6):
                # A new connection each time, so that both server processes are likely to take some.
                with httpx.Client(base_url=f"{proc.public_url}/.auth", timeout=60) as client:
                    answer = client.get("/self-service/registration/api")
                    assert answer.status_code == 200, answer.text
            assert len(receiver.wait_for(6, timeout=60)) >= 6
            sandboxes = children_with(proc.process.pid, b"import _gojsonnet")
            assert 1 <= len(sandboxes) <= 2 * 4
            assert proc.terminate() == 0
        deadline = time.monotonic() + 60
        while (alive := [p for p in sandboxes if still_running(p)]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive == []
