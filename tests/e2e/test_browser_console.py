"""The admin console in Debian's Chromium against ``sidecar serve``: sign in with the admin key,
find an identity, edit a trait, revoke a session, make a recovery code and use it, explain a rule;
the same screens at a phone's width. Screenshots go to ``tests/artifacts/console-*.png``.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import ARTIFACTS, Browser
from tests.e2e.console_site import console_config, identity_with_session, send_recovery_code
from tests.ops.serve import Proc, migrate, ports, running, serve_argv, write_config

pytestmark = pytest.mark.e2e
KEY = "console-e2e-key-0123456789abcdef"
PASSWORD = "Console-e2e-pass-42!"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Proc]:
    """Two workers sharing Redis: a console session made in one is honoured by the other."""
    tmp = tmp_path_factory.mktemp("console")
    public_port, admin_port = ports()
    config = console_config(
        tmp,
        public_port,
        admin_port,
        KEY,
        session={"cache_ttl": "1s"},
        redis={"url": redis_url, "key_prefix": f"sidecar-test:{uuid.uuid4().hex[:10]}:"},
    )
    path = write_config(tmp / "sidecar.yaml", config)
    migrate(path, tmp)
    with running(
        serve_argv(path, "--workers", "2"), cwd=tmp, public_port=public_port, admin_port=admin_port
    ) as proc:
        yield proc


def admin(site: Proc) -> httpx.Client:
    return httpx.Client(base_url=site.admin_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def make_user(site: Proc, first: str) -> tuple[str, str, str]:
    """An identity with a password and an API session: (id, email, session token)."""
    email = f"{first.lower()}-{uuid.uuid4().hex[:6]}@example.test"
    traits = {"email": email, "name": {"first": first, "last": "Lovelace"}}
    with admin(site) as c:
        identity_id, token = identity_with_session(
            c, site.public_url, traits, PASSWORD, "Console-Test-Phone/1.0"
        )
    return identity_id, email, token


def whoami(site: Proc, token: str) -> int:
    r = httpx.get(f"{site.public_url}/.auth/sessions/whoami", headers={"X-Session-Token": token}, timeout=5)
    return r.status_code


def audit_lines(site: Proc) -> list[dict[str, Any]]:
    out = []
    for line in site.log().splitlines():
        if '"audit":"console"' in line:
            out.append(json.loads(line))
    return out


def no_sideways_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def sign_in(browser: Browser, site: Proc) -> None:
    page = browser.page
    page.goto(f"{site.admin_url}/console/identities")
    page.wait_for_url(re.compile(r"/console/login\?next="))
    browser.screenshot("console-sign-in")
    page.get_by_label("Admin API key").fill("wrong-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the admin API key")
    page.get_by_label("Your name").fill("Grace Operator")
    page.get_by_label("Admin API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.admin_url}/console/identities")
    cookie = next(c for c in browser.context.cookies() if c["name"] == "sidecar_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"


def test_console_end_to_end(browser: Browser, site: Proc) -> None:
    identity_id, email, token = make_user(site, "Ada")
    make_user(site, "Bob")
    assert whoami(site, token) == 200
    page = browser.page
    sign_in(browser, site)

    # Find the identity by part of its email.
    page.get_by_role("searchbox").fill(email.split("@")[0])
    page.get_by_role("button", name="Search").click()
    expect(page.locator("table.list tbody tr")).to_have_count(1)
    browser.screenshot("console-search")
    page.get_by_role("link", name=email).click()
    page.wait_for_url(f"{site.admin_url}/console/identities/{identity_id}")
    expect(page.locator("#sessions")).to_contain_text("Console-Test-Phone/1.0")
    browser.screenshot("console-identity")

    # Edit a trait: first a value the schema refuses, then a good one.
    page.get_by_label("E-Mail").fill("not an email")
    page.get_by_role("button", name="Save traits").click()
    expect(page.locator("[data-field='traits.email']")).to_be_visible()
    browser.screenshot("console-trait-invalid")
    page.get_by_label("E-Mail").fill(email)
    page.get_by_label("First name").fill("Augusta Ada")
    page.get_by_role("button", name="Save traits").click()
    expect(page.get_by_role("status")).to_have_text("Traits saved.")
    with admin(site) as c:
        assert c.get(f"/admin/identities/{identity_id}").json()["traits"]["name"]["first"] == "Augusta Ada"

    # Revoke the session: the token stops working (within the session cache's 1 s).
    page.locator("#sessions").get_by_role("button", name="Revoke", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("Session revoked.")
    expect(page.locator("#sessions")).to_contain_text("ended")
    deadline = time.monotonic() + 5
    while whoami(site, token) != 401 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert whoami(site, token) == 401
    browser.screenshot("console-session-revoked")

    # A recovery code, shown once, used in another browser profile.
    page.locator("#recovery").get_by_role("button").click()
    code = page.locator("#recovery-code").inner_text().strip()
    link = page.locator("#recovery-link").inner_text().strip()
    assert re.fullmatch(r"\d{6,}", code), code
    browser.screenshot("console-recovery-code")
    # Cookies are per host, not port; the console's (path /console) never reaches /.auth.
    user_page = browser.context.new_page()
    user_page.goto(link)
    user_page.locator("input[name=code]").fill(code)
    user_page.get_by_role("button", name="Submit").click()
    user_page.wait_for_url(re.compile(r"/\.auth/ui/settings\?flow="))
    expect(user_page.locator("[data-message-id='1060001']")).to_be_visible()
    user_page.screenshot(path=str(ARTIFACTS / "console-recovery-used.png"), full_page=True)
    user_page.close()

    # A recovery mail the courier cannot deliver: abandoned with its error; retry it from the console.
    send_recovery_code(site.public_url, email)
    page.get_by_role("link", name="Courier").click()
    row = page.locator("tr[data-message]", has_text=email)
    deadline = time.monotonic() + 20
    while "abandoned" not in row.inner_text() and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()
    expect(row).to_contain_text("abandoned")
    expect(row.locator("td").nth(3)).not_to_be_empty()
    browser.screenshot("console-courier")
    row.get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_have_text("Message queued to be sent now.")

    # Explain a rule for this identity (no admin role) and anonymously.
    page.get_by_role("link", name="Access rules").click()
    expect(page.locator("#rules tbody tr")).to_have_count(3)
    page.get_by_label("URL").fill("https://app.example.test/admin/users/../settings")
    page.get_by_label("Identity id").fill(identity_id)
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#decision")).to_contain_text("forbidden (403)")
    expect(page.locator("#explanation")).to_contain_text("/admin/settings")
    browser.screenshot("console-explain")

    # The overview and the courier queue draw.
    page.get_by_role("link", name="Overview").click()
    expect(page.locator("#identity-count")).not_to_have_text("0")
    browser.screenshot("console-overview")

    # Phone width: nothing scrolls sideways.
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/console", "/console/identities", f"/console/identities/{identity_id}", "/console/rules"):
        page.goto(f"{site.admin_url}{path}")
        assert no_sideways_scroll(page), path
    browser.screenshot("console-phone-identity", full_page=False)
    page.goto(f"{site.admin_url}/console/identities/{identity_id}")
    browser.screenshot("console-phone-identity", full_page=True)

    # Sign out: the console asks for the key again.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/login"))
    page.goto(f"{site.admin_url}/console")
    page.wait_for_url(re.compile(r"/console/login"))

    actions = [(a["action"], a["result"], a["identity_id"]) for a in audit_lines(site)]
    for expected in (
        ("console.sign_in", "refused", None),
        ("console.sign_in", "ok", None),
        ("identity.update_traits", "refused", identity_id),
        ("identity.update_traits", "ok", identity_id),
        ("session.revoke", "ok", identity_id),
        ("recovery.code", "ok", identity_id),
        ("rules.explain", "ok", identity_id),
        ("courier.retry", "ok", None),
        ("console.sign_out", "ok", None),
    ):
        assert expected in actions, (expected, actions)
    assert all(a["actor"] == "Grace Operator" for a in audit_lines(site) if a["result"] == "ok")
    assert code not in site.log()
    # Chromium logs each refused form answer (401 wrong key, 400 invalid trait) as a failed load;
    # anything else (a CSP violation, a script error) is a problem.
    refused = [p for p in browser.problems if "the server responded with a status of 4" in p]
    assert len(refused) == 2, browser.problems
    assert [p for p in browser.problems if p not in refused] == []


def test_the_console_is_not_on_the_public_listener(site: Proc) -> None:
    for path in ("/console", "/console/login", "/.auth/console", "/.auth/console/login"):
        r = httpx.get(f"{site.public_url}{path}", timeout=5, follow_redirects=False)
        assert r.status_code in (302, 303, 401, 403, 404), (path, r.status_code)
        assert "sidecar console" not in r.text, path
