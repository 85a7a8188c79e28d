"""The built-in pages in a real Chromium.

First over a small app serving the pages with fake flows (every node type, every page), then the
whole journey against the real public app: register, welcome, sign out, wrong password, sign in,
``return_to``. Screenshots of every page land in ``tests/artifacts/`` for a human look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route

from sidecar.ui.pages import page_routes
from tests.conftest import free_port
from tests.e2e.conftest import Browser
from tests.ui import fakes

pytestmark = pytest.mark.e2e

# A stand-in for Kratos' webauthn.js: defines the helper a node's onclickTrigger names.
WEBAUTHN_STUB = "window.oryWebAuthnRegistration = function () { document.body.dataset.webauthn = 'called'; };"


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free 127.0.0.1 port in a thread; yields its origin."""
    port = free_port()
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("test server did not start")
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def fake_app(base: str, core: fakes.FakeCore, submitted: list[dict[str, list[str]]]) -> Starlette:
    """The pages over fake flows, plus just enough of the API to init and submit a login."""

    def rebase(flow: dict[str, Any]) -> dict[str, Any]:
        return dict(json.loads(json.dumps(flow).replace(fakes.BASE, base)))

    flows = {
        "login": fakes.login_flow(return_to=f"{base}/ui/welcome"),
        "registration": fakes.registration_flow(
            email="ada@example",
            email_messages=[fakes.text(4000040, '"ada@example" is not a valid email address.', "error")],
            password_messages=[
                fakes.text(4000032, "The password must be at least 8 characters long.", "error")
            ],
        ),
        "settings": fakes.settings_flow(saved=True),
        "recovery": fakes.recovery_flow(sent=True),
        "verification": fakes.verification_flow(),
    }
    for kind, flow in flows.items():
        core.add(kind, rebase(flow))
    failed = rebase(
        fakes.login_flow(
            "0b0c9a8e-1111-4a4a-9a9a-0000000000ff",
            identifier="ada@example.com",
            messages=[
                fakes.text(
                    4000006, "The provided credentials are invalid, check for spelling mistakes.", "error"
                )
            ],
        )
    )
    core.add("login", failed)
    core.errors_by_id["e1"] = fakes.flow_error("e1")
    core.signed_in = fakes.session()

    async def init(request: Request) -> Response:
        kind = request.path_params["kind"]
        return RedirectResponse(f"/.auth/ui/{kind}?flow={flows[kind]['id']}", status_code=303)

    async def submit_login(request: Request) -> Response:
        form = await request.form()
        submitted.append({k: [str(v) for v in form.getlist(k)] for k in form})
        # Kratos answers a failed browser submit with a 303 back to the UI and the flow's messages.
        return RedirectResponse(f"/.auth/ui/login?flow={failed['id']}", status_code=303)

    async def webauthn_js(request: Request) -> Response:
        return Response(WEBAUTHN_STUB, media_type="text/javascript")

    routes = page_routes(
        fetch_flow=core.fetch_flow,
        fetch_error=core.fetch_error,
        whoami=core.whoami,
        logout_url=core.logout_url,
        public_base_url=base,
    )
    api = [
        Route("/self-service/{kind}/browser", init),
        Route("/self-service/login", submit_login, methods=["POST"]),
        Route("/.well-known/ory/webauthn.js", webauthn_js),
    ]
    return Starlette(routes=[Mount("/.auth", routes=[*routes, *api])])


@pytest.fixture
def fake_site() -> Iterator[tuple[str, list[dict[str, list[str]]]]]:
    submitted: list[dict[str, list[str]]] = []
    port = free_port()
    base = f"http://127.0.0.1:{port}/.auth"
    app = fake_app(base, fakes.FakeCore(), submitted)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    try:
        yield base, submitted
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("kind", ["login", "registration", "settings", "recovery", "verification"])
def test_flow_pages_render_without_csp_violations(
    browser: Browser, fake_site: tuple[str, list[Any]], kind: str
) -> None:
    base, _ = fake_site
    page = browser.page
    page.goto(f"{base}/ui/{kind}")  # no flow: init, then back with ?flow=
    assert "flow=" in page.url
    expect(page.locator("h1")).to_be_visible()
    # Every visible input is reachable by its label (the accessibility tree agrees with <label for>).
    for handle in page.locator("input:not([type=hidden])").all():
        dom_id = handle.get_attribute("id")
        assert page.locator(f"label[for='{dom_id}']").count() == 1
    browser.screenshot(f"fake-{kind}")
    assert browser.problems == []


def test_error_and_welcome_pages(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, _ = fake_site
    page = browser.page
    page.goto(f"{base}/ui/error?id=e1")
    expect(page.get_by_role("alert")).to_contain_text("Please retry the flow")
    browser.screenshot("fake-error")
    page.goto(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text("ada@example.com")
    expect(page.get_by_role("link", name="Sign out")).to_have_attribute(
        "href", re.compile(r"/self-service/logout\?token=")
    )
    browser.screenshot("fake-welcome")
    assert browser.problems == []


def test_login_form_posts_and_shows_the_error(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, submitted = fake_site
    page = browser.page
    page.goto(f"{base}/ui/login")
    page.get_by_label("ID").fill("ada@example.com")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in with password").click()
    expect(page.get_by_role("alert")).to_contain_text("credentials are invalid")
    assert submitted[-1]["method"] == ["password"]
    assert submitted[-1]["identifier"] == ["ada@example.com"]
    assert submitted[-1]["password"] == ["wrong-password"]
    assert submitted[-1]["csrf_token"] == [fakes.CSRF]
    # The identifier comes back filled in; the password never does.
    expect(page.get_by_label("ID")).to_have_value("ada@example.com")
    expect(page.get_by_label("Password")).to_have_value("")
    browser.screenshot("fake-login-failed")
    # "Send sign in code" skips the browser's required-check for the empty password.
    page.get_by_role("button", name="Send sign in code").click()
    page.wait_for_load_state()
    assert submitted[-1]["method"] == ["code"]
    assert browser.problems == []


def test_onclick_trigger_calls_the_helper_script(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, _ = fake_site
    page = browser.page
    page.goto(f"{base}/ui/settings")
    page.wait_for_load_state("load")
    page.get_by_role("button", name="Add security key").click()
    expect(page.locator("body")).to_have_attribute("data-webauthn", "called")
    assert browser.problems == []


def test_mobile_layout(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, _ = fake_site
    page = browser.page
    page.set_viewport_size({"width": 390, "height": 844})
    for kind in ("login", "registration"):
        page.goto(f"{base}/ui/{kind}")
        # Nothing wider than the screen: no horizontal scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        browser.screenshot(f"fake-{kind}-mobile")
    assert browser.problems == []
