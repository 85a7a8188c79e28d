"""Recovery and verification in a real Chromium against a live sidecar that mails through aiosmtpd.

The built-in pages draw every step from the flow's nodes: enter the email, enter the code from the
delivered mail, land on the settings page (recovery) or the success page (verification, also by
clicking the mail's link). Screenshots go to ``tests/artifacts/``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import make_config
from tests.e2e.conftest import Browser
from tests.live import LiveSidecar, live_sidecar
from tests.mail import SmtpServer, code_in, link_in

pytestmark = pytest.mark.e2e
PASSWORD = "correct-Horse-battery-staple-42"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[LiveSidecar]:
    dsn = f"sqlite:///{tmp_path_factory.mktemp('browser-mail')}/sidecar.db"
    config = make_config(
        dsn=dsn,
        dev=True,
        courier={"smtp": {"connection_uri": smtp.uri}, "worker_interval": "50ms"},
        selfservice={"flows": {"recovery": {"enabled": True}, "verification": {"enabled": True}}},
    )
    with live_sidecar(config) as live:
        yield live


def register(site: LiveSidecar, smtp: SmtpServer) -> str:
    email = f"b{uuid.uuid4().hex[:8]}@example.test"
    # 30 s, not httpx's 5 s: the hash runs at nice +10, and CI's four workers keep both cores busy.
    flow = httpx.get(f"{site.public_url}/self-service/registration/api", timeout=30).json()
    body = {"method": "password", "password": PASSWORD, "traits": {"email": email}}
    r = httpx.post(f"{site.public_url}/self-service/registration?flow={flow['id']}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    smtp.mailbox.wait_for(email)  # the verification mail
    return email


def test_recovery_by_code_in_the_browser(browser: Browser, site: LiveSidecar, smtp: SmtpServer) -> None:
    base = site.public_url
    email = register(site, smtp)
    page = browser.page
    response = page.goto(f"{base}/ui/recovery")
    assert re.search(r"/\.auth/ui/recovery\?flow=", page.url), page.url
    assert response is not None and response.headers["referrer-policy"] == "no-referrer"
    browser.screenshot("real-recovery")
    page.locator("input[name=email]").fill(email)
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("input[name=code]")).to_be_visible()
    expect(page.locator("[data-message-id='1060003']")).to_be_visible()
    browser.screenshot("real-recovery-code")

    page.locator("input[name=code]").fill("000000x")
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("[data-message-id='4060006']")).to_be_visible()
    browser.screenshot("real-recovery-wrong-code")

    mail = smtp.mailbox.wait_for(email, count=2)[-1]
    page.locator("input[name=code]").fill(code_in(mail))
    page.get_by_role("button", name="Submit").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/settings\?flow="))
    expect(page.locator("[data-message-id='1060001']")).to_be_visible()
    browser.screenshot("real-recovery-settings")
    assert browser.problems == []


def test_verification_by_mail_link_in_a_fresh_browser(
    browser: Browser, site: LiveSidecar, smtp: SmtpServer
) -> None:
    email = register(site, smtp)
    link = link_in(smtp.mailbox.wait_for(email)[0])
    page = browser.page
    page.goto(link)
    page.wait_for_url(re.compile(r"/\.auth/ui/verification\?flow="))
    expect(page.locator("[data-message-id='1080002']")).to_be_visible()
    browser.screenshot("real-verification-done")
    identity_id = httpx.get(f"{site.admin_url}/admin/identities?credentials_identifier={email}").json()[0][
        "id"
    ]
    identity = httpx.get(f"{site.admin_url}/admin/identities/{identity_id}").json()
    assert identity["verifiable_addresses"][0]["verified"] is True
    assert browser.problems == []


def test_verification_by_code_form(browser: Browser, site: LiveSidecar, smtp: SmtpServer) -> None:
    email = register(site, smtp)
    page = browser.page
    page.goto(f"{site.public_url}/ui/verification")
    browser.screenshot("real-verification")
    page.locator("input[name=email]").fill(email)
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("input[name=code]")).to_be_visible()
    browser.screenshot("real-verification-code")
    code = code_in(smtp.mailbox.wait_for(email, count=2)[-1])
    page.locator("input[name=code]").fill(code)
    page.get_by_role("button", name="Submit").click()
    expect(page.locator("[data-message-id='1080002']")).to_be_visible()
    assert browser.problems == []
