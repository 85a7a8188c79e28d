"""The admin console in German and Japanese in Debian's Chromium against ``sidecar serve``, at a
desktop's and a phone's width: every screen walked shows none of the console's English texts
(tests/i18n/leftovers.py: the schema's violations, the rules' reasons and the managers' refusals
included), nothing scrolls sideways and no button is cut off. Screenshots go to
``tests/artifacts/console-<lang>-<width>-<screen>.png`` (with real CJK fonts for Japanese).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from playwright.sync_api import Page, ViewportSize, expect

from sidecar.i18n import builtin_catalogs
from sidecar.identity import refusals
from tests.e2e.conftest import Browser
from tests.e2e.console_site import console_config, identity_with_session, send_recovery_code
from tests.i18n.leftovers import english_left
from tests.ops.serve import Proc, migrate, ports, running, serve_argv, write_config

pytestmark = pytest.mark.e2e
KEY = "console-languages-e2e-key-0123456789"
PASSWORD = "Console-lang-pass-42!"
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
# The browser's view of a page: each text node and each title/placeholder/label, and the whole text.
_READ = """() => {
  const chunks = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const text = walker.currentNode.textContent.replace(/\\s+/g, " ").trim();
    if (text) chunks.push(text);
  }
  for (const el of document.querySelectorAll("[title], [placeholder], [aria-label]")) {
    for (const name of ["title", "placeholder", "aria-label"]) {
      const value = el.getAttribute(name);
      if (value) chunks.push(value.trim());
    }
  }
  chunks.push(document.title);
  return {chunks};
}"""
# Sideways: the page, any panel (they scroll on their own), or a button's own text.
_OVERFLOW = """() => {
  const out = [];
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth + 1) out.push(`page ${root.scrollWidth} > ${window.innerWidth}`);
  for (const el of document.querySelectorAll(".panel, .card, .bar, .msg")) {
    if (el.scrollWidth > el.clientWidth + 1)
      out.push(`${el.className}#${el.id}: ${el.scrollWidth} > ${el.clientWidth}`);
  }
  for (const el of document.querySelectorAll("button, a.button")) {
    const box = el.getBoundingClientRect();
    if (el.scrollWidth > el.clientWidth + 1 || box.right > window.innerWidth + 1)
      out.push(`button "${el.textContent.trim()}" ${el.scrollWidth}/${el.clientWidth}, right ${box.right}`);
  }
  return out;
}"""


@dataclass(frozen=True)
class Site:
    proc: Proc
    identity_id: str
    email: str
    organization_id: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console-languages")
    public_port, admin_port = ports()
    config = console_config(tmp, public_port, admin_port, KEY)
    path = write_config(tmp / "sidecar.yaml", config)
    migrate(path, tmp)
    with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield _seed(proc)


def _seed(proc: Proc) -> Site:
    """An identity with a session and an undeliverable mail, an organization with a member."""
    email = f"ada-{uuid.uuid4().hex[:6]}@example.test"
    admin = httpx.Client(base_url=proc.admin_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    with admin:
        org = admin.post("/admin/organizations", json={"label": "Acme", "domains": ["acme.example"]})
        assert org.status_code == 201, org.text
        traits = {"email": email, "name": {"first": "Ada", "last": "Lovelace"}}
        identity_id, _ = identity_with_session(
            admin, proc.public_url, traits, PASSWORD, "Console-Languages-Phone/1.0"
        )
        grace = {"schema_id": "default", "traits": {"email": "grace@acme.example"}}
        assert (
            admin.post("/admin/identities", json={**grace, "organization_id": org.json()["id"]}).status_code
            == 201
        )
    send_recovery_code(proc.public_url, email)
    return Site(proc, identity_id, email, org.json()["id"])


def _check(browser: Browser, language: str, shot: str) -> None:
    page = browser.page
    browser.screenshot(shot)  # first: a failing screen is there to look at
    assert page.locator("html").get_attribute("lang") == language
    seen = page.evaluate(_READ)
    left = english_left(seen["chunks"], builtin_catalogs().translator(language))
    assert left == [], (shot, left)
    overflow = page.evaluate(_OVERFLOW)
    assert overflow == [], (shot, overflow)


def _wait_for_abandoned(page: Page, site: Site, language: str) -> None:
    """The courier worker gives the undeliverable mail up within seconds; reload until it has."""
    row = page.locator("tr[data-message]", has_text=site.email)
    deadline = time.monotonic() + 60
    while page.locator("tr[data-message] .badge.abandoned").count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(300)
        page.reload()
    expect(row.locator(".badge.abandoned")).to_be_visible()


@pytest.mark.parametrize(
    ("browser", "language"),
    [({"locale": "de-DE"}, "de"), ({"locale": "ja-JP"}, "ja")],
    indirect=["browser"],
    ids=["de", "ja"],
)
@pytest.mark.parametrize("width", ["desktop", "phone"])
def test_the_console_speaks_the_browser_language(
    browser: Browser, site: Site, language: str, width: str
) -> None:
    page = browser.page
    page.set_viewport_size(DESKTOP if width == "desktop" else PHONE)
    tr = builtin_catalogs().translator(language)
    admin_url = site.proc.admin_url

    def shot(name: str) -> str:
        return f"console-{language}-{width}-{name}"

    def visit(path: str, name: str) -> None:
        page.goto(f"{admin_url}{path}")
        _check(browser, language, shot(name))

    # Sign in: a wrong key first (the refusal is translated too), then the right one.
    page.goto(f"{admin_url}/console/identities")
    page.wait_for_url(re.compile(r"/console/login\?next="))
    _check(browser, language, shot("sign-in"))
    page.get_by_label(tr.gettext("Admin API key")).fill("wrong-key")
    page.get_by_role("button", name=tr.gettext("Sign in")).click()
    expect(page.get_by_role("alert")).to_have_text(tr.gettext("That is not the admin API key."))
    _check(browser, language, shot("sign-in-refused"))
    page.get_by_label(tr.gettext("Your name")).fill("Grace Operator")
    page.get_by_label(tr.gettext("Admin API key")).fill(KEY)
    page.get_by_role("button", name=tr.gettext("Sign in")).click()
    page.wait_for_url(f"{admin_url}/console/identities")
    _check(browser, language, shot("identities"))

    # Search, then the identity with its session, sessions, recovery and forms.
    page.get_by_role("searchbox").fill(site.email.split("@")[0])
    page.get_by_role("button", name=tr.gettext("Search"), exact=True).click()
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    _check(browser, language, shot("search"))
    page.get_by_role("link", name=site.email).click()
    page.wait_for_url(f"{admin_url}/console/identities/{site.identity_id}")
    expect(page.locator("#sessions")).to_contain_text("Console-Languages-Phone/1.0")
    _check(browser, language, shot("identity"))
    page.locator("#traits").get_by_role("button").click()
    expect(page.get_by_role("status")).to_have_text(tr.gettext("Traits saved."))
    _check(browser, language, shot("identity-saved"))
    page.locator("#recovery").get_by_role("button").click()
    expect(page.locator("#recovery-code")).to_have_text(re.compile(r"^\d{6,}$"))
    _check(browser, language, shot("recovery-code"))
    visit("/console/identities/new", "new-identity")
    # What the schema refuses is said in Kratos' messages (4000003, 4000040), translated.
    page.locator("input[name='traits.email']").fill("ab")
    page.get_by_role("button", name=tr.gettext("Create identity")).click()
    expect(page.locator(".field-error[data-field='traits.email']")).to_have_count(2)
    _check(browser, language, shot("new-identity-refused"))
    visit(f"/console/identities/{site.identity_id}/delete", "identity-delete")

    # The courier queue (an abandoned mail), the web hooks (none), the rules and an explanation.
    page.goto(f"{admin_url}/console/courier")
    _wait_for_abandoned(page, site, language)
    _check(browser, language, shot("courier"))
    visit("/console/courier?status=sent", "courier-empty")
    visit("/console/webhooks", "webhooks")
    visit("/console/rules", "rules")
    page.get_by_label(tr.gettext("URL"), exact=True).fill("https://app.example.test/admin/users")
    page.get_by_label(tr.gettext("Identity id")).fill(site.identity_id)
    page.get_by_role("button", name=tr.gettext("Explain"), exact=True).click()
    expect(page.locator("#decision")).to_contain_text(tr.gettext("forbidden (403)"))
    _check(browser, language, shot("explain"))

    # Organizations: the list, one, its members, the delete confirmation.
    visit("/console/organizations", "organizations")
    visit(f"/console/organizations/{site.organization_id}", "organization")
    # Issue (the first walk) or replace (the later ones) the organization's token.
    page.locator("#scim form[action$='/scim-token'] button").click()
    expect(page.locator("[data-scim-token]")).not_to_be_empty()
    _check(browser, language, shot("scim-token"))
    visit(f"/console/organizations/{site.organization_id}/members", "members")
    visit(f"/console/organizations/{site.organization_id}/delete", "organization-delete")

    # The overview (counts and charts) and a page that is not there.
    visit("/console", "overview")
    expect(page.locator("#identity-count")).not_to_have_text("0")
    visit("/console/identities/not-an-id", "not-found")
    expect(page.get_by_role("alert")).to_have_text(tr.gettext("There is no identity with that id."))
    # A manager's refusal: no identity has this (well-formed) id.
    visit(f"/console/identities/{uuid.uuid4()}", "identity-gone")
    expect(page.get_by_role("alert")).to_have_text(tr.gettext(refusals.NOT_FOUND))

    page.get_by_role("button", name=tr.gettext("Sign out")).click()
    page.wait_for_url(re.compile(r"/console/login"))
    # Chromium logs each refused answer (401 wrong key, 400 refused traits, 404 twice) as a failed load.
    refused = [p for p in browser.problems if "the server responded with a status of 4" in p]
    assert len(refused) == 4, browser.problems
    assert [p for p in browser.problems if p not in refused] == []
