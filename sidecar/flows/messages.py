"""UI texts with Kratos' stable numeric ids (kratos-api.md §5; English from ory/kratos ``text/``).

The one place for the texts flows and strategies put in ``ui.messages`` and node labels (the
password policy's own findings, ``sidecar.security.passwords``, carry their ids and are passed on
as they are); the pages' own words are ``sidecar.ui.wording``. Clients must key on ``id``; the
English is for people. 4000429 is sidecar-only (brute-force lockout) and sits in the
generic-validation range where Kratos defines no such id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

from sidecar.i18n import Phrase, Translator
from sidecar.identity.model import utcnow
from sidecar.schema import violations

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
DUPLICATE_CREDENTIALS_WITH_HINTS = 4000028
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


def schema_violation(violation: Phrase) -> Text:
    """A trait the identity schema refuses (``sidecar.schema.violations``): its Kratos id, its
    English text and its values as the message's context."""
    return text(violations.message_id(violation), str(violation), "error", **violation.params)


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


def duplicate_credentials_with_hints(reason: str, hints: dict[str, Any]) -> Text:
    """4000028: the collision, and how the existing account signs in (``login_hints``)."""
    return text(DUPLICATE_CREDENTIALS_WITH_HINTS, reason, "error", **hints)


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


# --- social sign-in (Kratos text/message_login.go, message_registration.go, message_settings.go) ---


def oidc_sign_in_with(label: str, provider_id: str) -> Text:
    return text(1010002, f"Sign in with {label}", provider=label, provider_id=provider_id)


def oidc_sign_up_with(label: str, provider_id: str) -> Text:
    return text(1040002, f"Sign up with {label}", provider=label, provider_id=provider_id)


def oidc_link(label: str, provider_id: str) -> Text:
    return text(1050002, f"Link {label}", provider=label, provider_id=provider_id)


def oidc_unlink(label: str, provider_id: str) -> Text:
    return text(1050003, f"Unlink {label}", provider=label, provider_id=provider_id)


def oidc_link_notice(duplicate: str, label: str) -> Text:
    """1010016: the provider's address belongs to an existing account; sign in to link it."""
    return text(
        1010016,
        f'You tried to sign in with "{label}", but the address "{duplicate}" is already used by another '
        f'account. Sign in to that account with one of the options below to add "{label}" as another '
        "way to sign in.",
        duplicateIdentifier=duplicate,
        provider=label,
    )


def oidc_duplicate_sign_in_to_link() -> Text:
    return text(
        4000027,
        "An account with the same identifier (email, phone, username, ...) exists already. Please sign "
        "in to your existing account and link your social profile in the settings page.",
        "error",
    )


def oidc_linked_elsewhere(label: str) -> Text:
    return text(
        4000007,
        f"This {label} account is already linked to another account.",
        "error",
    )


def oidc_link_mismatch() -> Text:
    return text(
        4010009,
        "Linked credentials do not match: sign in with the account that owns this address.",
        "error",
    )


def oidc_unlink_last() -> Text:
    reason = "You cannot remove this sign-in method: it is the only way left to sign in to your account."
    return text(4000001, reason, "error", reason=reason)


# --- sign-in and sign-up by code (Kratos text/message_login.go, message_registration.go) ---------
CodePurpose = Literal["login", "registration"]


def code_sent(purpose: CodePurpose) -> Text:
    hint = "If you have not received an email, check the spelling of the address and retry the"
    if purpose == "login":
        return text(
            1010014,
            f"An email containing a code has been sent to the email address you provided. {hint} login.",
        )
    return text(
        1040005,
        f"An email containing a code has been sent to the email address you provided. {hint} registration.",
    )


def code_send(purpose: CodePurpose) -> Text:
    return text(1010015, "Send sign in code") if purpose == "login" else text(1040006, "Send sign up code")


def code_label(purpose: CodePurpose) -> Text:
    return text(1070013, "Login code") if purpose == "login" else text(1070012, "Registration code")


def code_invalid(purpose: CodePurpose) -> Text:
    id_ = 4010008 if purpose == "login" else 4040003
    return text(id_, f"The {purpose} code is invalid or has already been used. Please try again.", "error")


def code_no_account() -> Text:
    return text(4000035, "This account does not exist or has not setup sign in with code.", "error")


def code_traits_changed() -> Text:
    return text(
        4000036, "The provided traits do not match the traits previously associated with this flow.", "error"
    )


def code_send_to(address: str) -> Text:
    return text(1010023, f"Send code to {address}", address=address)


def code_not_your_address() -> Text:
    return text(4010010, "This address is not a code address of your account.", "error")


def no_login_identifiers() -> Text:
    return text(4000009, "Could not find any login identifiers.", "error")


