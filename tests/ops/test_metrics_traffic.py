"""Decision, session-cache, upstream and flow metrics move with real traffic through ``sidecar serve``."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.ops.serve import migrate, ports, proxied_config, running, serve_argv, write_config
from tests.ops.test_metrics import value
from tests.proxy.harness import upstream_server


def test_decisions_cache_upstream_and_flows_are_counted(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    with upstream_server() as upstream:
        cfg = proxied_config(tmp_path, public_port, admin_port, upstream.port)
        path = write_config(tmp_path / "cfg.yaml", cfg)
        migrate(path, tmp_path)
        with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
            with httpx.Client(base_url=proc.public_url, timeout=10) as c:
                flow = c.get("/.auth/self-service/registration/api").json()
                bad = c.post(
                    f"/.auth/self-service/registration?flow={flow['id']}",
                    json={"method": "password", "password": "short", "traits": {"email": "m@example.test"}},
                )
                assert bad.status_code == 400
                done = c.post(
                    f"/.auth/self-service/registration?flow={flow['id']}",
                    json={
                        "method": "password",
                        "password": "a-long-metrics-passphrase",
                        "traits": {"email": "m@example.test"},
                    },
                ).json()
                token = done["session_token"]
                for _ in range(3):
                    assert c.get("/public/x").status_code == 200
                for _ in range(4):
                    assert c.get("/members/x", headers={"X-Session-Token": token}).status_code == 200
                assert c.get("/members/x", headers={"Accept": "application/json"}).status_code == 401
            text = httpx.get(f"{proc.admin_url}/metrics", timeout=5).text
            log = proc.wait_log('"rule":"members","decision":"allow","identity_id":"')
    assert value(text, "sidecar_decisions_total", rule="open", decision="allow") == 3
    assert value(text, "sidecar_decisions_total", rule="members", decision="allow") == 4
    assert value(text, "sidecar_decisions_total", rule="members", decision="login") == 1
    assert value(text, "sidecar_decision_seconds_count") == 8
    # The first look-up of the token misses the in-process cache, the next three hit it.
    assert value(text, "sidecar_session_cache_total", result="miss") >= 1
    assert value(text, "sidecar_session_cache_total", result="hit") >= 2
    assert value(text, "sidecar_upstream_seconds_count") == 7
    assert (
        value(text, "sidecar_flow_submissions_total", flow="registration", method="password", result="shown")
        == 1
    )
    assert (
        value(
            text, "sidecar_flow_submissions_total", flow="registration", method="password", result="success"
        )
        == 1
    )
    # The access log names the rule, the decision and the identity of proxied requests.
    assert '"rule":"members","decision":"allow","identity_id":"' in log
