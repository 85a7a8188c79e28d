"""Identifier normalisation, as Kratos stores credential identifiers and addresses.

Kratos (``x.GracefulNormalization``) turns a valid phone number into E.164 and otherwise trims
and lower-cases. We go further: an email address gets its one canonical form
(``sidecar.security.emails``: NFKC, case folding, IDNA 2008 domain), and anything else NFKC plus
case folding (towards PRECIS, RFC 8265). Without this, ``Alice@Example.com``,
``alice@example.com.`` and ``alice@EXAMPLE.com`` would be three accounts.
"""

from __future__ import annotations

import re
import unicodedata

from sidecar.security.emails import InvalidEmail, canonical_email

# Credential types whose identifiers are user-typed strings (OIDC/SAML use provider:subject as is).
NORMALISED_TYPES = frozenset({"password", "code", "webauthn", "passkey", "totp", "lookup_secret"})

_PHONE_CHARS = re.compile(r"^\+?[0-9 ()./-]+$")
_SEPARATORS = re.compile(r"[ ()./-]")


def normalize_phone(value: str) -> str | None:
    """``+<digits>`` (E.164 shape) for an international number, bare digits for a national one.

    ``00`` is the international call prefix, so ``0049 …`` is ``+49…``. Without a country we
    cannot place a national number, so it keeps its digits only. E.164 allows at most 15 digits.
    """
    text = unicodedata.normalize("NFKC", value).strip()
    if not _PHONE_CHARS.match(text):
        return None
    digits = _SEPARATORS.sub("", text)
    international = digits.startswith("+") or digits.startswith("00")
    digits = digits.removeprefix("+") if digits.startswith("+") else digits
    if international and digits.startswith("00"):
        digits = digits[2:]
    if not digits.isdigit() or not 4 <= len(digits) <= 15:
        return None
    return "+" + digits if international else digits


def normalize_identifier(value: str, credential_type: str = "password", *, via: str | None = None) -> str:
    """The form an identifier is stored and looked up in.

    ``via="sms"`` (or a value starting with ``+`` that is a plausible phone number) gives E.164;
    a value with ``@`` that is a valid address gets the canonical email form (whatever ``via``
    says: a typed login identifier has no ``via``, and it must meet the stored form); everything
    else gets NFKC + case folding + trimming. Invalid addresses never reach the store: trait
    validation refuses them (``sidecar.schema.model``).
    """
    if credential_type not in NORMALISED_TYPES:
        return value
    if via == "sms" or value.strip().startswith("+"):
        phone = normalize_phone(value)
        if phone is not None:
            return phone
    if "@" in value:
        try:
            return canonical_email(value)
        except InvalidEmail:
            pass
    return unicodedata.normalize("NFKC", value).casefold().strip()