# --- security keys and passkeys (Kratos text/message_login.go, message_registration.go, ...) ----


def webauthn_login() -> Text:
    return text(1010008, "Sign in with hardware key")


def webauthn_login_continue() -> Text:
    return text(1010011, "Continue with hardware key")


def passkey_login() -> Text:
    return text(1010021, "Sign in with passkey")


def webauthn_register() -> Text:
    return text(1040004, "Sign up with security key")


def passkey_register() -> Text:
    return text(1040007, "Sign up with passkey")


def webauthn_add_key() -> Text:
    return text(1050012, "Add security key")


def webauthn_key_name() -> Text:
    return text(1050013, "Name of the security key")


def webauthn_remove_key(name: str, added_at: str) -> Text:
    return text(1050018, f'Remove security key "{name}"', display_name=name, added_at=added_at)


def passkey_add() -> Text:
    return text(1050019, "Add passkey")


def passkey_remove(name: str, added_at: str) -> Text:
    return text(1050020, f'Remove passkey "{name}"', display_name=name, added_at=added_at)


def webauthn_no_keys() -> Text:
    return text(4000013, "You have no WebAuthn device set up.", "error")


def webauthn_no_user_or_key() -> Text:
    return text(
        4000015, "The user has no security key set up, or no account with this identifier exists.", "error"
    )


def totp_code_label() -> Text:
    return text(LOGIN_TOTP_LABEL, "Authentication code")


def totp_use() -> Text:
    return text(LOGIN_TOTP, "Use Authenticator")


def totp_unlink() -> Text:
    return text(SETTINGS_TOTP_UNLINK, "Unlink TOTP Authenticator App")


def totp_qr() -> Text:
    return text(SETTINGS_TOTP_QR, "Authenticator app QR code")


def totp_secret(secret: str) -> Text:
    return text(SETTINGS_TOTP_SECRET, secret, secret=secret)


def label_verify_code() -> Text:
    return text(LABEL_VERIFY_CODE, "Verify code")


def lookup_label() -> Text:
    return text(LOGIN_LOOKUP_LABEL, "Backup recovery code")


def lookup_use() -> Text:
    return text(LOGIN_LOOKUP, "Use backup recovery code")


def totp_secret_label() -> Text:
    return text(
        SETTINGS_TOTP_SECRET_LABEL,
        "This is your authenticator app secret. Use it if you can not scan the QR code.",
    )


def lookup_secret(code: str) -> Text:
    return text(SETTINGS_LOOKUP_SECRET, code, secret=code)


def lookup_codes(codes: list[str], secrets: list[Text]) -> Text:
    return text(SETTINGS_LOOKUP_CODES, ", ".join(codes), secrets=secrets)


def lookup_keep_safe() -> Text:
    return text(
        SETTINGS_LOOKUP_KEEP_SAFE, "These are your back up recovery codes. Please keep them in a safe place!"
    )


def lookup_confirm() -> Text:
    return text(SETTINGS_LOOKUP_CONFIRM, "Confirm backup recovery codes")


def lookup_regenerate() -> Text:
    return text(SETTINGS_LOOKUP_REGENERATE, "Generate new backup recovery codes")


def lookup_disable() -> Text:
    return text(SETTINGS_LOOKUP_DISABLE, "Disable this method")


# --- two-step flows (Kratos text/message_registration.go, message_validation.go) --------------


def registration_back() -> Text:
    return text(1040008, "Back")


def choose_credentials() -> Text:
    return text(1040009, "Please choose a credential to authenticate yourself with.")


def account_not_found() -> Text:
    return text(4000037, "This account does not exist or has no login method configured.", "error")


# --- translation --------------------------------------------------------------------------------
# Every text above as a template: ``{name}`` stands for a value the message carries. The templates are
# the gettext ``msgid``s (``msgctxt`` = the Kratos id) that ``pybabel extract -k _m:1c,2`` collects
# into ``sidecar/i18n/locales/sidecar.pot``; tests/flows/test_message_catalog.py checks that every
# function above produces text one of its id's templates matches, so the two cannot drift apart.


def _m(message_id: str, template: str) -> tuple[int, str]:
    return int(message_id), template


