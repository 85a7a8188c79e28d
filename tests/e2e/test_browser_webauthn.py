"""Passkeys and security keys in a real Chromium with its virtual authenticator (CDP ``WebAuthn``).

WebAuthn needs a secure context and an RP id that is a registrable domain or ``localhost``, so the
server listens on 127.0.0.1 and the browser visits ``http://localhost:PORT`` (RP id ``localhost``).
Every WebAuthn call goes through the served ``/.well-known/ory/webauthn.js`` and the built-in
pages' ``onclickTrigger`` buttons, under the pages' CSP. Screenshots: ``tests/artifacts/webauthn-*``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.conftest import free_port
from tests.e2e.conftest import Browser, serve_public_app, site_config

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple 42"


@pytest.fixture
def key_site(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    rp = {"id": "localhost", "display_name": "Sidecar test", "origins": [f"http://localhost:{port}"]}
    config = site_config(
        tmp_path,
        port,
        host="localhost",
        selfservice={
            "methods": {
                "webauthn": {"enabled": True, "config": {"passwordless": False, "rp": rp}},
                "passkey": {"enabled": True, "config": {"rp": rp}},
            },
        },
    )
    with serve_public_app(config):
        yield config.public_base_url


def _virtual_authenticator(browser: Browser) -> Any:
    cdp = browser.context.new_cdp_session(browser.page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    found = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, found["authenticatorId"]


def _whoami(browser: Browser, base: str) -> dict[str, Any]:
    r = browser.page.request.get(f"{base}/sessions/whoami")
    assert r.ok, r.text()
    body: dict[str, Any] = r.json()
    return body


def _sign_out(browser: Browser, base: str) -> None:
    page = browser.page
    page.goto(f"{base}/ui/welcome")
    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))


def test_passkey_sign_up_and_sign_in_without_password(browser: Browser, key_site: str) -> None:
    base, page = key_site, browser.page
    cdp, authenticator = _virtual_authenticator(browser)
    email = "passkey-user@example.com"

    page.goto(f"{base}/ui/registration")
    page.wait_for_url(re.compile(r"/\.auth/ui/registration\?flow="))
    expect(page.locator("button[name=passkey_register_trigger]")).to_be_visible()
    browser.screenshot("webauthn-registration")
    page.locator("input[name='traits.email']").fill(email)
    page.locator("button[name=passkey_register_trigger]").click()
    page.wait_for_url(f"{base}/ui/welcome")
    credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(credentials) == 1 and credentials[0]["isResidentCredential"] is True
    assert _whoami(browser, base)["authentication_methods"][0]["method"] == "passkey"

    # Signed out, the login page offers the passkey in the identifier's autofill (conditional
    # mediation); the virtual authenticator answers at once, so the browser is signed straight in.
    page.goto(f"{base}/ui/welcome")
    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(f"{base}/ui/welcome")
    assert [m["method"] for m in _whoami(browser, base)["authentication_methods"]] == ["passkey"]

    # A browser without conditional mediation: the "Sign in with passkey" button.
    page.add_init_script("PublicKeyCredential.isConditionalMediationAvailable = async () => false;")
    _sign_out(browser, base)
    expect(page.locator("input[name=identifier]")).to_have_attribute("autocomplete", "username webauthn")
    browser.screenshot("webauthn-login")
    # No identifier, no password: the browser's passkey UI picks the credential.
    page.locator("button[name=passkey_login_trigger]").click()
    page.wait_for_url(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text(email)
    session = _whoami(browser, base)
    assert [m["method"] for m in session["authentication_methods"]] == ["passkey"]
    assert session["identity"]["traits"]["email"] == email
    browser.screenshot("webauthn-passkey-welcome")
    assert browser.problems == []


def test_security_key_second_factor_reaches_aal2(browser: Browser, key_site: str) -> None:
    base, page = key_site, browser.page
    cdp, authenticator = _virtual_authenticator(browser)
    email = "key-user@example.com"
    saved = page.locator("[data-message-id='1050001']")

    page.goto(f"{base}/ui/registration")
    page.locator("input[name='traits.email']").fill(email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign up", exact=True).click()
    page.wait_for_url(f"{base}/ui/welcome")

    page.goto(f"{base}/ui/settings")
    page.wait_for_url(re.compile(r"/\.auth/ui/settings\?flow="))
    page.locator("input[name=webauthn_register_displayname]").fill("Desk key")
    browser.screenshot("webauthn-settings")
    page.locator("button[name=webauthn_register_trigger]").click()
    expect(saved).to_be_visible()
    expect(page.locator("button[name=webauthn_remove]")).to_contain_text("Desk key")
    browser.screenshot("webauthn-settings-key-added")
    assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1

    _sign_out(browser, base)
    page.locator("input[name=identifier]").fill(email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in with password")).click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    expect(page.locator("[data-message-id='1010004']")).to_be_visible()
    expect(page.locator("input[name=password]")).to_have_count(0)
    browser.screenshot("webauthn-login-second-factor")
    page.locator("button[name=webauthn_login_trigger]").click()
    page.wait_for_url(f"{base}/ui/welcome")
    session = _whoami(browser, base)
    assert session["authenticator_assurance_level"] == "aal2"
    assert [m["method"] for m in session["authentication_methods"]] == ["password", "webauthn"]
    browser.screenshot("webauthn-welcome-aal2")
    assert browser.problems == []
