"""The built-in pages in a real Chromium.

First over a small app serving the pages with fake flows (every node type, every page), then the
whole journey against the real public app: register, welcome, sign out, wrong password, sign in,
``return_to``. Screenshots of every page land in ``tests/artifacts/`` for a human look.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sidecar.ui.api_client import PublicApiClient
from sidecar.ui.pages import page_routes
from tests.conftest import free_port
from tests.e2e.conftest import Browser, serve, site_config
from tests.ui import fakes

pytestmark = pytest.mark.e2e

# A stand-in for Kratos' webauthn.js: defines the helper a node's onclickTrigger names.
WEBAUTHN_STUB = "window.oryWebAuthnRegistration = function () { document.body.dataset.webauthn = 'called'; };"


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

    @contextlib.asynccontextmanager
    async def make_app() -> AsyncIterator[Starlette]:
        yield fake_app(base, fakes.FakeCore(), submitted)

    with serve(port, make_app):
        yield base, submitted


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


def _sign_in_with_wrong_password(page: Page, base: str) -> None:
    """Submit the fake login page with a wrong password; the error is shown."""
    page.goto(f"{base}/ui/login")
    page.get_by_label("ID").fill("ada@example.com")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in with password").click()
    expect(page.get_by_role("alert")).to_contain_text("credentials are invalid")


def test_login_form_posts_and_shows_the_error(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, submitted = fake_site
    page = browser.page
    _sign_in_with_wrong_password(page, base)
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


@pytest.mark.parametrize("browser", [{"javascript": False}], indirect=True)
def test_pages_work_without_javascript(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, submitted = fake_site
    page = browser.page
    _sign_in_with_wrong_password(page, base)
    assert submitted[-1]["password"] == ["wrong-password"]
    assert browser.problems == []


@pytest.mark.parametrize("browser", [{"color_scheme": "dark"}], indirect=True)
def test_dark_mode(browser: Browser, fake_site: tuple[str, list[Any]]) -> None:
    base, _ = fake_site
    for kind in ("login", "settings"):
        browser.page.goto(f"{base}/ui/{kind}")
        browser.screenshot(f"fake-{kind}-dark")
    assert browser.problems == []


# --- the real public app ----------------------------------------------------------------------


def _with_pages(public: ASGIApp, pages: ASGIApp, ui_prefix: str) -> ASGIApp:
    """Send ``{prefix}/ui/*`` to the pages and everything else to the public app."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        target = pages if scope["type"] == "http" and scope["path"].startswith(ui_prefix) else public
        await target(scope, receive, send)

    return app


@pytest.fixture
def real_site(tmp_path: Path) -> Iterator[str]:
    """The shipped public app on a free port, dev-like over http; yields the public base URL.

    If ``create_public_app`` does not serve the pages yet, they are put in front of it here, wired
    through ``PublicApiClient`` to that same app, exactly as a separate Kratos UI would be.
    """
    from sidecar.app import build_services, create_public_app

    port = free_port()
    config = site_config(tmp_path, port)
    base = config.public_base_url
    origin = f"http://127.0.0.1:{port}"

    @contextlib.asynccontextmanager
    async def make_app() -> AsyncIterator[ASGIApp]:
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        client: PublicApiClient | None = None
        try:
            public = create_public_app(services, manage_lifespan=False)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=public), base_url=origin) as probe:
                wired = (await probe.get("/.auth/ui/login")).status_code == 303
            if wired:
                yield public
            else:
                client = PublicApiClient(base, transport=httpx.ASGITransport(app=public))
                routes = page_routes(
                    fetch_flow=client.fetch_flow,
                    fetch_error=client.fetch_error,
                    whoami=client.whoami,
                    logout_url=client.logout_url,
                    public_base_url=base,
                    selfservice=config.selfservice,
                )
                pages = Starlette(routes=[Mount("/.auth", routes=routes)])
                yield _with_pages(public, pages, "/.auth/ui/")
        finally:
            if client is not None:
                await client.aclose()
            await services.stop()

    with serve(port, make_app):
        yield base


def test_journey_register_logout_login_return_to(browser: Browser, real_site: str) -> None:
    base = real_site
    origin = base.removesuffix("/.auth")
    page = browser.page
    email = "journey@example.com"
    password = "correct horse battery staple 42"

    # Register: the page starts a flow on its own and lands back here with ?flow=.
    page.goto(f"{base}/ui/registration")
    assert re.search(r"/\.auth/ui/registration\?flow=", page.url), page.url
    browser.screenshot("real-registration")
    page.locator("input[name='traits.email']").fill(email)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text(email)
    browser.screenshot("real-welcome")

    # Sign out: the logout URL comes from /self-service/logout/browser; signed out, the welcome
    # page sends the browser on to sign in.
    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    browser.screenshot("real-login")

    # A wrong password: the flow comes back with the "invalid credentials" message (4000006).
    page.locator("input[name=identifier]").fill(email)
    page.locator("input[name=password]").fill("not the password")
    page.get_by_role("button", name=re.compile("Sign in")).click()
    alert = page.locator("[data-message-id='4000006']")
    expect(alert).to_be_visible()
    expect(alert).to_have_attribute("role", "alert")
    expect(page.locator("input[name=password]")).to_have_value("")
    browser.screenshot("real-login-failed")

    # The right password signs in.
    page.locator("input[name=identifier]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name=re.compile("Sign in")).click()
    page.wait_for_url(f"{base}/ui/welcome")
    expect(page.locator("#identifier")).to_have_text(email)

    # return_to survives the whole trip: page → init → flow → submit → redirect.
    page.get_by_role("link", name="Sign out").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    target = f"{base}/ui/welcome?from=return-to"
    page.goto(f"{base}/ui/login?return_to={quote(target, safe='')}")
    page.locator("input[name=identifier]").fill(email)
    page.locator("input[name=password]").fill(password)
    page.get_by_role("button", name=re.compile("Sign in")).click()
    page.wait_for_url(target)
    expect(page.locator("#identifier")).to_have_text(email)
    assert origin in page.url
    assert browser.problems == []


def test_real_registration_errors_are_shown(browser: Browser, real_site: str) -> None:
    base = real_site
    page = browser.page
    page.goto(f"{base}/ui/registration")
    page.locator("input[name='traits.email']").fill("short@example.com")
    page.locator("input[name=password]").fill("short")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/registration\?flow="))
    expect(page.locator(".field-error [role=alert]").first).to_be_visible()
    expect(page.locator("input[name='traits.email']")).to_have_value("short@example.com")
    expect(page.locator("input[name=password]")).to_have_value("")
    browser.screenshot("real-registration-failed")
    assert browser.problems == []


def test_index_at_the_prefix_leads_into_the_flows(browser: Browser, real_site: str) -> None:
    """The README's first link: a page, not a 404; its buttons start the flows."""
    base, page = real_site, browser.page
    page.goto(f"{base}/")
    expect(page.get_by_role("heading", name="Sign-in and accounts")).to_be_visible()
    browser.screenshot("real-index")
    page.get_by_role("link", name="Create an account").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/registration\?flow="))
    page.goto(f"{base}/")
    page.get_by_role("link", name="Sign in").click()
    page.wait_for_url(re.compile(r"/\.auth/ui/login\?flow="))
    page.goto(f"{base}/")
    assert browser.problems == []
    page.get_by_role("link", name=f"{urlsplit(base).path}/health/ready").click()
    assert json.loads(page.locator("body").inner_text()) == {"status": "ok"}
