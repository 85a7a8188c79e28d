"""The words on the pages that are not in the flow: titles, subtitles, form and error headings.

The flows' own texts (labels, messages, with Kratos' ids) are ``sidecar.flows.messages``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sidecar.ui.node_view import as_mapping

# Settings shows one form per method (Kratos submits one method at a time); these are their headings.
GROUP_HEADINGS = {
    "profile": "Profile",
    "password": "Change password",
    "oidc": "Linked accounts",
    "saml": "Linked accounts",
    "code": "Sign-in codes",
    "totp": "Authenticator app",
    "lookup_secret": "Backup codes",
    "webauthn": "Security keys",
    "passkey": "Passkeys",
}


def flow_title(kind: str, flow: Mapping[str, Any]) -> str:
    if kind == "login":
        if flow.get("requested_aal") == "aal2":
            return "Second factor"
        return "Confirm it's you" if flow.get("refresh") else "Sign in"
    return {
        "registration": "Create an account",
        "settings": "Account settings",
        "recovery": "Recover your account",
        "verification": "Verify your email address",
    }.get(kind, kind.title())


def flow_subtitle(kind: str, flow: Mapping[str, Any], identity: Mapping[str, Any] | None) -> str | None:
    if kind == "settings" and identity is not None:
        traits = as_mapping(identity.get("traits"))
        who = primary_identifier(traits)
        return f"Signed in as {who}" if who else None
    if kind == "login" and flow.get("refresh"):
        return "Please enter your password again to continue."
    return None


def primary_identifier(traits: Mapping[str, Any]) -> str | None:
    for key in ("email", "username", "phone"):
        if isinstance(traits.get(key), str):
            return str(traits[key])
    for value in traits.values():
        if isinstance(value, str):
            return value
    return None


def readable_time(value: Any) -> str:
    """``2026-11-26T11:00:00Z`` → ``26 Nov 2026, 11:00 UTC`` (the raw value stays in ``datetime``)."""
    if not isinstance(value, str):
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%d %b %Y, %H:%M UTC").lstrip("0")


def error_title(code: int) -> str:
    return {
        400: "The request was not valid",
        401: "Please sign in",
        403: "This request was blocked",
        404: "Not found",
        410: "This page has expired",
        429: "Too many attempts",
        503: "Temporarily unavailable",
    }.get(code, "Something went wrong")
