"""SCIM deprovisioning reaches the proxy at once, through ``sidecar serve`` on both SQL backends:
remove a user from the "admin" group and ``/admin/**`` refuses them on the next request; set
``active: false`` and every route does."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.ops.serve import base_config, ports, running, serve_argv, write_config
from tests.proxy.harness import upstream_server

pytestmark = pytest.mark.e2e

RULES = """
version: 1
rules:
  - {id: admin, match: {paths: ["/admin/**"]}, require: {roles: [admin]}}
  - {id: app, match: {paths: ["/**"]}, require: authenticated}
"""
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def test_removed_from_admin_then_deprovisioned(tmp_path: Path, dsn: str) -> None:
    public, admin_port = ports()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    with upstream_server() as app:
        config = base_config(
            tmp_path, public, admin_port, dsn=dsn, rules=[str(rules)], proxy={"upstream": app.url}
        )
        config["session"] = {"cache_ttl": "1h"}  # only the revocation can drop a cached session
        path = write_config(tmp_path / "sidecar.yaml", config)
        argv = serve_argv(path, "--migrate")
        with (
            running(argv, cwd=tmp_path, public_port=public, admin_port=admin_port) as p,
            httpx.Client(timeout=15) as c,
        ):
            org = c.post(f"{p.admin_url}/admin/organizations", json={"label": "ACME", "slug": "acme"}).json()
            token = c.post(f"{p.admin_url}/admin/organizations/{org['id']}/scim/token").json()
            scim = {"Authorization": f"Bearer {token['token']}"}
            base = token["base_url"]
            user = c.post(
                f"{base}/Users",
                headers=scim,
                json={"userName": "ada@acmecorp.com", "password": "a long provisioned password 7"},
            ).json()
            group = c.post(
                f"{base}/Groups",
                headers=scim,
                json={"displayName": "admin", "members": [{"value": user["id"]}]},
            ).json()

            flow = c.get(f"{p.public_url}/.auth/self-service/login/api").json()
            login = c.post(
                f"{p.public_url}/.auth/self-service/login?flow={flow['id']}",
                json={
                    "method": "password",
                    "identifier": "ada@acmecorp.com",
                    "password": "a long provisioned password 7",
                },
            )
            assert login.status_code == 200, login.text
            me = {"X-Session-Token": login.json()["session_token"], "Accept": "application/json"}
            assert c.get(f"{p.public_url}/admin/panel", headers=me).status_code == 200

            out = {
                "schemas": [PATCH],
                "Operations": [{"op": "remove", "path": f'members[value eq "{user["id"]}"]'}],
            }
            assert c.patch(f"{base}/Groups/{group['id']}", headers=scim, json=out).status_code in (200, 204)
            assert c.get(f"{p.public_url}/admin/panel", headers=me).status_code == 403
            assert c.get(f"{p.public_url}/reports", headers=me).status_code == 200

            off = {"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]}
            assert c.patch(f"{base}/Users/{user['id']}", headers=scim, json=off).status_code in (200, 204)
            assert c.get(f"{p.public_url}/reports", headers=me).status_code == 401
            sessions = c.get(f"{p.admin_url}/admin/identities/{user['id']}/sessions").json()
            assert sessions and not any(s["active"] for s in sessions)
