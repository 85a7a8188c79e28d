"""Helpers for second-factor tests: real TOTP codes from ``oathtool`` and settings-flow shortcuts."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import httpx

OATHTOOL = "/usr/bin/oathtool"
MFA_METHODS = {
    "totp": {"enabled": True, "config": {"issuer": "Sidecar Test"}},
    "lookup_secret": {"enabled": True},
}
ALLOWED = ["http://127.0.0.1:4433/app", "https://app.example.test/"]


def mfa_selfservice(**flows: Any) -> dict[str, Any]:
    return {"methods": MFA_METHODS, "allowed_return_urls": ALLOWED, "flows": flows}


def oathtool(secret: str, at: float | None = None) -> str:
    """The RFC 6238 code of ``secret`` at ``at`` (epoch seconds; now when None), by Debian's oathtool."""
    args = [OATHTOOL, "--totp", "-b", secret]
    if at is not None:
        args += ["--now", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=10)
    return out.stdout.strip()


def fresh_step(margin: float = 4.0) -> float:
    """Wait until at least ``margin`` seconds remain in the current 30 s step; returns now."""
    left = 30 - time.time() % 30
    if left < margin:
        time.sleep(left + 0.2)
    return time.time()


def node(flow: dict[str, Any], name: str) -> dict[str, Any]:
    for n in flow["ui"]["nodes"]:
        attrs = n["attributes"]
        if attrs.get("name") == name or attrs.get("id") == name:
            return dict(n)
    raise KeyError(name)


def has_node(flow: dict[str, Any], name: str) -> bool:
    try:
        node(flow, name)
    except KeyError:
        return False
    return True


def totp_secret(flow: dict[str, Any]) -> str:
    return str(node(flow, "totp_secret_key")["attributes"]["text"]["context"]["secret"])


def lookup_codes(flow: dict[str, Any]) -> list[str]:
    secrets = node(flow, "lookup_secret_codes")["attributes"]["text"]["context"]["secrets"]
    return [str(s["context"]["secret"]) for s in secrets]


def tok(token: str) -> dict[str, str]:
    return {"X-Session-Token": token}


async def settings_api_flow(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    r = await client.get("/.auth/self-service/settings/api", headers=tok(token))
    assert r.status_code == 200, r.text
    flow: dict[str, Any] = r.json()
    return flow


async def submit_settings(
    client: httpx.AsyncClient, flow_id: str, token: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(f"/.auth/self-service/settings?flow={flow_id}", json=body, headers=tok(token))


async def aal2_login_flow(client: httpx.AsyncClient, token: str) -> dict[str, Any]:
    r = await client.get("/.auth/self-service/login/api?aal=aal2", headers=tok(token))
    assert r.status_code == 200, r.text
    flow: dict[str, Any] = r.json()
    return flow


async def submit_login(
    client: httpx.AsyncClient, flow_id: str, token: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(f"/.auth/self-service/login?flow={flow_id}", json=body, headers=tok(token))


async def enrol_totp(client: httpx.AsyncClient, token: str) -> str:
    """Link an authenticator app to the token's identity; returns the base32 secret."""
    flow = await settings_api_flow(client, token)
    secret = totp_secret(flow)
    fresh_step()
    r = await submit_settings(client, flow["id"], token, {"method": "totp", "totp_code": oathtool(secret)})
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "success"
    return secret


async def enrol_codes(client: httpx.AsyncClient, token: str) -> list[str]:
    flow = await settings_api_flow(client, token)
    r = await submit_settings(
        client, flow["id"], token, {"method": "lookup_secret", "lookup_secret_regenerate": True}
    )
    assert r.status_code == 200, r.text
    codes = lookup_codes(r.json())
    r = await submit_settings(
        client, flow["id"], token, {"method": "lookup_secret", "lookup_secret_confirm": True}
    )
    assert r.status_code == 200, r.text
    return codes
