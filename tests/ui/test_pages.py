"""The built-in pages, rendered over fake flows through the ASGI interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from sidecar import errors
from sidecar.config.model import SelfService
from sidecar.ui.pages import page_routes
from tests.ui import fakes

CSP = (
    "default-src 'self'; frame-ancestors 'none'; form-action 'self' http://127.0.0.1:4433; "
    "img-src 'self' data:; script-src 'self'; style-src 'self'; base-uri 'none'; object-src 'none'"
)


class Elements(HTMLParser):
    """Every start tag with its attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str, **match: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in match.items())]

    def one(self, tag: str, **match: str) -> dict[str, str | None]:
        found = self.find(tag, **match)
        assert len(found) == 1, (tag, match, found)
        return found[0]


def make_app(core: fakes.FakeCore, **kwargs: Any) -> Starlette:
    routes = page_routes(
        fetch_flow=core.fetch_flow,
        fetch_error=core.fetch_error,
        whoami=core.whoami,
        logout_url=core.logout_url,
        public_base_url=fakes.BASE,
        **kwargs,
    )
    return Starlette(routes=[Mount("/.auth", routes=routes)])


@pytest.fixture
def core() -> fakes.FakeCore:
    return fakes.FakeCore()


@pytest.fixture
async def client(core: fakes.FakeCore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(core))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:4433") as c:
        yield c


def assert_labelled(page: Elements) -> None:
    """Every visible input has exactly one ``<label for>`` and ids are unique."""
    ids = [a["id"] for _, a in page.tags if a.get("id")]
    assert len(ids) == len(set(ids)), ids
    label_for = [a["for"] for a in page.find("label")]
    for attrs in page.find("input"):
        if attrs.get("type") != "hidden":
            assert label_for.count(attrs["id"]) == 1, attrs


@pytest.mark.parametrize("kind", ["login", "registration", "settings", "recovery", "verification"])
async def test_without_flow_redirects_to_init_keeping_params(client: httpx.AsyncClient, kind: str) -> None:
    r = await client.get(
        f"/.auth/ui/{kind}", params={"return_to": "http://127.0.0.1:4433/app?x=1", "aal": "aal2"}
    )
    assert r.status_code == 303
    assert r.headers["location"] == (
        f"/.auth/self-service/{kind}/browser?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fapp%3Fx%3D1&aal=aal2"
    )
    assert r.headers["cache-control"] == "no-store"


