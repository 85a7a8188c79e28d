"""Two-step registration and identifier-first login in the built-in pages, in Chromium, against
``sidecar serve --dev`` (issue 16, section 2; Kratos v25.4.0 ``selfservice/strategy/profile/
registration.go`` and ``selfservice/strategy/idfirst/strategy_login.go``). Screenshots of each
screen land in ``tests/artifacts/styles-*.png``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Browser
from tests.ops.serve import Proc, ports, running, serve_argv, write_config
from tests.ops.test_kratos_flow_styles import PASSWORD, style_config

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """``--dev``: cookies over plain http, as the pages are reached at http://127.0.0.1 here."""
    tmp = tmp_path_factory.mktemp("styles-browser")
    public_port, admin_port = ports()
    cfg = style_config(tmp, public_port, admin_port, mitigate=False)
    cfg["selfservice"]["default_browser_return_url"] = f"http://127.0.0.1:{public_port}/.auth/ui/welcome"
    path = write_config(tmp / "cfg.yaml", cfg)
    with running(serve_argv(path, "--dev"), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


def test_pages_two_step_registration_then_identifier_first_login(browser: Browser, dev_server: Proc) -> None:
    base = f"{dev_server.public_url}/.auth"
    page = browser.page
    email = f"pages-{uuid.uuid4().hex[:6]}@example.test"

    page.goto(f"{base}/ui/registration")
    expect(page.locator("input[name=password]")).to_have_count(0)
    browser.screenshot("styles-registration-profile")
    page.locator("input[name='traits.email']").fill(email)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("[data-message-id='1040009']")).to_be_visible()
    expect(page.locator("input[name='traits.email']")).to_have_attribute("type", "hidden")
    browser.screenshot("styles-registration-credentials")
    # Back keeps what was typed; the password field's "required" does not block it.
    page.get_by_role("button", name="Back").click()
    expect(page.locator("input[name='traits.email']")).to_have_value(email)
    page.get_by_role("button", name="Sign up").click()
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text(email)

    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    expect(page.locator("input[name=password]")).to_have_count(0)
    browser.screenshot("styles-login-identifier")
    page.locator("input[name=identifier]").fill("nobody-" + email)
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("input[name=password]")).to_be_visible()  # unknown: the same screen
    expect(page.locator("[role=alert]")).to_have_count(0)

    page.goto(f"{base}/ui/login")
    page.locator("input[name=identifier]").fill(email)
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("input[name=identifier]")).to_have_attribute("type", "hidden")
    browser.screenshot("styles-login-password")
    page.locator("input[name=password]").fill(PASSWORD)
    page.get_by_role("button", name=re.compile("Sign in")).click()
    page.wait_for_url(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text(email)
    assert not browser.problems, browser.problems
