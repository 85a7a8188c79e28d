"""A social sign-in's session names its provider, as Kratos' does (``authentication_methods[]``
``provider``, ``oidc/strategy_login.go`` ``CompletedLoginForWithProvider``): after a sign-up and a
sign-in against a real OpenID Connect provider (panva's ``oidc-provider``), on ``whoami`` and the
admin API of a real ``sidecar serve``; a password sign-in that links the provider, and a password
sign-up in the flow an OIDC attempt left behind, carry no provider.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.oidc_op import MAPPER, oidc_provider, provider_config, to_provider_and_back
from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config

pytestmark = pytest.mark.e2e

PASSWORD = "a long and unique password 42"


@dataclass
class Site:
    proc: Proc
    base: str
    issuer: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("oidc-session-provider")
    public, admin = ports()
    base = f"http://127.0.0.1:{public}/.auth"
    (tmp / "mapper.jsonnet").write_text(MAPPER)
    with oidc_provider([f"{base}/self-service/methods/oidc/callback/op"]) as provider:
        config = base_config(tmp, public, admin)
        config["dev"] = True  # the provider's issuer is plain http on 127.0.0.1
        config["selfservice"]["methods"] = {
            "password": {"enabled": True},
            "oidc": {
                "enabled": True,
                "config": {
                    "providers": [provider_config(provider.issuer, mapper_url="file://./mapper.jsonnet")]
                },
            },
        }
        path = write_config(tmp / "sidecar.yaml", config)
        with running(serve_argv(path, "--migrate"), cwd=tmp, public_port=public, admin_port=admin) as proc:
            yield Site(proc, base, provider.issuer)


def _methods(site: Site, client: httpx.Client) -> list[dict[str, Any]]:
    """The session's ``authentication_methods`` on whoami, after checking the admin API shows the
    same entries."""
    me = client.get(f"{site.base}/sessions/whoami")
    assert me.status_code == 200, me.text
    shown: list[dict[str, Any]] = me.json()["authentication_methods"]
    admin = httpx.get(f"{site.proc.admin_url}/admin/sessions/{me.json()['id']}", timeout=15)
    assert admin.status_code == 200, admin.text
    assert admin.json()["authentication_methods"] == shown
    return shown


def _social_sign_in(site: Site, client: httpx.Client, login: str) -> None:
    callback = to_provider_and_back(client, site.base, site.issuer, login)
    done = client.get(callback)
    assert done.status_code == 303, done.text
    assert "/ui/error" not in done.headers["location"], done.headers["location"]


def test_sign_up_and_sign_in_sessions_name_the_provider(site: Site) -> None:
    with httpx.Client(timeout=15) as browser:
        # carol is new: the login becomes a registration, whose session names the provider.
        _social_sign_in(site, browser, "carol")
        signed_up = _methods(site, browser)
        assert [(m["method"], m["aal"], m.get("provider")) for m in signed_up] == [("oidc", "aal1", "op")]
        assert set(signed_up[0]) == {"method", "aal", "completed_at", "provider"}
        identity = browser.get(f"{site.base}/sessions/whoami").json()["identity"]["id"]

    with httpx.Client(timeout=15) as browser:
        # A new browser: a plain login of the identity that now exists.
        _social_sign_in(site, browser, "carol")
        assert browser.get(f"{site.base}/sessions/whoami").json()["identity"]["id"] == identity
        assert [(m["method"], m.get("provider")) for m in _methods(site, browser)] == [("oidc", "op")]


def test_a_password_sign_in_that_links_the_provider_names_no_provider(site: Site) -> None:
    with httpx.Client(base_url=site.base, timeout=15) as api:
        flow = api.get("/self-service/registration/api").json()
        body = {"method": "password", "password": PASSWORD, "traits": {"email": "dave@example.com"}}
        assert api.post(f"/self-service/registration?flow={flow['id']}", json=body).status_code == 200

    with httpx.Client(timeout=15) as browser:
        # dave's address already has an account: a login flow asks for its password to link the
        # provider; that sign-in is a password one.
        callback = to_provider_and_back(browser, site.base, site.issuer, "dave")
        back = browser.get(callback)
        assert back.status_code == 303 and "/ui/login?flow=" in back.headers["location"], back.headers
        flow_id = re.search(r"flow=([0-9a-f-]+)", back.headers["location"])
        assert flow_id is not None
        flow = browser.get(f"{site.base}/self-service/login/flows", params={"id": flow_id.group(1)}).json()
        assert any(m["id"] == 1010016 for m in flow["ui"]["messages"]), flow["ui"]
        csrf = next(n for n in flow["ui"]["nodes"] if n["attributes"].get("name") == "csrf_token")
        r = browser.post(
            f"{site.base}/self-service/login?flow={flow['id']}",
            data={
                "csrf_token": csrf["attributes"]["value"],
                "method": "password",
                "identifier": "dave@example.com",
                "password": PASSWORD,
            },
        )
        assert r.status_code == 303 and "/ui/error" not in r.headers["location"], r.text
        methods = _methods(site, browser)
        assert [m["method"] for m in methods] == ["password"]
        assert "provider" not in methods[0]

    with httpx.Client(timeout=15) as browser:
        # The provider is linked now: a social sign-in names it again.
        _social_sign_in(site, browser, "dave")
        assert [(m["method"], m.get("provider")) for m in _methods(site, browser)] == [("oidc", "op")]


def test_a_password_sign_up_after_an_oidc_attempt_names_no_provider(site: Site) -> None:
    with httpx.Client(timeout=15) as browser:
        # bob has no email at the provider: the registration flow the OIDC attempt continued in
        # asks for it, and keeps what the attempt verified.
        callback = to_provider_and_back(browser, site.base, site.issuer, "bob")
        back = browser.get(callback)
        assert back.status_code == 303 and "/ui/registration?flow=" in back.headers["location"], back.headers
        flow_id = re.search(r"flow=([0-9a-f-]+)", back.headers["location"])
        assert flow_id is not None
        flow = browser.get(
            f"{site.base}/self-service/registration/flows", params={"id": flow_id.group(1)}
        ).json()
        csrf = next(n for n in flow["ui"]["nodes"] if n["attributes"].get("name") == "csrf_token")
        # bob signs up with a password in that flow instead.
        r = browser.post(
            f"{site.base}/self-service/registration?flow={flow['id']}",
            data={
                "csrf_token": csrf["attributes"]["value"],
                "method": "password",
                "traits.email": "bob@example.com",
                "password": PASSWORD,
            },
        )
        assert r.status_code == 303 and "/ui/error" not in r.headers["location"], r.text
        methods = _methods(site, browser)
        assert [m["method"] for m in methods] == ["password"]
        assert "provider" not in methods[0]