async def test_login_page_draws_every_node(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    flow_id = core.add(
        "login",
        fakes.login_flow(
            identifier="ada@example.com",
            password_value="hunter2-secret",
            messages=[fakes.text(4000006, "The provided credentials are invalid.", "error")],
            return_to="http://127.0.0.1:4433/app",
        ),
    )
    r = await client.get("/.auth/ui/login", params={"flow": flow_id})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "hunter2-secret" not in r.text
    page = Elements(r.text)
    form = page.one("form")
    assert form["action"] == f"{fakes.BASE}/self-service/login?flow={flow_id}"
    assert form["method"] == "post"
    assert page.one("input", name="csrf_token")["value"] == fakes.CSRF
    identifier = page.one("input", name="identifier")
    assert identifier["value"] == "ada@example.com"
    assert identifier["autocomplete"] == "username webauthn"
    assert "required" in identifier
    password = page.one("input", name="password")
    assert password["type"] == "password"
    assert "value" not in password
    assert password["autocomplete"] == "current-password"
    assert_labelled(page)
    # The password button validates (only its own inputs are needed); others skip the browser check.
    assert "formnovalidate" not in page.one("button", name="method", value="password")
    assert "formnovalidate" in page.one("button", name="method", value="code")
    assert "formnovalidate" in page.one("button", name="provider", value="github")
    assert page.one("button", name="provider", value="google")["type"] == "submit"
    assert '<p class="msg msg-error" role="alert" data-message-id="4000006">' in r.text
    # Groups in Kratos order: password before social sign-in before codes.
    order = [a.get("value") for t, a in page.tags if t == "button"]
    assert order == ["password", "github", "google", "code"]
    # Links keep the flow's return_to.
    assert page.one(
        "a", href="/.auth/self-service/registration/browser?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fapp"
    )
    assert page.one(
        "a", href="/.auth/self-service/recovery/browser?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fapp"
    )


async def test_registration_page_shows_node_messages(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    flow_id = core.add(
        "registration",
        fakes.registration_flow(
            email="ada@example.com",
            email_messages=[
                fakes.text(4000007, "An account with the same identifier exists already.", "error")
            ],
            password_messages=[
                fakes.text(4000032, "The password must be at least 8 characters long.", "error")
            ],
        ),
    )
    r = await client.get("/.auth/ui/registration", params={"flow": flow_id})
    assert r.status_code == 200
    page = Elements(r.text)
    email = page.one("input", name="traits.email")
    assert email["type"] == "email"
    assert email["aria-invalid"] == "true"
    assert page.one("p", id=f"{email['id']}-msg")["role"] == "alert"
    checkbox = page.one("input", name="traits.newsletter")
    assert checkbox["type"] == "checkbox" and checkbox["value"] == "true"
    assert "The password must be at least 8 characters long." in r.text
    assert page.one("input", name="password")["autocomplete"] == "new-password"
    assert page.one("a", href="/.auth/self-service/login/browser")
    assert_labelled(page)


async def test_settings_page_has_one_form_per_method_and_every_node_type(
    client: httpx.AsyncClient, core: fakes.FakeCore
) -> None:
    flow_id = core.add("settings", fakes.settings_flow(saved=True))
    r = await client.get("/.auth/ui/settings", params={"flow": flow_id})
    assert r.status_code == 200
    page = Elements(r.text)
    forms = page.find("form")
    headings = [
        "Profile",
        "Change password",
        "Linked accounts",
        "Authenticator app",
        "Backup codes",
        "Security keys",
    ]
    assert len(forms) == len(headings)
    for heading in headings:
        assert f"<h2>{heading}</h2>" in r.text
    # Each form carries the CSRF token, since each is submitted alone.
    assert len(page.find("input", name="csrf_token", value=fakes.CSRF)) == len(headings)
    assert "Signed in as ada@example.com" in r.text
    assert '<p class="msg msg-success" role="status" data-message-id="1050001">' in r.text
    img = page.one("img", id="totp_qr")
    assert str(img["src"]).startswith("data:image/png;base64,")
    assert (img["width"], img["height"]) == ("256", "256")
    assert img["alt"] == "Authenticator app QR code"
    assert '<code class="secret">JBSWY3DPEHPK3PXP</code>' in r.text
    assert r.text.count("<li><code>") == 6
    assert page.one("input", name="totp_code")["pattern"] == "[0-9]{6}"
    assert page.one("input", name="totp_code")["maxlength"] == "6"
    assert page.one("script", id="webauthn_script")["src"] == f"{fakes.BASE}/.well-known/ory/webauthn.js"
    assert not page.find("script", id="evil_script")
    assert "evil.example" not in r.text
    button = page.one("button", name="webauthn_register_trigger")
    assert button["type"] == "button" and button["data-onclick-trigger"] == "oryWebAuthnRegistration"
    div = page.one("div", id="webauthn_widget")
    assert div["class"] == "widget" and div["data-sitekey"] == "abc123"
    assert "Bad Key" not in r.text
    assert page.one("a", id="oidc_help")["href"] == f"{fakes.BASE}/ui/welcome"
    assert page.one("button", name="link", value="github")
    assert page.one("button", name="lookup_secret_confirm", value="true")
    assert page.one("a", href="/.auth/ui/welcome")
    assert_labelled(page)


async def test_recovery_and_verification_pages(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    flow_id = core.add("recovery", fakes.recovery_flow(sent=True))
    r = await client.get("/.auth/ui/recovery", params={"flow": flow_id})
    assert r.status_code == 200
    assert r.headers["referrer-policy"] == "no-referrer"
    page = Elements(r.text)
    assert page.one("input", name="code")["autocomplete"] == "one-time-code"
    assert page.one("input", name="method", type="hidden")["value"] == "code"
    resend = page.one("button", name="email", value="ada@example.com")
    assert "formnovalidate" in resend  # resending needs no code typed
    assert 'data-message-id="1060003"' in r.text

    flow_id = core.add("verification", fakes.verification_flow())
    r = await client.get("/.auth/ui/verification", params={"flow": flow_id})
    assert r.status_code == 200
    assert r.headers["referrer-policy"] == "no-referrer"
    assert Elements(r.text).one("a", id="continue")["href"] == f"{fakes.BASE}/ui/welcome"
    assert "You successfully verified your email address." in r.text


@pytest.mark.parametrize(
    ("path", "referrer"),
    [
        ("/.auth/ui/login", "strict-origin-when-cross-origin"),
        ("/.auth/ui/registration", "strict-origin-when-cross-origin"),
        ("/.auth/ui/settings", "strict-origin-when-cross-origin"),
        ("/.auth/ui/recovery", "no-referrer"),
        ("/.auth/ui/verification", "no-referrer"),
        ("/.auth/ui/error", "no-referrer"),
        ("/.auth/ui/welcome", "strict-origin-when-cross-origin"),
    ],
)
async def test_security_headers(
    client: httpx.AsyncClient, core: fakes.FakeCore, path: str, referrer: str
) -> None:
    for kind, flow in [
        ("login", fakes.login_flow()),
        ("registration", fakes.registration_flow()),
        ("settings", fakes.settings_flow()),
        ("recovery", fakes.recovery_flow()),
        ("verification", fakes.verification_flow()),
    ]:
        core.add(kind, flow)
    core.errors_by_id["e1"] = fakes.flow_error("e1")
    core.signed_in = fakes.session()
    kind = path.rsplit("/", 1)[1]
    params = {"id": "e1"} if kind == "error" else {}
    if kind in core.__dict__ or any(k == kind for k, _ in core.flows.values()):
        params = {"flow": next(i for i, (k, _) in core.flows.items() if k == kind)}
    r = await client.get(path, params=params)
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == referrer
    assert r.headers["cache-control"] == "no-store"
    # No inline script or style: the CSP would block them.
    assert " style=" not in r.text and "<style" not in r.text
    assert "<script>" not in r.text and " onclick=" not in r.text


async def test_form_action_lists_return_url_origins(core: fakes.FakeCore) -> None:
    selfservice = SelfService(
        default_browser_return_url="https://app.example.com/home",
        allowed_return_urls=[
            "https://*.example.org/",
            "https://evil.example/'; script-src *",
            "https://bad host';/",
        ],
    )
    app = make_app(core, selfservice=selfservice, form_action_origins=["https://github.com/login/oauth"])
    core.add("login", fakes.login_flow())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4433"
    ) as c:
        r = await c.get("/.auth/ui/login", params={"flow": fakes.login_flow()["id"]})
    csp = r.headers["content-security-policy"]
    assert (
        "form-action 'self' http://127.0.0.1:4433 https://app.example.com https://*.example.org "
        "https://evil.example https://github.com;" in csp
    )
    assert "script-src *" not in csp
    assert "bad" not in csp


async def test_expired_flow_goes_to_its_replacement(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    core.raises["old"] = errors.FlowExpired(extra={"use_flow_id": "new-flow"})
    r = await client.get("/.auth/ui/login", params={"flow": "old"})
    assert r.status_code == 303
    assert r.headers["location"] == "/.auth/ui/login?flow=new-flow"


async def test_expired_flow_without_replacement_starts_over(
    client: httpx.AsyncClient, core: fakes.FakeCore
) -> None:
    core.raises["old"] = errors.FlowExpired(details={"return_to": "http://127.0.0.1:4433/app"})
    r = await client.get("/.auth/ui/registration", params={"flow": "old"})
    assert r.status_code == 303
    assert r.headers["location"] == (
        "/.auth/self-service/registration/browser?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fapp"
    )


async def test_unknown_flow_starts_over(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/.auth/ui/recovery", params={"flow": "nope", "return_to": "http://127.0.0.1:4433/x"}
    )
    assert r.status_code == 303
    assert (
        r.headers["location"]
        == "/.auth/self-service/recovery/browser?return_to=http%3A%2F%2F127.0.0.1%3A4433%2Fx"
    )
    assert r.headers["referrer-policy"] == "no-referrer"


async def test_csrf_violation_is_a_readable_page(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    core.raises["f"] = errors.CSRFViolation()
    r = await client.get("/.auth/ui/login", params={"flow": "f"})
    assert r.status_code == 403
    assert "Cross-Site-Request-Forgery" in r.text
    assert r.headers["content-security-policy"] == CSP
    page = Elements(r.text)
    assert page.one("a", href="/.auth/self-service/login/browser")
    assert page.one("p", role="alert")


@pytest.mark.parametrize(
    ("exc", "location"),
    [
        (errors.SessionInactive(), "/.auth/self-service/login/browser"),
        (errors.SessionAlreadyAvailable(), "/.auth/ui/welcome"),
        (
            errors.RefreshRequired(
                extra={"redirect_browser_to": f"{fakes.BASE}/self-service/login/browser?refresh=true"}
            ),
            f"{fakes.BASE}/self-service/login/browser?refresh=true",
        ),
    ],
    ids=["signed-out", "signed-in", "redirect_browser_to"],
)
async def test_session_errors_redirect(
    client: httpx.AsyncClient, core: fakes.FakeCore, exc: errors.SidecarError, location: str
) -> None:
    core.raises["f"] = exc
    r = await client.get("/.auth/ui/settings", params={"flow": "f"})
    assert r.status_code == 303
    assert r.headers["location"] == location


async def test_backend_outage_is_an_error_page(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    core.raises["f"] = errors.ServiceUnavailable()
    r = await client.get("/.auth/ui/login", params={"flow": "f"})
    assert r.status_code == 503
    assert "Temporarily unavailable" in r.text


async def test_error_page(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    core.errors_by_id["e1"] = fakes.flow_error("e1")
    r = await client.get("/.auth/ui/error", params={"id": "e1"})
    assert r.status_code == 200
    assert "Please retry the flow and optionally clear your cookies." in r.text
    assert "Error code 403" in r.text
    assert Elements(r.text).one("a", href="/.auth/self-service/login/browser")
    r = await client.get("/.auth/ui/error", params={"id": "unknown"})
    assert r.status_code == 404
    r = await client.get("/.auth/ui/error")
    assert r.status_code == 404


async def test_welcome_page(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    r = await client.get("/.auth/ui/welcome")
    assert r.status_code == 303
    assert r.headers["location"] == "/.auth/self-service/login/browser"
    core.signed_in = fakes.session("grace@example.com")
    r = await client.get("/.auth/ui/welcome")
    assert r.status_code == 200
    page = Elements(r.text)
    assert '<strong id="identifier">grace@example.com</strong>' in r.text
    assert page.one("a", id="logout")["href"] == (
        f"{fakes.BASE}/self-service/logout?token=ory_lo_abcdefghijklmnopqrstuvwxyz012345"
    )
    assert page.one("a", href="/.auth/self-service/settings/browser")


async def test_untrusted_values_are_escaped(client: httpx.AsyncClient, core: fakes.FakeCore) -> None:
    flow = fakes.login_flow(
        identifier='"><script>alert(1)</script>',
        messages=[fakes.text(4000001, "<img src=x onerror=alert(1)>", "error")],
    )
    flow["ui"]["nodes"].append(
        {
            "type": "a",
            "group": "default",
            "attributes": {
                "id": "x",
                "href": "javascript:alert(1)",
                "title": fakes.text(1, "x"),
                "node_type": "a",
            },
            "messages": [],
            "meta": {},
        }
    )
    flow["ui"]["action"] = "javascript:alert(1)"
    core.add("login", flow)
    r = await client.get("/.auth/ui/login", params={"flow": flow["id"]})
    assert r.status_code == 200
    assert "<script>alert" not in r.text
    assert "<img src=x" not in r.text
    assert "javascript:" not in r.text
    assert Elements(r.text).one("input", name="identifier")["value"] == '"><script>alert(1)</script>'


async def test_static_files(client: httpx.AsyncClient) -> None:
    r = await client.get("/.auth/ui/login", params={})
    r = await client.get("/.auth/ui/static/style.css")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert r.headers["x-content-type-options"] == "nosniff"
    r = await client.get("/.auth/ui/static/nodes.js")
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    r = await client.get("/.auth/ui/static/..%2Fpages.py")
    assert r.status_code == 404


async def test_templates_dir_overrides_one_template(core: fakes.FakeCore, tmp_path: Path) -> None:
    (tmp_path / "error.html").write_text(
        '{% extends "base.html" %}{% block content %}custom: {{ message }}{% endblock %}'
    )
    app = make_app(core, templates_dir=str(tmp_path))
    core.add("login", fakes.login_flow())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4433"
    ) as c:
        r = await c.get("/.auth/ui/error", params={"id": "missing"})
        assert "custom: This error does not exist" in r.text
        r = await c.get("/.auth/ui/login", params={"flow": fakes.login_flow()["id"]})
        assert r.status_code == 200 and "csrf_token" in r.text


async def test_index_at_the_prefix_root_links_the_enabled_flows() -> None:
    """The README's first link, ``/.auth/``: the flows, health and the API, never a 404."""
    selfservice = SelfService.model_validate(
        {"flows": {"recovery": {"enabled": True}, "registration": {"enabled": False}}}
    )
    app = make_app(fakes.FakeCore(), selfservice=selfservice)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:4433"
    ) as c:
        r = await c.get("/.auth/")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP
    page = Elements(r.text)
    hrefs = [a["href"] for a in page.find("a")]
    assert "/.auth/self-service/login/browser" in hrefs
    assert "/.auth/self-service/recovery/browser" in hrefs
    assert "/.auth/self-service/registration/browser" not in hrefs  # disabled
    assert "/.auth/self-service/verification/browser" not in hrefs  # disabled by default
    for endpoint in ("/.auth/health/ready", "/.auth/health/alive", "/.auth/version"):
        assert endpoint in hrefs
    assert fakes.BASE in r.text  # where to point the SDK
