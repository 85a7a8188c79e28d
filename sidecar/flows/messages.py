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


# --- recovery and verification (Kratos text/message_recovery.go, message_verification.go) ------
_SENT_HINT = (
    "If you have not received an email, check the spelling of the address and make sure to use "
    "the address you registered with."
)


def recovery_successful(privileged_until: datetime) -> Text:
    minutes = (privileged_until - utcnow()).total_seconds() / 60
    return text(
        1060001,
        "You successfully recovered your account. Please change your password or set up an alternative "
        f"login method (e.g. social sign in) within the next {minutes:.2f} minutes.",
        "success",
        privilegedSessionExpiresAt=privileged_until.isoformat().replace("+00:00", "Z"),
    )


def recovery_link_sent() -> Text:
    return text(
        1060002,
        f"An email containing a recovery link has been sent to the email address you provided. {_SENT_HINT}",
    )


def recovery_code_sent() -> Text:
    return text(
        1060003,
        f"An email containing a recovery code has been sent to the email address you provided. {_SENT_HINT}",
    )


def verification_link_sent() -> Text:
    return text(
        1080001,
        "An email containing a verification link has been sent to the email address you provided. "
        + _SENT_HINT,
    )


def verification_successful() -> Text:
    return text(1080002, "You successfully verified your email address.", "success")


def verification_code_sent() -> Text:
    return text(
        1080003,
        "An email containing a verification code has been sent to the email address you provided. "
        + _SENT_HINT,
    )


def label_submit() -> Text:
    return text(1070005, "Submit")


def label_verify_code() -> Text:
    return text(1070006, "Verify code")


def label_email() -> Text:
    return text(1070007, "Email")


def label_resend_code() -> Text:
    return text(1070008, "Resend code")


def label_continue() -> Text:
    return text(1070009, "Continue")


def label_recovery_code() -> Text:
    return text(1070010, "Recovery code")


def label_verification_code() -> Text:
    return text(1070011, "Verification code")


def challenge_no_strategy(flow: str) -> Text:
    """4010004 (recovery) / 4010005 (verification): no strategy took the submitted ``method``."""
    if flow == "recovery":
        return text(
            4010004,
            "Could not find a strategy to recover your account with. Did you fill out the form correctly?",
            "error",
        )
    return text(
        4010005,
        "Could not find a strategy to verify your account with. Did you fill out the form correctly?",
        "error",
    )


_RETRY_SUCCESS = {"login": 4010007, "registration": 4040002, "recovery": 4060001, "verification": 4070002}


def retry_success(flow: str) -> Text:
    """4010007 / 4040002 / 4060001 / 4070002: a finished flow submitted again."""
    return text(
        _RETRY_SUCCESS[flow],
        "The request was already completed successfully and can not be retried.",
        "error",
    )


def challenge_token_invalid(flow: str) -> Text:
    """4060004 / 4070001: a link token that is unknown, used, or for another flow."""
    return text(
        4060004 if flow == "recovery" else 4070001,
        f"The {flow} token is invalid or has already been used. Please retry the flow.",
        "error",
    )


def challenge_code_invalid(flow: str) -> Text:
    """4060006 / 4070006: a code that is unknown, used, or for another flow."""
    return text(
        4060006 if flow == "recovery" else 4070006,
        f"The {flow} code is invalid or has already been used. Please try again.",
        "error",
    )


def challenge_flow_expired(flow: str, expired_at: datetime) -> Text:
    """4060005 / 4070005, on the replacement of an expired flow (or of a flow whose secret expired)."""
    minutes = (utcnow() - expired_at).total_seconds() / 60
    return text(
        4060005 if flow == "recovery" else 4070005,
        f"The {flow} flow expired {minutes:.2f} minutes ago, please try again.",
        "error",
        expired_at=expired_at.isoformat(),
        expired_at_unix=int(expired_at.timestamp()),
    )


def invalid_email() -> Text:
    """4000040 (``format: email``)."""
    return text(4000040, "The email address is invalid.", "error")


# --- settings and second factors (TOTP, backup codes) ---------------------------------------------
LOGIN_TOTP_LABEL = 1010006
LOGIN_LOOKUP_LABEL = 1010007
LOGIN_TOTP = 1010009
LOGIN_LOOKUP = 1010010
SETTINGS_SAVED = 1050001
SETTINGS_TOTP_UNLINK = 1050004
SETTINGS_TOTP_QR = 1050005
SETTINGS_TOTP_SECRET = 1050006
SETTINGS_LOOKUP_REVEAL = 1050007
SETTINGS_LOOKUP_REGENERATE = 1050008
SETTINGS_LOOKUP_SECRET = 1050009
SETTINGS_LOOKUP_KEEP_SAFE = 1050010
SETTINGS_LOOKUP_CONFIRM = 1050011
SETTINGS_LOOKUP_USED_AT = 1050014
SETTINGS_LOOKUP_CODES = 1050015
SETTINGS_LOOKUP_DISABLE = 1050016
SETTINGS_TOTP_SECRET_LABEL = 1050017
LABEL_SAVE = 1070003
LABEL_VERIFY_CODE = 1070006
TOTP_INVALID = 4000008
TOTP_MISSING = 4000011
LOOKUP_USED = 4000012
LOOKUP_MISSING = 4000014
LOOKUP_INVALID = 4000016
SETTINGS_NO_STRATEGY = 4010004
SETTINGS_FLOW_EXPIRED = 4050001


def settings_saved() -> Text:
    return text(SETTINGS_SAVED, "Your changes have been saved!", "success")


def label_save() -> Text:
    return text(LABEL_SAVE, "Save")


def settings_no_strategy() -> Text:
    return text(
        SETTINGS_NO_STRATEGY,
        "Could not find a strategy to update your settings. Did you fill out the form correctly?",
        "error",
    )


def settings_flow_expired(expired_at: datetime) -> Text:
    minutes = (utcnow() - expired_at).total_seconds() / 60
    return text(
        SETTINGS_FLOW_EXPIRED,
        f"The settings flow expired {minutes:.2f} minutes ago, please try again.",
        "error",
        expired_at=expired_at.isoformat(),
        expired_at_unix=int(expired_at.timestamp()),
    )


def totp_invalid() -> Text:
    return text(TOTP_INVALID, "The provided authentication code is invalid, please try again.", "error")


def totp_missing() -> Text:
    return text(TOTP_MISSING, "You have no TOTP device set up.", "error")


def lookup_used() -> Text:
    return text(LOOKUP_USED, "This backup recovery code has already been used.", "error")


def lookup_missing() -> Text:
    return text(LOOKUP_MISSING, "You have no backup recovery codes set up.", "error")


def lookup_invalid() -> Text:
    return text(LOOKUP_INVALID, "The backup recovery code is not valid.", "error")
