"""SAML single sign-on in Chromium: the built-in login page, the identity provider's login form
(pysaml2's IdP, ``tests/strategies/saml/idp.py``) and back, signed in. Screenshots in
``tests/artifacts/saml-*.png``. The HTTP-POST binding runs our auto-posting page under its CSP
(a script hash, ``form-action`` the IdP): any CSP violation or script error fails the test."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Browser
from tests.strategies.saml.browser import Site
from tests.strategies.saml.test_saml_serve import ORG, site  # noqa: F401 - the shared fixture

pytestmark = pytest.mark.e2e


def test_browser_signs_in_through_the_idp_and_out_again(browser: Browser, site: Site) -> None:  # noqa: F811
    base, page = site.base, browser.page
    home = base.removesuffix("/.auth") + "/"
    page.goto(f"{base}/ui/login")
    button = page.get_by_role("button", name="Sign in with Partner")
    expect(button).to_be_visible()
    browser.screenshot("saml-login")
    button.click()  # HTTP-POST binding: our page posts the AuthnRequest to the IdP
    page.wait_for_url(f"{site.idp.url}/sso/post")
    expect(page.get_by_role("heading")).to_contain_text("IdP login for")
    page.get_by_label("Email").fill("olivia@partner.test")
    browser.screenshot("saml-idp-login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(home)  # selfservice.default_browser_return_url
    page.goto(f"{base}/ui/welcome")
    browser.screenshot("saml-welcome")
    me = browser.context.request.get(f"{base}/sessions/whoami").json()
    assert me["identity"]["traits"]["email"] == "olivia@partner.test"
    assert [m["method"] for m in me["authentication_methods"]] == ["saml"]

    # Signing out goes through the IdP's single logout and back.
    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(home)
    assert site.idp.logouts[-1] == "olivia@partner.test"
    assert browser.context.request.get(f"{base}/sessions/whoami").status == 401

    # An address of the organization's domain goes to its IdP from the same form.
    page.goto(f"{base}/ui/login")
    page.get_by_label("E-Mail").fill("paul@acme.example")
    page.get_by_label("Password").fill("anything")
    page.get_by_role("button", name="Sign in with password").click()
    page.wait_for_url(re.compile(re.escape(f"{site.idp.url}/sso/redirect")))
    page.get_by_label("Email").fill("paul@acme.example")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(home)
    me = browser.context.request.get(f"{base}/sessions/whoami").json()
    assert me["identity"]["organization_id"] == ORG
    # 404s of the IdP's favicon and of "/" (no upstream here) aside, nothing went wrong.
    assert [p for p in browser.problems if "Failed to load resource" not in p] == []
