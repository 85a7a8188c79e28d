"""UI texts of social sign-in, with Kratos' ids (kratos-api.md §5; English after ory/kratos ``text/``)."""

from __future__ import annotations

from sidecar.flows.messages import Text, text


def sign_in_with(label: str, provider_id: str) -> Text:
    return text(1010002, f"Sign in with {label}", provider=label, provider_id=provider_id)


def sign_up_with(label: str, provider_id: str) -> Text:
    return text(1040002, f"Sign up with {label}", provider=label, provider_id=provider_id)


def link(label: str, provider_id: str) -> Text:
    return text(1050002, f"Link {label}", provider=label, provider_id=provider_id)


def unlink(label: str, provider_id: str) -> Text:
    return text(1050003, f"Unlink {label}", provider=label, provider_id=provider_id)


def link_notice(duplicate: str, label: str) -> Text:
    """1010016: the provider's address belongs to an existing account; sign in to link it."""
    return text(
        1010016,
        f'You tried to sign in with "{label}", but the address "{duplicate}" is already used by another '
        f'account. Sign in to that account with one of the options below to add "{label}" as another '
        "way to sign in.",
        duplicateIdentifier=duplicate,
        provider=label,
    )


def duplicate_sign_in_to_link() -> Text:
    return text(
        4000027,
        "An account with the same identifier (email, phone, username, ...) exists already. Please sign "
        "in to your existing account and link your social profile in the settings page.",
        "error",
    )


def linked_elsewhere(label: str) -> Text:
    return text(
        4000007,
        f"This {label} account is already linked to another account.",
        "error",
    )


def link_mismatch() -> Text:
    return text(
        4010009,
        "Linked credentials do not match: sign in with the account that owns this address.",
        "error",
    )


def unlink_last() -> Text:
    reason = "You cannot remove this sign-in method: it is the only way left to sign in to your account."
    return text(4000001, reason, "error", reason=reason)


def generic(reason: str) -> Text:
    return text(4000001, reason, "error", reason=reason)
