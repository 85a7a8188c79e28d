"""An admin change to an identity reaches the proxy's session cache at once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import make_config
from tests.live import live_sidecar
from tests.proxy.harness import upstream_server

RULES = "version: 1\nrules:\n  - id: all\n    match: {paths: ['/**']}\n    require: authenticated\n"


@pytest.mark.parametrize("change", ["disable", "delete"])
def test_disabled_or_deleted_identity_stops_at_the_proxy_now(tmp_path: Path, change: str) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with upstream_server() as upstream:
        config = make_config(
            dsn=f"sqlite:///{tmp_path}/db.sqlite",
            proxy={"upstream": f"http://127.0.0.1:{upstream.port}"},
            rules=[str(rules)],
            session={"cache_ttl": "1h"},  # only the invalidation can drop the cached session
        )
        with live_sidecar(config) as live, httpx.Client(timeout=10) as c:
            flow = c.get(live.public_url + "/self-service/registration/api").json()
            done = c.post(
                live.public_url + f"/self-service/registration?flow={flow['id']}",
                json={
                    "method": "password",
                    "password": "a-long-cache-passphrase",
                    "traits": {"email": "c@example.test"},
                },
            ).json()
            token, identity_id = done["session_token"], done["identity"]["id"]
            headers = {"X-Session-Token": token, "Accept": "application/json"}
            assert c.get(live.root_url + "/app", headers=headers).status_code == 200
            if change == "disable":
                resp = c.patch(
                    live.admin_url + f"/admin/identities/{identity_id}",
                    json=[{"op": "replace", "path": "/state", "value": "inactive"}],
                )
                assert resp.status_code == 200
            else:
                assert c.delete(live.admin_url + f"/admin/identities/{identity_id}").status_code == 204
                assert c.get(live.admin_url + f"/admin/identities/{identity_id}/sessions").status_code == 404
            assert c.get(live.root_url + "/app", headers=headers).status_code == 401
            assert c.get(live.public_url + "/sessions/whoami", headers=headers).status_code == 401
