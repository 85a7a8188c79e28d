"""UI texts with Kratos' stable numeric ids (kratos-api.md §5; English from ory/kratos ``text/``).

Clients must key on ``id``; the English is for people. 4000429 is sidecar-only (brute-force
lockout) and sits in the generic-validation range where Kratos defines no such id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

from sidecar.identity.model import utcnow

TextType = Literal["info", "error", "success"]


class Text(TypedDict):
    id: int
    text: str
    type: TextType
    context: NotRequired[dict[str, Any]]


def text(id_: int, message: str, type_: TextType = "info", **context: Any) -> Text:
    out: Text = {"id": id_, "text": message, "type": type_}
    if context:
        out["context"] = context
    return out


# --- info and labels ---------------------------------------------------------------------------
LOGIN_REAUTH = 1010003
LOGIN_MFA = 1010004
LOGIN_WITH_PASSWORD = 1010022
REGISTRATION_SIGN_UP = 1040001
LABEL_PASSWORD = 1070001
LABEL_TRAIT = 1070002
LABEL_IDENTIFIER = 1070004

# --- validation errors -------------------------------------------------------------------------
GENERIC = 4000001
REQUIRED = 4000002
INVALID_CREDENTIALS = 4000006
DUPLICATE_CREDENTIALS = 4000007
PASSWORD_MIN_LENGTH = 4000032
PASSWORD_MAX_LENGTH = 4000033
RATE_LIMITED = 4000429
LOGIN_FLOW_EXPIRED = 4010001
LOGIN_NO_STRATEGY = 4010002
REGISTRATION_NO_STRATEGY = 4010003
ACCOUNT_DISABLED = 4010011
REGISTRATION_FLOW_EXPIRED = 4040001


def login_reauth() -> Text:
    return text(LOGIN_REAUTH, "Please confirm this action by verifying that it is you.")


def login_mfa() -> Text:
    return text(LOGIN_MFA, "Please complete the second authentication challenge.")


def login_with_password() -> Text:
    return text(LOGIN_WITH_PASSWORD, "Sign in with password")


def sign_up() -> Text:
    return text(REGISTRATION_SIGN_UP, "Sign up")


def label_password() -> Text:
    return text(LABEL_PASSWORD, "Password")


def label_identifier() -> Text:
    return text(LABEL_IDENTIFIER, "ID")


def label_trait(title: str) -> Text:
    return text(LABEL_TRAIT, title, title=title)


def generic(reason: str) -> Text:
    return text(GENERIC, reason, "error", reason=reason)


def required(prop: str) -> Text:
    return text(REQUIRED, f"Property {prop} is missing.", "error", property=prop)


def invalid_credentials() -> Text:
    return text(
        INVALID_CREDENTIALS,
        "The provided credentials are invalid, check for spelling mistakes in your password or "
        "username, email address, or phone number.",
        "error",
    )


def duplicate_credentials() -> Text:
    return text(
        DUPLICATE_CREDENTIALS,
        "An account with the same identifier (email, phone, username, ...) exists already.",
        "error",
    )


def rate_limited(retry_after: int) -> Text:
    return text(
        RATE_LIMITED,
        f"Too many attempts, please wait {retry_after} seconds and try again.",
        "error",
        retry_after=retry_after,
    )


def account_disabled() -> Text:
    return text(ACCOUNT_DISABLED, "Your account is disabled.", "error")


def no_strategy(flow: str) -> Text:
    if flow == "login":
        what, id_ = "log you in with", LOGIN_NO_STRATEGY
    else:
        what, id_ = "sign you up with", REGISTRATION_NO_STRATEGY
    return text(id_, f"Could not find a strategy to {what}. Did you fill out the form correctly?", "error")


def flow_expired(flow: str, expired_at: datetime) -> Text:
    id_ = LOGIN_FLOW_EXPIRED if flow == "login" else REGISTRATION_FLOW_EXPIRED
    minutes = (utcnow() - expired_at).total_seconds() / 60
    return text(
        id_,
        f"The {flow} flow expired {minutes:.2f} minutes ago, please try again.",
        "error",
        expired_at=expired_at.isoformat(),
        expired_at_unix=int(expired_at.timestamp()),
    )
