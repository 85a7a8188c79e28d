"""Settings and second factors in a real Chromium against the real public app.

Register, change a trait, change the password (the other session dies), link an authenticator
app by reading the secret off the page and computing the code with ``oathtool``, create backup
codes, sign out, sign in with password + TOTP. Screenshots land in ``tests/artifacts/mfa-*.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.api.public.mfa import MFA_METHODS, fresh_step, oathtool
from tests.conftest import free_port
from tests.e2e.conftest import Browser, serve_public_app, site_config

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery staple 42"
NEW_PASSWORD = "another long secret phrase 77"


@pytest.fixture
def mfa_site(tmp_path: Path) -> Iterator[str]:
    config = site_config(
        tmp_path,
        free_port(),
        selfservice={
            "methods": MFA_METHODS,
            "flows": {"settings": {"after": {"password": {"hooks": [{"hook": "revoke_active_sessions"}]}}}},
        },
    )
    with serve_public_app(config):
        yield config.public_base_url


def _api_login(base: str, email: str, password: str) -> str:
    with httpx.Client(base_url=base, timeout=10) as client:
        flow = client.get("/self-service/login/api").json()
        body = {"method": "password", "identifier": email, "password": password}
        r = client.post(f"/self-service/login?flow={flow['id']}", json=body)
        assert r.status_code == 200, r.text
        return str(r.json()["session_token"])


def _whoami(base: str, token: str) -> int:
    with httpx.Client(base_url=base, timeout=10) as client:
        return client.get("/sessions/whoami", headers={"X-Session-Token": token}).status_code


def test_settings_and_second_factor_journey(browser: Browser, mfa_site: str) -> None:
    base = mfa_site
    page = browser.page
    email = "mfa-journey@example.com"
    saved = page.locator("[data-message-id='1050001']")

    page.goto(f"{base}/ui/registration")
    page.locator("input[name='traits.email']").fill(email)
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/ui/welcome")
    other_device = _api_login(base, email, PASSWORD)

    # Settings: one form per method; the authenticator app is offered with a QR code.
    page.goto(f"{base}/ui/settings")
    page.wait_for_url(re.compile(r"/\.auth/ui/settings\?flow="))
    expect(page.locator("img#totp_qr")).to_be_visible()
    assert page.locator("img#totp_qr").evaluate("img => img.naturalWidth") > 0
    browser.screenshot("mfa-settings")

    # A trait.
    page.locator("input[name='traits.name.first']").fill("Ada")
    page.locator("button[name=method][value=profile]").click()
    expect(saved).to_be_visible()
    expect(page.locator("input[name='traits.name.first']")).to_have_value("Ada")

    # The password: the session on the other device is revoked.
    page.locator("input[name=password]").fill(NEW_PASSWORD)
    page.locator("button[name=method][value=password]").click()
    expect(saved).to_be_visible()
    assert _whoami(base, other_device) == 401

    # The authenticator app: the secret is read off the page, the code comes from oathtool.
    secret = page.locator("#totp_secret_key code").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    now = fresh_step()
    page.locator("input[name=totp_code]").fill(oathtool(secret, now))
    page.locator("button[name=method][value=totp]").click()
    expect(saved).to_be_visible()
    expect(page.locator("button[name=totp_unlink]")).to_be_visible()

    # Backup codes: shown once, then confirmed.
    page.locator("button[name=lookup_secret_regenerate]").click()
    # all_inner_texts() does not wait: on a loaded machine it read the page before the answer.
    expect(page.locator("#lookup_secret_codes li code")).to_have_count(12)
    codes = page.locator("#lookup_secret_codes li code").all_inner_texts()
    assert len(codes) == 12 and all(re.fullmatch(r"[a-z0-9]{8}", c) for c in codes)
    browser.screenshot("mfa-settings-codes")
    page.locator("button[name=lookup_secret_confirm]").click()
    expect(saved).to_be_visible()
    expect(page.locator("#lookup_secret_codes")).to_have_count(0)
    browser.screenshot("mfa-settings-enrolled")

    # Sign out; sign in with the new password, then the second factor.
    page.goto(f"{base}/ui/welcome")
    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    page.locator("input[name=identifier]").fill(email)
    page.locator("input[name=password]").fill(NEW_PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in")).click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    expect(page.locator("[data-message-id='1010004']")).to_be_visible()
    expect(page.locator("input[name=password]")).to_have_count(0)
    browser.screenshot("mfa-login-second-factor")
    # Until the second factor is done, the account pages send the browser back to it.
    for path in ("/ui/settings", "/ui/welcome"):
        page.goto(base + path)
        page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
        expect(page.locator("input[name=totp_code]")).to_be_visible()
    now = fresh_step()
    page.locator("input[name=totp_code]").fill("000000")
    page.locator("button[name=method][value=totp]").click()
    expect(page.locator("[data-message-id='4000008']")).to_be_visible()
    browser.screenshot("mfa-login-second-factor-failed")
    page.locator("input[name=totp_code]").fill(oathtool(secret, now + 30))
    page.locator("button[name=method][value=totp]").click()
    page.wait_for_url(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text(email)
    browser.screenshot("mfa-welcome-aal2")
    assert browser.problems == []
