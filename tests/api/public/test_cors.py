"""``serve.public.cors``: an SPA on another origin may call the public API with credentials."""

from __future__ import annotations

import httpx

from tests.conftest import make_config
from tests.live import live_sidecar

SPA = "http://spa.example.test"


def test_cors_allows_configured_origin_only() -> None:
    config = make_config(serve={"public": {"cors": {"enabled": True, "allowed_origins": [SPA]}}})
    with live_sidecar(config) as live, httpx.Client(timeout=10) as c:
        pre = c.options(
            live.public_url + "/sessions/whoami",
            headers={
                "Origin": SPA,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "X-Session-Token",
            },
        )
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == SPA
        assert pre.headers["access-control-allow-credentials"] == "true"
        assert "x-session-token" in pre.headers["access-control-allow-headers"].lower()
        simple = c.get(live.public_url + "/health/alive", headers={"Origin": SPA})
        assert simple.headers["access-control-allow-origin"] == SPA
        other = c.get(live.public_url + "/health/alive", headers={"Origin": "http://evil.example.test"})
        assert "access-control-allow-origin" not in other.headers


def test_cors_is_off_by_default() -> None:
    with live_sidecar(make_config()) as live:
        resp = httpx.get(live.public_url + "/health/alive", headers={"Origin": SPA}, timeout=10)
        assert "access-control-allow-origin" not in resp.headers