_TEMPLATES: tuple[tuple[int, str], ...] = (
    _m("1010003", "Please confirm this action by verifying that it is you."),
    _m("1010004", "Please complete the second authentication challenge."),
    _m("1010022", "Sign in with password"),
    _m("1040001", "Sign up"),
    _m("1070001", "Password"),
    _m("1070004", "ID"),
    _m("4000002", "Property {property} is missing."),
    _m(
        "4000006",
        "The provided credentials are invalid, check for spelling mistakes in your password or username, "
        "email address, or phone number.",
    ),
    _m("4000007", "An account with the same identifier (email, phone, username, ...) exists already."),
    _m("4000007", "This {provider} account is already linked to another account."),
    _m("4000429", "Too many attempts, please wait {retry_after} seconds and try again."),
    _m("4010011", "Your account is disabled."),
    _m("4010002", "Could not find a strategy to log you in with. Did you fill out the form correctly?"),
    _m("4010003", "Could not find a strategy to sign you up with. Did you fill out the form correctly?"),
    _m("4010001", "The login flow expired {minutes} minutes ago, please try again."),
    _m("4040001", "The registration flow expired {minutes} minutes ago, please try again."),
    _m(
        "1060001",
        "You successfully recovered your account. Please change your password or set up an alternative "
        "login method (e.g. social sign in) within the next {minutes} minutes.",
    ),
    _m(
        "1060002",
        "An email containing a recovery link has been sent to the email address you provided. If you have "
        "not received an email, check the spelling of the address and make sure to use the address you "
        "registered with.",
    ),
    _m(
        "1060003",
        "An email containing a recovery code has been sent to the email address you provided. If you have "
        "not received an email, check the spelling of the address and make sure to use the address you "
        "registered with.",
    ),
    _m(
        "1080001",
        "An email containing a verification link has been sent to the email address you provided. If you "
        "have not received an email, check the spelling of the address and make sure to use the address "
        "you registered with.",
    ),
    _m("1080002", "You successfully verified your email address."),
    _m(
        "1080003",
        "An email containing a verification code has been sent to the email address you provided. If you "
        "have not received an email, check the spelling of the address and make sure to use the address "
        "you registered with.",
    ),
    _m("1070005", "Submit"),
    _m("1070007", "Email"),
    _m("1070008", "Resend code"),
    _m("1070009", "Continue"),
    _m("1070010", "Recovery code"),
    _m("1070011", "Verification code"),
    _m(
        "4010004",
        "Could not find a strategy to recover your account with. Did you fill out the form correctly?",
    ),
    _m(
        "4010005",
        "Could not find a strategy to verify your account with. Did you fill out the form correctly?",
    ),
    _m("4010007", "The request was already completed successfully and can not be retried."),
    _m("4040002", "The request was already completed successfully and can not be retried."),
    _m("4060001", "The request was already completed successfully and can not be retried."),
    _m("4070002", "The request was already completed successfully and can not be retried."),
    _m("4060004", "The recovery token is invalid or has already been used. Please retry the flow."),
    _m("4070001", "The verification token is invalid or has already been used. Please retry the flow."),
    _m("4060006", "The recovery code is invalid or has already been used. Please try again."),
    _m("4070006", "The verification code is invalid or has already been used. Please try again."),
    _m("4060005", "The recovery flow expired {minutes} minutes ago, please try again."),
    _m("4070005", "The verification flow expired {minutes} minutes ago, please try again."),
    _m("4000040", "The email address is invalid."),
    _m("1050001", "Your changes have been saved!"),
    _m("1070003", "Save"),
    _m("4010004", "Could not find a strategy to update your settings. Did you fill out the form correctly?"),
    _m("4050001", "The settings flow expired {minutes} minutes ago, please try again."),
    _m("4000008", "The provided authentication code is invalid, please try again."),
    _m("4000011", "You have no TOTP device set up."),
    _m("4000012", "This backup recovery code has already been used."),
    _m("4000014", "You have no backup recovery codes set up."),
    _m("4000016", "The backup recovery code is not valid."),
    _m("1010002", "Sign in with {provider}"),
    _m("1040002", "Sign up with {provider}"),
    _m("1050002", "Link {provider}"),
    _m("1050003", "Unlink {provider}"),
    _m(
        "1010016",
        'You tried to sign in with "{provider}", but the address "{duplicateIdentifier}" is already used '
        'by another account. Sign in to that account with one of the options below to add "{provider}" '
        "as another way to sign in.",
    ),
    _m(
        "4000027",
        "An account with the same identifier (email, phone, username, ...) exists already. Please sign in "
        "to your existing account and link your social profile in the settings page.",
    ),
    _m("4010009", "Linked credentials do not match: sign in with the account that owns this address."),
    _m(
        "4000001",
        "You cannot remove this sign-in method: it is the only way left to sign in to your account.",
    ),
    _m(
        "1010014",
        "An email containing a code has been sent to the email address you provided. If you have not "
        "received an email, check the spelling of the address and retry the login.",
    ),
    _m(
        "1040005",
        "An email containing a code has been sent to the email address you provided. If you have not "
        "received an email, check the spelling of the address and retry the registration.",
    ),
    _m("1010015", "Send sign in code"),
    _m("1040006", "Send sign up code"),
    _m("1070013", "Login code"),
    _m("1070012", "Registration code"),
    _m("4010008", "The login code is invalid or has already been used. Please try again."),
    _m("4040003", "The registration code is invalid or has already been used. Please try again."),
    _m("4000035", "This account does not exist or has not setup sign in with code."),
    _m("4000036", "The provided traits do not match the traits previously associated with this flow."),
    _m("1010023", "Send code to {address}"),
    _m("4010010", "This address is not a code address of your account."),
    _m("4000009", "Could not find any login identifiers."),
    _m("1010008", "Sign in with hardware key"),
    _m("1010011", "Continue with hardware key"),
    _m("1010021", "Sign in with passkey"),
    _m("1040004", "Sign up with security key"),
    _m("1040007", "Sign up with passkey"),
    _m("1050012", "Add security key"),
    _m("1050013", "Name of the security key"),
    _m("1050018", 'Remove security key "{display_name}"'),
    _m("1050019", "Add passkey"),
    _m("1050020", 'Remove passkey "{display_name}"'),
    _m("4000013", "You have no WebAuthn device set up."),
    _m("4000015", "The user has no security key set up, or no account with this identifier exists."),
    _m("1010006", "Authentication code"),
    _m("1010009", "Use Authenticator"),
    _m("1050004", "Unlink TOTP Authenticator App"),
    _m("1050005", "Authenticator app QR code"),
    _m("1070006", "Verify code"),
    _m("1010007", "Backup recovery code"),
    _m("1010010", "Use backup recovery code"),
    _m("1050017", "This is your authenticator app secret. Use it if you can not scan the QR code."),
    _m("1050010", "These are your back up recovery codes. Please keep them in a safe place!"),
    _m("1050011", "Confirm backup recovery codes"),
    _m("1050008", "Generate new backup recovery codes"),
    _m("1050016", "Disable this method"),
    _m("1040008", "Back"),
    _m("1040009", "Please choose a credential to authenticate yourself with."),
    _m("4000037", "This account does not exist or has no login method configured."),
    # The identity schema's violations (their templates are extracted from that module).
    *((int(id_), template) for id_, template in violations.TEMPLATES),
)

