"""Realistic Kratos flow JSON (shapes from kratos-openapi.json) and a fake core for the page tests.

The pages only see what ``GET /self-service/<kind>/flows`` would answer, so these fakes stand in for
the flows engineer's core until (and besides) the real one.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from sidecar import errors

BASE = "http://127.0.0.1:4433/.auth"
CSRF = "bWFza2VkLWNzcmYtdG9rZW4tZm9yLXRlc3Rz"
ISSUED = "2026-11-25T11:00:00Z"
EXPIRES = "2026-11-25T12:00:00Z"
LOGOUT_URL = f"{BASE}/self-service/logout?token=ory_lo_abcdefghijklmnopqrstuvwxyz012345"


def text(id_: int, value: str, type_: str = "info", **context: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id_, "text": value, "type": type_}
    if context:
        out["context"] = context
    return out


def csrf_node() -> dict[str, Any]:
    return {
        "type": "input",
        "group": "default",
        "attributes": {
            "name": "csrf_token",
            "type": "hidden",
            "value": CSRF,
            "required": True,
            "disabled": False,
            "node_type": "input",
        },
        "messages": [],
        "meta": {},
    }


def input_node(
    name: str,
    type_: str,
    group: str,
    label: dict[str, Any] | None,
    *,
    messages: list[dict[str, Any]] | None = None,
    **attrs: Any,
) -> dict[str, Any]:
    return {
        "type": "input",
        "group": group,
        "attributes": {"name": name, "type": type_, "disabled": False, "node_type": "input", **attrs},
        "messages": messages or [],
        "meta": {"label": label} if label else {},
    }


def submit(
    group: str, label: dict[str, Any], *, name: str = "method", value: str | None = None
) -> dict[str, Any]:
    return input_node(name, "submit", group, label, value=value or group)


def qr_png_data_uri() -> str:
    import qrcode

    image = qrcode.make("otpauth://totp/sidecar:ada@example.com?secret=JBSWY3DPEHPK3PXP&issuer=sidecar")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _flow(kind: str, flow_id: str, nodes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    messages = extra.pop("messages", None)
    ui: dict[str, Any] = {
        "action": f"{BASE}/self-service/{kind}?flow={flow_id}",
        "method": "POST",
        "nodes": nodes,
    }
    if messages:
        ui["messages"] = messages
    return {
        "id": flow_id,
        "type": "browser",
        "expires_at": EXPIRES,
        "issued_at": ISSUED,
        "request_url": f"{BASE}/self-service/{kind}/browser",
        "state": extra.pop("state", "choose_method"),
        "ui": ui,
        **extra,
    }


def login_flow(
    flow_id: str = "0b0c9a8e-1111-4a4a-9a9a-000000000001",
    *,
    identifier: str | None = None,
    password_value: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    return_to: str | None = None,
    social: bool = True,
    code: bool = True,
) -> dict[str, Any]:
    nodes = [
        csrf_node(),
        input_node(
            "identifier",
            "text",
            "default",
            text(1070004, "ID"),
            value=identifier,
            required=True,
            autocomplete="username webauthn",
        ),
        input_node(
            "password",
            "password",
            "password",
            text(1070001, "Password"),
            required=True,
            autocomplete="current-password",
            value=password_value,
        ),
        submit("password", text(1010022, "Sign in with password")),
    ]
    if social:
        nodes += [
            submit(
                "oidc",
                text(1010002, "Sign in with GitHub", provider="GitHub"),
                name="provider",
                value="github",
            ),
            submit(
                "oidc",
                text(1010002, "Sign in with Google", provider="Google"),
                name="provider",
                value="google",
            ),
        ]
    if code:
        nodes.append(submit("code", text(1010015, "Send sign in code")))
    extra: dict[str, Any] = {"refresh": False, "requested_aal": "aal1", "messages": messages}
    if return_to:
        extra["return_to"] = return_to
    return _flow("login", flow_id, nodes, **extra)


def registration_flow(
    flow_id: str = "0b0c9a8e-2222-4a4a-9a9a-000000000002",
    *,
    email: str | None = None,
    email_messages: list[dict[str, Any]] | None = None,
    password_messages: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    nodes = [
        csrf_node(),
        input_node(
            "traits.email",
            "email",
            "default",
            text(1070002, "E-Mail", title="E-Mail"),
            value=email,
            required=True,
            autocomplete="email",
            messages=email_messages,
        ),
        input_node(
            "traits.newsletter",
            "checkbox",
            "default",
            text(1070002, "Send me product news", title="Send me product news"),
        ),
        input_node(
            "password",
            "password",
            "password",
            text(1070001, "Password"),
            required=True,
            autocomplete="new-password",
            messages=password_messages,
        ),
        submit("password", text(1040001, "Sign up")),
        submit(
            "oidc", text(1040002, "Sign up with GitHub", provider="GitHub"), name="provider", value="github"
        ),
    ]
    return _flow("registration", flow_id, nodes)


def settings_flow(
    flow_id: str = "0b0c9a8e-3333-4a4a-9a9a-000000000003", *, saved: bool = False
) -> dict[str, Any]:
    secrets = ["7cbxa2uq", "hjak3q5z", "p2dknrjf", "u6s3q7wd", "k9x2mfe8", "z4tqp0va"]
    nodes = [
        csrf_node(),
        input_node(
            "traits.email",
            "email",
            "profile",
            text(1070002, "E-Mail", title="E-Mail"),
            value="ada@example.com",
            required=True,
            autocomplete="email",
        ),
        submit("profile", text(1070003, "Save")),
        input_node(
            "password",
            "password",
            "password",
            text(1070001, "Password"),
            required=True,
            autocomplete="new-password",
        ),
        submit("password", text(1070003, "Save")),
        {
            "type": "img",
            "group": "totp",
            "attributes": {
                "id": "totp_qr",
                "src": qr_png_data_uri(),
                "width": 256,
                "height": 256,
                "node_type": "img",
            },
            "messages": [],
            "meta": {"label": text(1050005, "Authenticator app QR code")},
        },
        {
            "type": "text",
            "group": "totp",
            "attributes": {
                "id": "totp_secret_key",
                "text": text(1050006, "JBSWY3DPEHPK3PXP", secret="JBSWY3DPEHPK3PXP"),
                "node_type": "text",
            },
            "messages": [],
            "meta": {
                "label": text(
                    1050017, "This is your authenticator app secret. Use it if you can not scan the QR code."
                )
            },
        },
        input_node(
            "totp_code",
            "text",
            "totp",
            text(1070006, "Verify code"),
            required=True,
            autocomplete="one-time-code",
            pattern="[0-9]{6}",
            maxlength=6,
        ),
        submit("totp", text(1070003, "Save")),
        {
            "type": "text",
            "group": "lookup_secret",
            "attributes": {
                "id": "lookup_secret_codes",
                "text": text(
                    1050015,
                    ", ".join(secrets),
                    secrets=[text(1050009, s, secret=s) for s in secrets],
                ),
                "node_type": "text",
            },
            "messages": [],
            "meta": {
                "label": text(
                    1050010, "These are your back up recovery codes. Please keep them in a safe place!"
                )
            },
        },
        input_node(
            "lookup_secret_confirm",
            "submit",
            "lookup_secret",
            text(1050011, "Confirm backup recovery codes"),
            value="true",
        ),
        {
            "type": "script",
            "group": "webauthn",
            "attributes": {
                "id": "webauthn_script",
                "src": f"{BASE}/.well-known/ory/webauthn.js",
                "async": True,
                "referrerpolicy": "no-referrer",
                "crossorigin": "anonymous",
                "integrity": "",
                "type": "text/javascript",
                "nonce": "",
                "node_type": "script",
            },
            "messages": [],
            "meta": {},
        },
        {
            "type": "script",
            "group": "webauthn",
            "attributes": {
                "id": "evil_script",
                "src": "https://evil.example/steal.js",
                "async": True,
                "referrerpolicy": "no-referrer",
                "crossorigin": "anonymous",
                "integrity": "",
                "type": "text/javascript",
                "nonce": "",
                "node_type": "script",
            },
            "messages": [],
            "meta": {},
        },
        input_node(
            "webauthn_register_displayname",
            "text",
            "webauthn",
            text(1050013, "Name of the security key"),
        ),
        input_node(
            "webauthn_register_trigger",
            "button",
            "webauthn",
            text(1050012, "Add security key"),
            value="",
            onclickTrigger="oryWebAuthnRegistration",
        ),
        {
            "type": "div",
            "group": "webauthn",
            "attributes": {
                "id": "webauthn_widget",
                "class": "widget",
                "data": {"sitekey": "abc123", "Bad Key!": "x"},
                "node_type": "div",
            },
            "messages": [],
            "meta": {},
        },
        {
            "type": "a",
            "group": "oidc",
            "attributes": {
                "id": "oidc_help",
                "href": f"{BASE}/ui/welcome",
                "title": text(1070009, "Continue"),
                "node_type": "a",
            },
            "messages": [],
            "meta": {},
        },
        submit("oidc", text(1050002, "Link GitHub", provider="GitHub"), name="link", value="github"),
    ]
    return _flow(
        "settings",
        flow_id,
        nodes,
        state="success" if saved else "show_form",
        messages=[text(1050001, "Your changes have been saved!", "success")] if saved else None,
        identity={
            "id": "9f425a8d-7efc-4768-8f23-7647a74fdf13",
            "schema_id": "default",
            "schema_url": f"{BASE}/schemas/ZGVmYXVsdA",
            "traits": {"email": "ada@example.com"},
            "state": "active",
        },
    )


def recovery_flow(
    flow_id: str = "0b0c9a8e-4444-4a4a-9a9a-000000000004", *, sent: bool = False
) -> dict[str, Any]:
    if not sent:
        nodes = [
            csrf_node(),
            input_node("email", "email", "code", text(1070007, "Email"), required=True, autocomplete="email"),
            submit("code", text(1070005, "Submit"), value="code"),
        ]
        return _flow("recovery", flow_id, nodes)
    nodes = [
        csrf_node(),
        input_node(
            "code",
            "text",
            "code",
            text(1070010, "Recovery code"),
            required=True,
            autocomplete="one-time-code",
        ),
        input_node("method", "hidden", "code", None, value="code"),
        submit("code", text(1070005, "Submit"), value="code"),
        input_node("email", "submit", "code", text(1070008, "Resend code"), value="ada@example.com"),
    ]
    return _flow(
        "recovery",
        flow_id,
        nodes,
        state="sent_email",
        messages=[
            text(
                1060003,
                "An email containing a recovery code has been sent to the email address you provided. "
                "If you have not received an email, check the spelling of the address and make sure to use "
                "the address you registered with.",
            )
        ],
    )


def verification_flow(flow_id: str = "0b0c9a8e-5555-4a4a-9a9a-000000000005") -> dict[str, Any]:
    nodes = [
        csrf_node(),
        {
            "type": "a",
            "group": "code",
            "attributes": {
                "id": "continue",
                "href": f"{BASE}/ui/welcome",
                "title": text(1070009, "Continue"),
                "node_type": "a",
            },
            "messages": [],
            "meta": {},
        },
    ]
    return _flow(
        "verification",
        flow_id,
        nodes,
        state="passed_challenge",
        messages=[text(1080002, "You successfully verified your email address.", "success")],
    )


def flow_error(error_id: str = "6f3a2f3e-0000-4000-8000-00000000e001") -> dict[str, Any]:
    return {
        "id": error_id,
        "error": {
            "id": "security_csrf_violation",
            "code": 403,
            "status": "Forbidden",
            "reason": "Please retry the flow and optionally clear your cookies.",
            "message": "the request was rejected to protect you from Cross-Site-Request-Forgery",
        },
        "created_at": ISSUED,
        "updated_at": ISSUED,
    }


def session(email: str = "ada@example.com") -> dict[str, Any]:
    return {
        "id": "1d3a5e4a-5b6c-4d7e-8f90-1234567890ab",
        "active": True,
        "expires_at": "2026-11-26T11:00:00Z",
        "authenticated_at": ISSUED,
        "authenticator_assurance_level": "aal1",
        "authentication_methods": [{"method": "password", "aal": "aal1", "completed_at": ISSUED}],
        "issued_at": ISSUED,
        "identity": {
            "id": "9f425a8d-7efc-4768-8f23-7647a74fdf13",
            "schema_id": "default",
            "schema_url": f"{BASE}/schemas/ZGVmYXVsdA",
            "state": "active",
            "traits": {"email": email},
        },
    }


@dataclass
class FakeCore:
    """The four callables of ``page_routes``, backed by dicts. ``raises`` maps a flow id to an error."""

    flows: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    raises: dict[str, errors.SidecarError] = field(default_factory=dict)
    errors_by_id: dict[str, dict[str, Any]] = field(default_factory=dict)
    signed_in: dict[str, Any] | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def add(self, kind: str, flow: dict[str, Any]) -> str:
        self.flows[flow["id"]] = (kind, flow)
        return str(flow["id"])

    async def fetch_flow(self, kind: str, flow_id: str, request: Request) -> dict[str, Any]:
        self.calls.append((kind, flow_id))
        if flow_id in self.raises:
            raise self.raises[flow_id]
        found = self.flows.get(flow_id)
        if found is None or found[0] != kind:
            raise errors.NotFound()
        return found[1]

    async def fetch_error(self, error_id: str) -> dict[str, Any]:
        if error_id not in self.errors_by_id:
            raise errors.NotFound()
        return self.errors_by_id[error_id]

    async def whoami(self, request: Request) -> dict[str, Any] | None:
        return self.signed_in

    async def logout_url(self, request: Request) -> str | None:
        return LOGOUT_URL if self.signed_in else None
