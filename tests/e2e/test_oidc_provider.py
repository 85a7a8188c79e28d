"""Social sign-in against a real OpenID Connect provider (``tests/e2e/oidc_op.py``: panva's
``oidc-provider`` with a test client and a few accounts).

In Chromium through the provider's own login page (screenshots in ``tests/artifacts/oidc-*.png``),
and over raw HTTP with every redirect followed by hand.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import free_port
from tests.e2e.conftest import Browser, serve_public_app, site_config
from tests.e2e.oidc_op import (
    CLIENT_ID,
    MAPPER,
    OidcProvider,
    oidc_provider,
    provider_config,
    to_provider_and_back,
)

pytestmark = pytest.mark.e2e


@dataclass
class Site:
    base: str
    provider: OidcProvider


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/.auth"
    callback = f"{base}/self-service/methods/oidc/callback/op"
    mapper = tmp_path / "mapper.jsonnet"
    mapper.write_text(MAPPER)
    with oidc_provider([callback]) as provider:
        config = site_config(
            tmp_path,
            port,
            secrets={"cipher": ["0123456789abcdef0123456789abcdef"]},
            selfservice={
                "methods": {
                    "oidc": {
                        "enabled": True,
                        "config": {
                            "providers": [
                                provider_config(provider.issuer, mapper_url=f"file://{mapper}"),
                                {
                                    "id": "gone",
                                    "provider": "generic",
                                    "label": "Unreachable",
                                    "client_id": CLIENT_ID,
                                    "issuer_url": f"http://127.0.0.1:{free_port()}",
                                },
                            ]
                        },
                    }
                },
            },
        )

        with serve_public_app(config):
            yield Site(base, provider)


def _whoami(browser: Browser, base: str) -> dict[str, Any]:
    r = browser.context.request.get(f"{base}/sessions/whoami")
    assert r.status == 200, r.text()
    body: dict[str, Any] = r.json()
    return body


def _ours(browser: Browser, site: Site) -> list[str]:
    """Console problems on the sidecar's pages (the provider's dev page loads Google fonts)."""
    origin = site.base.removesuffix("/.auth")
    return [p for p in browser.problems if origin in p]


def _provider_login(browser: Browser, issuer: str, login: str, screenshot: str | None = None) -> None:
    page = browser.page
    page.wait_for_url(re.compile(re.escape(issuer) + r"/interaction/"))
    expect(page.locator("input[name=login]")).to_be_visible()
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill("any password will do")
    if screenshot:
        browser.screenshot(screenshot)
    page.get_by_role("button", name="Sign-in").click()


def test_browser_sign_up_sign_out_sign_in(browser: Browser, site: Site) -> None:
    base, page = site.base, browser.page
    page.goto(f"{base}/ui/login")
    button = page.get_by_role("button", name="Sign in with Test OP")
    expect(button).to_be_visible()
    browser.screenshot("oidc-login")
    button.click()
    _provider_login(browser, site.provider.issuer, "alice", "oidc-provider-login")
    page.wait_for_url(f"{base}/ui/welcome")
    browser.screenshot("oidc-welcome")
    me = _whoami(browser, base)
    assert me["identity"]["traits"] == {"email": "alice@example.com", "name": {"first": "Alice"}}
    assert me["identity"]["verifiable_addresses"][0]["verified"] is True
    assert [m["method"] for m in me["authentication_methods"]] == ["oidc"]

    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    page.get_by_role("button", name="Sign in with Test OP").click()
    # The provider remembers alice: straight back, signed in to the same identity.
    page.wait_for_url(f"{base}/ui/welcome")
    assert _whoami(browser, base)["identity"]["id"] == me["identity"]["id"]
    assert _ours(browser, site) == []


def test_browser_sign_up_completes_missing_traits(browser: Browser, site: Site) -> None:
    base, page = site.base, browser.page
    page.goto(f"{base}/ui/registration")
    page.get_by_role("button", name="Sign up with Test OP").click()
    _provider_login(browser, site.provider.issuer, "bob")
    page.wait_for_url(re.compile(r"/\.auth/ui/registration\?flow="))
    email = page.locator("input[name='traits.email']")
    expect(email).to_be_visible()
    expect(page.locator("input[name='traits.name.first']")).to_have_value("Bob")
    browser.screenshot("oidc-registration-complete-traits")
    email.fill("bob@example.com")
    page.get_by_role("button", name="Sign up with Test OP").click()
    page.wait_for_url(f"{base}/ui/welcome")
    me = _whoami(browser, base)
    assert me["identity"]["traits"]["email"] == "bob@example.com"
    assert me["identity"]["verifiable_addresses"][0]["verified"] is False
    assert _ours(browser, site) == []


def test_browser_provider_down_shows_an_error_page(browser: Browser, site: Site) -> None:
    page = browser.page
    page.goto(f"{site.base}/ui/login")
    page.get_by_role("button", name="Sign in with Unreachable").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/error\?id="))
    expect(page.get_by_role("alert")).to_contain_text("could not be reached")
    browser.screenshot("oidc-provider-down")


# --- raw HTTP, every redirect by hand ------------------------------------------------------------------


def test_raw_http_sign_in_and_replays(site: Site) -> None:
    with httpx.Client(timeout=10) as client:
        callback = to_provider_and_back(client, site.base, site.provider.issuer, "carol")
        assert urlsplit(callback).path.endswith("/self-service/methods/oidc/callback/op")
        done = client.get(callback)
        assert done.status_code == 303 and done.headers["location"] == f"{site.base}/ui/welcome"
        me = client.get(f"{site.base}/sessions/whoami").json()
        assert me["identity"]["traits"]["email"] == "carol@example.com"
        assert me["identity"]["verifiable_addresses"][0]["verified"] is False  # email_verified: false

        # The same callback again: the state is gone.
        replay = client.get(callback)
        assert replay.status_code == 303 and "/ui/error?id=" in replay.headers["location"]

    with httpx.Client(timeout=10) as other:
        # A fresh state with the used code: the real provider refuses the code (invalid_grant).
        fresh = urlsplit(to_provider_and_back(other, site.base, site.provider.issuer, "dave"))
        state = parse_qs(fresh.query)["state"][0]
        old_code = parse_qs(urlsplit(callback).query)["code"][0]
        r = other.get(
            f"{site.base}{fresh.path.removeprefix('/.auth')}", params={"state": state, "code": old_code}
        )
        assert r.status_code == 303 and "/ui/error?id=" in r.headers["location"]
        error_id = parse_qs(urlsplit(r.headers["location"]).query)["id"][0]
        error = other.get(f"{site.base}/self-service/errors", params={"id": error_id}).json()["error"]
        assert error["code"] == 502 and "invalid_grant" in error["message"]
        assert other.get(f"{site.base}/sessions/whoami").status_code == 401

        # A made-up state never reaches the provider.
        r = other.get(
            f"{site.base}{fresh.path.removeprefix('/.auth')}", params={"state": "forged", "code": "x"}
        )
        assert r.status_code == 303 and "/ui/error?id=" in r.headers["location"]


def test_browser_existing_account_links_after_password_sign_in(browser: Browser, site: Site) -> None:
    base, page = site.base, browser.page
    with httpx.Client(base_url=base, timeout=10) as api:
        flow = api.get("/self-service/registration/api").json()
        body = {
            "method": "password",
            "password": "a long and unique password 42",
            "traits": {"email": "dave@example.com"},
        }
        assert api.post(f"/self-service/registration?flow={flow['id']}", json=body).status_code == 200

    page.goto(f"{base}/ui/login")
    page.get_by_role("button", name="Sign in with Test OP").click()
    _provider_login(browser, site.provider.issuer, "dave")
    # Same address, different credential: no sign-in, no automatic link; sign in to the account first.
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    expect(page.locator("[data-message-id='1010016']")).to_be_visible()
    browser.screenshot("oidc-link-existing-account")
    page.locator("input[name=identifier]").fill("dave@example.com")
    page.locator("input[name=password]").fill("a long and unique password 42")
    page.get_by_role("button", name="Sign in with password").click()
    page.wait_for_url(f"{base}/ui/welcome")
    me = _whoami(browser, base)
    assert me["identity"]["traits"]["email"] == "dave@example.com"

    # Settings shows the provider as linked (unlink is offered: the password remains).
    page.goto(f"{base}/ui/settings")
    page.wait_for_url(re.compile(r"/\.auth/ui/settings\?flow="))
    expect(page.locator("button[name=unlink][value=op]")).to_be_visible()
    expect(page.locator("button[name=link][value=gone]")).to_be_visible()
    browser.screenshot("oidc-settings-linked")
    page.locator("button[name=unlink][value=op]").click()
    expect(page.locator("[data-message-id='1050001']")).to_be_visible()
    expect(page.locator("button[name=link][value=op]")).to_be_visible()

    # Link it again through the provider (it remembers dave).
    page.locator("button[name=link][value=op]").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/settings\?flow="))
    expect(page.locator("button[name=unlink][value=op]")).to_be_visible()
    assert _ours(browser, site) == []