# Texts that are a value, not a sentence (a secret, a code list, the hints of 4000028): shown as
# they are in every language. 4000001 is a reason: translated when it is one of the schema's
# sentences above, shown as it is otherwise (a hook's, a validator keyword's without a Kratos id).
# 1070002 is a trait's title from the identity schema: a catalog may translate it with
# ``msgctxt "1070002"`` and the title as ``msgid``.
_VALUE_TEXTS = frozenset({4000028, 1050006, 1050009, 1050015})
_NUMBERS = frozenset({"minutes", "retry_after"})


def _pattern(template: str) -> re.Pattern[str]:
    out, seen, last = [], set(), 0
    for match in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[last : match.start()]))
        name = match.group(1)
        out.append(f"(?P={name})" if name in seen else f"(?P<{name}>.*?)")
        seen.add(name)
        last = match.end()
    out.append(re.escape(template[last:]))
    return re.compile("".join(out), re.DOTALL)


TEMPLATES: dict[int, tuple[tuple[str, re.Pattern[str]], ...]] = {}
for _id, _template in _TEMPLATES:
    TEMPLATES[_id] = (*TEMPLATES.get(_id, ()), (_template, _pattern(_template)))


def template_of(message_id: int, english: str) -> tuple[str, dict[str, str]] | None:
    """The template that produced ``english`` and the values in it, or None (not a known text)."""
    for template, pattern in TEMPLATES.get(message_id, ()):
        match = pattern.fullmatch(english)
        if match:
            return template, match.groupdict()
    return None


def localise(message: Text | Mapping[str, Any], translator: Translator) -> str:
    """The text of ``message`` in the translator's language; English when the catalog has no
    translation for it (or it is not one of the texts above)."""
    text_ = message.get("text")
    message_id = message.get("id")
    if not isinstance(text_, str) or not isinstance(message_id, int) or message_id in _VALUE_TEXTS:
        return text_ if isinstance(text_, str) else ""
    if message_id == LABEL_TRAIT:
        return translator.pgettext(str(LABEL_TRAIT), text_)
    found = template_of(message_id, text_)
    if found is None:
        return text_
    template, values = found
    translated = translator.pgettext(str(message_id), template)
    if translated == template:
        return text_
    for name in _NUMBERS & values.keys():
        values[name] = translator.number(values[name])
    try:
        return translated.format(**values)
    except (KeyError, IndexError, ValueError):
        # A catalog entry naming a value this text does not have: English beats a broken sentence.
        return text_
