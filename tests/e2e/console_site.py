"""What the console's browser tests share (test_browser_console*.py): the rules they explain, a
``sidecar serve`` config with the console's key and a courier that cannot deliver (the courier
screen then has an abandoned mail and its error to show), and an identity signed in over the API
(a session on its page)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port
from tests.ops.serve import base_config

RULES = """\
version: 1
rules:
  - id: public-home
    match: { methods: [GET], paths: [/] }
    require: public
  - id: admin-area
    match: { paths: ["/admin/**"] }
    require: { level: authenticated, roles: [admin] }
  - id: app
    match: { paths: ["/**"] }
    require: authenticated
"""


def console_config(tmp: Path, public_port: int, admin_port: int, key: str, **extra: Any) -> dict[str, Any]:
    """``base_config`` with RULES, the admin key, recovery by code and an undeliverable courier."""
    (tmp / "rules.yaml").write_text(RULES)
    config = base_config(
        tmp,
        public_port,
        admin_port,
        rules=[str(tmp / "rules.yaml")],
        log={"format": "json", "level": "warning"},  # audit lines are written whatever the level
        # Nothing listens there: mail fails, so the courier view has a last error to show.
        courier={
            "smtp": {"connection_uri": f"smtp://127.0.0.1:{free_port()}/?disable_starttls=true"},
            "message_retries": 0,
            "worker_interval": "100ms",
        },
        selfservice={
            "default_browser_return_url": f"http://127.0.0.1:{public_port}/",
            "flows": {"recovery": {"enabled": True, "use": "code"}},
        },
        **extra,
    )
    config["serve"]["admin"]["api_key"] = key
    return config


def identity_with_session(
    admin: httpx.Client, public_url: str, traits: dict[str, Any], password: str, user_agent: str
) -> tuple[str, str]:
    """A new identity (admin API) signed in by password over the API: (its id, the session token)."""
    body = {
        "schema_id": "default",
        "traits": traits,
        "credentials": {"password": {"config": {"password": password}}},
    }
    created = admin.post("/admin/identities", json=body)
    assert created.status_code == 201, created.text
    flow = httpx.get(f"{public_url}/.auth/self-service/login/api", timeout=30).json()
    login = httpx.post(
        f"{public_url}/.auth/self-service/login",
        params={"flow": flow["id"]},
        json={"method": "password", "identifier": traits["email"], "password": password},
        headers={"User-Agent": user_agent},
        timeout=30,
    )
    assert login.status_code == 200, login.text
    return created.json()["id"], login.json()["session_token"]


def send_recovery_code(public_url: str, email: str) -> None:
    """Ask for a recovery code for ``email`` (an API flow): a mail the courier cannot deliver."""
    flow = httpx.get(f"{public_url}/.auth/self-service/recovery/api", timeout=30).json()
    sent = httpx.post(
        f"{public_url}/.auth/self-service/recovery",
        params={"flow": flow["id"]},
        json={"method": "code", "email": email},
        timeout=30,
    )
    assert sent.status_code == 200, sent.text
