"""An identity schema: trait validation and the ``ory.sh/kratos`` extension readers."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from sidecar.i18n import Phrase
from sidecar.schema.extension import TraitField, trait_fields, values_at
from sidecar.schema.violations import (
    INVALID_EMAIL,
    INVISIBLE,
    NOT_AN_OBJECT,
    TraitsInvalid,
    Violations,
    said,
    violation,
)
from sidecar.security.emails import InvalidEmail, canonical_email
from sidecar.security.identifiers import normalize_identifier


def _violations(error: jsonschema.exceptions.ValidationError) -> list[tuple[str, Phrase]]:
    """Where a violation sits, and what it says; a missing required property is reported on the
    property itself (as Kratos does: 4000002 at ``traits.<name>``)."""
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [str(p) for p in error.validator_value if p not in error.instance]
        if missing:
            return [(".".join([*parts, m]), violation(error, m)) for m in missing]
    return [(".".join(parts), violation(error))]


_EMAIL_FORMATS = ("email", "idn-email")
# Invisible or line-breaking characters make look-alike identifiers and forge log lines.
_REFUSED_IN_IDENTIFIERS = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _format_checker(base: jsonschema.FormatChecker) -> jsonschema.FormatChecker:
    """The validator's format checks, with "email" meaning sidecar's canonical address rules."""
    checker = jsonschema.FormatChecker()
    checker.checkers = dict(base.checkers)

    def is_email(instance: object) -> bool:
        if isinstance(instance, str):
            canonical_email(instance)
        return True

    for name in _EMAIL_FORMATS:
        checker.checks(name, raises=InvalidEmail)(is_email)
    return checker


def _is_email_field(f: TraitField) -> bool:
    """A trait holding an email: its format says so, or the extension sends mail to it."""
    if f.format in _EMAIL_FORMATS:
        return True
    if any(_ext(f, section).get("via") == "email" for section in ("verification", "recovery")):
        return True
    code = _ext(f, "credentials", "code")  # Kratos: a code identifier is an email unless via says
    return code.get("identifier") is True and code.get("via", "email") == "email"


class IdentitySchema:
    """One loaded schema. ``document`` is the raw JSON served at ``GET /schemas/{id}``."""

    def __init__(self, schema_id: str, document: dict[str, Any]) -> None:
        self.id = schema_id
        self.document = document
        cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft7Validator)
        cls.check_schema(document)
        # Format checking is on, with sidecar's address rules for "email" (sidecar.security.emails).
        self._validator = cls(document, format_checker=_format_checker(cls.FORMAT_CHECKER))
        self._fields = trait_fields(document)
        self._email_fields = [f for f in self._fields if _is_email_field(f)]
        self._identifier_fields = [
            f for f in self._fields if f.identifier_for and f not in self._email_fields
        ]

    @property
    def trait_names(self) -> frozenset[str]:
        """The top-level trait properties the schema declares."""
        traits = self.document.get("properties", {}).get("traits", {})
        properties = traits.get("properties", {}) if isinstance(traits, dict) else {}
        return frozenset(properties) if isinstance(properties, dict) else frozenset()

    def validate_traits(self, traits: Any) -> None:
        """``TraitsInvalid`` with its violations keyed by ``traits.<path>`` when traits are invalid."""
        if not isinstance(traits, dict):
            problem = said(NOT_AN_OBJECT)
            raise TraitsInvalid(str(problem), {"traits": [problem]})
        found: Violations = {}
        for error in self._validator.iter_errors({"traits": traits}):
            for path, problem in _violations(error):
                found.setdefault(path or "traits", []).append(problem)
        for path, problem in self._identifier_problems(traits):
            if path not in found:
                found[path] = [problem]
        if found:
            first = next(iter(found))
            raise TraitsInvalid(f"{first}: {found[first][0]}" if first else "traits are invalid", found)

    def _identifier_problems(self, traits: Mapping[str, Any]) -> list[tuple[str, Phrase]]:
        """Identifiers and addresses the schema's keywords cannot refuse on their own."""
        found: list[tuple[str, Phrase]] = []
        for f in self._email_fields:
            for value in values_at(traits, f):
                try:
                    canonical_email(value)
                except InvalidEmail as exc:
                    found.append((f"traits.{f.path}", said(INVALID_EMAIL, reason=str(exc))))
        for f in self._identifier_fields:
            for value in values_at(traits, f):
                if any(unicodedata.category(ch) in _REFUSED_IN_IDENTIFIERS for ch in value):
                    found.append((f"traits.{f.path}", said(INVISIBLE)))
        return found

    def trait_fields(self) -> list[TraitField]:
        return list(self._fields)

    @cached_property
    def _by_credential(self) -> dict[str, list[TraitField]]:
        out: dict[str, list[TraitField]] = {}
        for f in self._fields:
            for kind in f.identifier_for:
                out.setdefault(kind, []).append(f)
        return out

    def identifiers(self, traits: Mapping[str, Any], credential_type: str) -> list[str]:
        """Normalised identifiers of ``credential_type`` found in ``traits``, without duplicates."""
        found: list[str] = []
        for f in self._by_credential.get(credential_type, []):
            via = _ext(f, "credentials", credential_type).get("via")
            for value in values_at(traits, f):
                norm = normalize_identifier(value, credential_type, via=via if isinstance(via, str) else None)
                if norm not in found:
                    found.append(norm)
        return found

    def _addresses(self, traits: Mapping[str, Any], section: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for f in self._fields:
            via = _ext(f, section).get("via")
            if not isinstance(via, str):
                continue
            for value in values_at(traits, f):
                pair = (via, normalize_identifier(value, "code", via=via))
                if pair not in found:
                    found.append(pair)
        return found

    def fields_via(self, section: str, via: str) -> list[str]:
        """The trait paths whose ``<section>.via`` is ``via`` (``verification``/``recovery``)."""
        return [f"traits.{f.path}" for f in self._fields if _ext(f, section).get("via") == via]

    def verifiable_addresses(self, traits: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(via, value)`` for each trait with ``verification.via``."""
        return self._addresses(traits, "verification")

    def recovery_addresses(self, traits: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(via, value)`` for each trait with ``recovery.via``."""
        return self._addresses(traits, "recovery")

    def code_identifiers(self, traits: Mapping[str, Any]) -> list[tuple[str, str]]:
        """``(value, via)`` for code login/registration; ``via`` defaults to email as in Kratos."""
        found: list[tuple[str, str]] = []
        for f in self._by_credential.get("code", []):
            via = _ext(f, "credentials", "code").get("via")
            via = via if isinstance(via, str) else "email"
            for value in values_at(traits, f):
                pair = (normalize_identifier(value, "code", via=via), via)
                if pair not in found:
                    found.append(pair)
        return found

    def totp_account_name(self, traits: Mapping[str, Any]) -> str | None:
        for f in self._fields:
            if _ext(f, "credentials", "totp").get("account_name") is True:
                values = values_at(traits, f)
                if values:
                    return values[0]
        return None


def _ext(f: TraitField, *keys: str) -> Mapping[str, Any]:
    node: Any = f.extension
    for key in keys:
        node = node.get(key) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}
