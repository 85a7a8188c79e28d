"""The words on the pages that are not in the flow: titles, subtitles, form and error headings.

The flows' own texts (labels, messages, with Kratos' ids) are ``sidecar.flows.messages``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sidecar.i18n import N_
from sidecar.ui.node_view import as_mapping

SIGNED_IN_AS = N_("Signed in as {who}")

# Settings shows one form per method (Kratos submits one method at a time); these are their headings.
GROUP_HEADINGS = {
    "profile": N_("Profile"),
    "password": N_("Change password"),
    "oidc": N_("Linked accounts"),
    "saml": N_("Linked accounts"),
    "code": N_("Sign-in codes"),
    "totp": N_("Authenticator app"),
    "lookup_secret": N_("Backup codes"),
    "webauthn": N_("Security keys"),
    "passkey": N_("Passkeys"),
}


def flow_title(kind: str, flow: Mapping[str, Any]) -> str:
    if kind == "login":
        if flow.get("requested_aal") == "aal2":
            return N_("Second factor")
        return N_("Confirm it's you") if flow.get("refresh") else N_("Sign in")
    return {
        "registration": N_("Create an account"),
        "settings": N_("Account settings"),
        "recovery": N_("Recover your account"),
        "verification": N_("Verify your email address"),
    }.get(kind, kind.title())


def flow_subtitle(
    kind: str,
    flow: Mapping[str, Any],
    identity: Mapping[str, Any] | None,
    gettext: Callable[[str], str] = str,
) -> str | None:
    if kind == "settings" and identity is not None:
        traits = as_mapping(identity.get("traits"))
        who = primary_identifier(traits)
        # The subtitle is translated as a whole (word order differs), then filled in.
        return gettext(SIGNED_IN_AS).format(who=who) if who else None
    if kind == "login" and flow.get("refresh"):
        return gettext(N_("Please enter your password again to continue."))
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
        400: N_("The request was not valid"),
        401: N_("Please sign in"),
        403: N_("This request was blocked"),
        404: N_("Not found"),
        410: N_("This page has expired"),
        429: N_("Too many attempts"),
        503: N_("Temporarily unavailable"),
    }.get(code, "Something went wrong")
