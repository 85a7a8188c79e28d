"""``serve.admin.api_key``: every admin call but health needs the bearer key."""

from __future__ import annotations

import httpx

from tests.conftest import make_config
from tests.live import live_sidecar

KEY = "admin-key-0123456789abcdef"


def test_admin_key_is_required_except_for_health() -> None:
    with (
        live_sidecar(make_config(serve={"admin": {"api_key": KEY}})) as live,
        httpx.Client(base_url=live.admin_url, timeout=10) as c,
    ):
        for path in ("/admin/identities", "/identities", "/metrics", "/admin/courier/messages"):
            denied = c.get(path)
            assert denied.status_code == 401, path
            assert denied.json()["error"]["code"] == 401
            assert denied.headers["www-authenticate"].startswith("Bearer")
            assert c.get(path, headers={"Authorization": "Bearer wrong-key"}).status_code == 401
            assert c.get(path, headers={"Authorization": f"bearer {KEY}x"}).status_code == 401
        assert c.get("/admin/identities", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert c.get("/admin/identities", headers={"Authorization": f"bearer {KEY}"}).status_code == 200
        for path in ("/health/alive", "/health/ready", "/admin/health/alive"):
            assert c.get(path).status_code == 200, path
