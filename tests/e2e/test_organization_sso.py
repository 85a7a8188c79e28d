"""Organizations end to end through ``sidecar serve`` on both SQL backends: login routing by email
domain to the organization's OpenID Connect provider (panva's ``oidc-provider``), just-in-time
membership, and ``require: {organization: ...}`` with the organization in the identity headers
and the upstream JWT. Raw HTTP, every redirect followed by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.api.public.helpers import node_value
from tests.e2e.oidc_op import oidc_provider, provider_config, through_provider
from tests.ops.serve import base_config, ports, running, serve_argv, write_config
from tests.proxy.harness import upstream_server

pytestmark = pytest.mark.e2e

ORG = "6f1c2a6e-0000-4000-8000-00000000ac3e"
RULES = Path(__file__).resolve().parents[2] / "examples" / "sso" / "rules.yaml"  # docs/SSO.md


@dataclass
class Site:
    base: str  # public API, with the prefix
    root: str  # public listener root (proxied paths)
    admin: str
    issuer: str


@pytest.fixture
def site(tmp_path: Path, dsn: str) -> Iterator[Site]:
    public, admin = ports()
    base = f"http://127.0.0.1:{public}/.auth"
    with (
        oidc_provider([f"{base}/self-service/methods/oidc/callback/acme-sso"]) as provider,
        upstream_server() as app,
    ):
        sso = provider_config(provider.issuer, id="acme-sso", label="ACME SSO", organization_id=ORG)
        config = base_config(
            tmp_path,
            public,
            admin,
            dsn=dsn,
            rules=[str(RULES)],
            proxy={"upstream": app.url, "jwt": {"enabled": True}},
            session={"cache_ttl": "1s"},
            dev=True,  # cookies over http
        )
        config["selfservice"]["methods"] = {"oidc": {"enabled": True, "config": {"providers": [sso]}}}
        path = write_config(tmp_path / "sidecar.yaml", config)
        with running(serve_argv(path, "--migrate"), cwd=tmp_path, public_port=public, admin_port=admin) as p:
            yield Site(base, p.public_url, p.admin_url, provider.issuer)


def _providers(flow: dict[str, Any]) -> list[str]:
    return [n["attributes"]["value"] for n in flow["ui"]["nodes"] if n["attributes"]["name"] == "provider"]


def _submit_browser(client: httpx.Client, site: Site, form: dict[str, str]) -> httpx.Response:
    flow = client.get(
        f"{site.base}/self-service/login/browser", headers={"Accept": "application/json"}
    ).json()
    return client.post(
        f"{site.base}/self-service/login?flow={flow['id']}",
        data={"csrf_token": node_value(flow, "csrf_token"), **form},
    )


def test_domain_routing_jit_membership_and_organization_rules(site: Site) -> None:
    with httpx.Client(base_url=site.admin, timeout=15) as admin:
        made = admin.post(
            "/admin/organizations",
            json={"id": ORG, "label": "ACME", "slug": "acme", "domains": ["example.com"]},
        )
        assert made.status_code == 201, made.text
        password = {"password": {"config": {"password": "a long and unique password 42"}}}
        for email in ("dave@example.com", "bob@other.test"):
            body = {"schema_id": "default", "traits": {"email": email}, "credentials": password}
            assert admin.post("/admin/identities", json=body).status_code == 201

    with httpx.Client(timeout=15) as client:
        # The general form does not offer the organization's provider; a flow for it offers only that.
        general = client.get(f"{site.base}/self-service/login/api").json()
        assert "acme-sso" not in _providers(general)
        org_flow = client.get(f"{site.base}/self-service/login/api", params={"organization": ORG}).json()
        assert _providers(org_flow) == ["acme-sso"] and org_flow["organization_id"] == ORG
        assert [n["group"] for n in org_flow["ui"]["nodes"]] == ["oidc"]

        # An address of the domain leaves for the provider before any password is looked at, and the
        # answer is the same whether or not the account exists.
        answers = []
        for who in ("dave@example.com", "nobody@example.com", "Nobody@EXAMPLE.com"):
            r = _submit_browser(client, site, {"method": "password", "identifier": who, "password": "wrong"})
            assert r.status_code == 303, r.text
            url = urlsplit(r.headers["location"])
            query = parse_qs(url.query)
            assert f"{url.scheme}://{url.netloc}" == site.issuer, client.get(r.headers["location"]).text
            assert query["login_hint"] == [who]
            answers.append(
                (url.path, sorted(k for k in query if k not in ("state", "nonce", "code_challenge")))
            )
        assert answers[0] == answers[1] == answers[2]
        client.cookies.clear()
        # API flows: 422, to a browser login for the organization.
        for who in ("dave@example.com", "nobody@example.com"):
            flow = client.get(f"{site.base}/self-service/login/api").json()
            r = client.post(
                f"{site.base}/self-service/login?flow={flow['id']}",
                json={"method": "password", "identifier": who, "password": "x"},
            )
            assert r.status_code == 422, r.text
            assert r.json()["error"]["id"] == "browser_location_change_required"
            assert (
                r.json()["redirect_browser_to"]
                == f"{site.base}/self-service/login/browser?organization={ORG}"
            )
        # Identifier first, another domain: the flow again with the identifier, for the second step.
        flow = client.get(f"{site.base}/self-service/login/api").json()
        r = client.post(
            f"{site.base}/self-service/login?flow={flow['id']}",
            json={"method": "identifier_first", "identifier": "bob@other.test"},
        )
        assert r.status_code == 400
        values = {n["attributes"]["name"]: n["attributes"].get("value") for n in r.json()["ui"]["nodes"]}
        assert values["identifier"] == "bob@other.test" and not r.json()["ui"].get("messages")
        # Outside the domain the password still signs in.
        r = client.post(
            f"{site.base}/self-service/login?flow={flow['id']}",
            json={
                "method": "password",
                "identifier": "bob@other.test",
                "password": "a long and unique password 42",
            },
        )
        assert r.status_code == 200, r.text
        bob = {"X-Session-Token": r.json()["session_token"], "Accept": "application/json"}

    with httpx.Client(timeout=15) as browser:
        leave = _submit_browser(
            browser, site, {"method": "identifier_first", "identifier": "alice@example.com"}
        )
        assert leave.status_code == 303
        callback = through_provider(
            browser, leave.headers["location"], "alice", back=lambda u: u.startswith(site.base)
        )
        done = browser.get(callback)
        assert done.status_code == 303, done.text
        me = browser.get(f"{site.base}/sessions/whoami").json()
        assert me["identity"]["traits"]["email"] == "alice@example.com"
        assert me["identity"]["organization_id"] == ORG  # just in time, in the organization

        spoof = {"X-User-Organization": "00000000-0000-4000-8000-000000000000", "Accept": "application/json"}
        seen = browser.get(f"{site.root}/acme/reports", headers=spoof)
        assert seen.status_code == 200, seen.text
        headers = dict((k.lower(), v) for k, v in seen.json()["headers"])
        assert headers["x-user-organization"] == ORG
        assert [v for k, v in seen.json()["headers"] if k.lower() == "x-user-organization"] == [ORG]
        claims = json.loads(_b64(headers["authorization"].removeprefix("Bearer ").split(".")[1]))
        assert claims["organization_id"] == ORG and claims["sub"] == me["identity"]["id"]

    with httpx.Client(timeout=15) as other:
        assert other.get(f"{site.root}/acme/reports", headers=bob).status_code == 403
        seen = other.get(f"{site.root}/elsewhere", headers=bob)
        assert seen.status_code == 200 and "x-user-organization" not in {
            k.lower() for k, _ in seen.json()["headers"]
        }


def _b64(segment: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
