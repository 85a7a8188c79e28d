"""Settings continue after a refresh login, through ``sidecar serve`` (issue 16, section 4).

Kratos v25.4.0: ``selfservice/flow/settings/error.go`` (``reauthenticate``: the refresh login's
``return_to`` is the settings submit URL) and ``strategy_helper.go`` (``PrepareUpdate``: the paused
change comes back from the continuity container and is applied).
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.ops.serve import base_config, ports, running, serve_argv, write_config

OLD_PASSWORD = "an-old-continuity-passphrase"
NEW_PASSWORD = "a-new-continuity-passphrase"


def _flow(c: httpx.Client, kind: str) -> dict[str, Any]:
    r = c.get(f"/.auth/self-service/{kind}/browser")
    assert r.status_code == 303, r.text
    flow_id = parse_qs(urlsplit(r.headers["location"]).query)["flow"][0]
    flow: dict[str, Any] = c.get(f"/.auth/self-service/{kind}/flows?id={flow_id}").json()
    return flow


def _csrf(flow: dict[str, Any]) -> str:
    for n in flow["ui"]["nodes"]:
        if n["attributes"]["name"] == "csrf_token":
            return str(n["attributes"]["value"])
    raise AssertionError("the flow has no csrf_token node")


def _age_sessions(db: Path, hours: int) -> None:
    """Make every session's sign-in ``hours`` old, as time would (the session's JSON record)."""
    when = (datetime.now(UTC) - timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
    with sqlite3.connect(db) as conn:
        for sid, data in conn.execute("SELECT id, data FROM sessions").fetchall():
            record = json.loads(data)
            record["authenticated_at"] = when
            conn.execute("UPDATE sessions SET data = ? WHERE id = ?", (json.dumps(record), sid))


def test_password_change_resumes_after_the_refresh_login(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    cfg = base_config(tmp_path, public_port, admin_port)
    cfg["session"] = {"cache_ttl": "1ms"}  # the test ages sessions in the database itself
    path = write_config(tmp_path / "cfg.yaml", cfg)
    email = "continuity@example.test"
    with (
        running(
            serve_argv(path, "--dev"), cwd=tmp_path, public_port=public_port, admin_port=admin_port
        ) as proc,
        httpx.Client(base_url=proc.public_url, timeout=15) as c,
    ):
        reg = _flow(c, "registration")
        r = c.post(
            f"/.auth/self-service/registration?flow={reg['id']}",
            data={
                "csrf_token": _csrf(reg),
                "method": "password",
                "traits.email": email,
                "password": OLD_PASSWORD,
            },
        )
        assert r.status_code == 303, r.text
        _age_sessions(tmp_path / "sidecar.db", hours=2)

        settings = _flow(c, "settings")
        r = c.post(
            f"/.auth/self-service/settings?flow={settings['id']}",
            data={"csrf_token": _csrf(settings), "method": "password", "password": NEW_PASSWORD},
        )
        assert r.status_code == 303
        login_url = r.headers["location"]
        resume = parse_qs(urlsplit(login_url).query)["return_to"][0]
        assert resume == f"{proc.public_url}/.auth/self-service/settings?flow={settings['id']}"

        # The refresh login (same browser), then back to the submit URL with nothing submitted.
        r = c.get(login_url.removeprefix(proc.public_url))
        login_id = parse_qs(urlsplit(r.headers["location"]).query)["flow"][0]
        login = c.get(f"/.auth/self-service/login/flows?id={login_id}").json()
        assert login["refresh"] is True
        r = c.post(
            f"/.auth/self-service/login?flow={login_id}",
            data={
                "csrf_token": _csrf(login),
                "method": "password",
                "identifier": email,
                "password": OLD_PASSWORD,
            },
        )
        assert r.status_code == 303 and r.headers["location"] == resume
        r = c.get(resume.removeprefix(proc.public_url))
        assert r.status_code == 303, r.text
        shown = c.get(f"/.auth/self-service/settings/flows?id={settings['id']}").json()
        assert shown["state"] == "success"
        # Resumed once: landing again changes nothing and asks for nothing.
        again = c.get(resume.removeprefix(proc.public_url))
        assert again.status_code == 303

        # The new password is the one that signs in now.
        with httpx.Client(base_url=proc.public_url, timeout=15) as other:
            api = other.get("/.auth/self-service/login/api").json()
            bad = other.post(
                f"/.auth/self-service/login?flow={api['id']}",
                json={"method": "password", "identifier": email, "password": OLD_PASSWORD},
            )
            assert bad.status_code == 400
            good = other.post(
                f"/.auth/self-service/login?flow={api['id']}",
                json={"method": "password", "identifier": email, "password": NEW_PASSWORD},
            )
            assert good.status_code == 200, good.text
