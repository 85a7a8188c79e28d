"""Organizations (Kratos' ``organization_id`` on identities, Ory Network's ``Organization``).

An organization has an id, a human label, a URL-safe slug (what access rules and SCIM paths may
name instead of the id) and the email domains it owns. Identities belong to at most one.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import idna

from sidecar.organization import refusals

MAX_LABEL = 255
MAX_DOMAINS = 100
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Organization:
    label: str
    slug: str
    domains: tuple[str, ...] = ()
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


class InvalidOrganization(ValueError):
    """``field`` names the offending key; ``str(exc)`` says why (safe to show)."""

    def __init__(self, field_name: str, reason: str) -> None:
        self.field = field_name
        super().__init__(reason)


def check_label(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidOrganization("label", refusals.LABEL_EMPTY)
    label = value.strip()
    if len(label) > MAX_LABEL or any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
        raise InvalidOrganization("label", refusals.LABEL_TOO_LONG.format(max=MAX_LABEL))
    return label


def check_slug(value: object) -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise InvalidOrganization("slug", refusals.BAD_SLUG)
    return value


def slug_from_label(label: str) -> str:
    """A slug proposal from the label: ``ACME Corp.`` → ``acme-corp``."""
    text = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:63].strip("-")
    return text or "org"


def canonical_domain(value: object) -> str:
    """The ASCII (IDNA 2008, UTS #46) lower-case form, the form ``canonical_email`` gives domains."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidOrganization("domains", refusals.DOMAIN_EMPTY)
    text = value.strip().rstrip(".")
    if "@" in text or "/" in text or ":" in text or "*" in text:
        raise InvalidOrganization("domains", refusals.NOT_A_DOMAIN.format(value=repr(value[:64])))
    try:
        domain = idna.encode(text, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise InvalidOrganization("domains", refusals.INVALID_DOMAIN.format(value=repr(value[:64]))) from None
    if "." not in domain:
        raise InvalidOrganization("domains", refusals.ONE_LABEL.format(value=repr(value[:64])))
    return domain


def check_domains(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InvalidOrganization("domains", refusals.DOMAINS_NOT_A_LIST)
    if len(value) > MAX_DOMAINS:
        raise InvalidOrganization("domains", refusals.TOO_MANY_DOMAINS.format(max=MAX_DOMAINS))
    domains = tuple(dict.fromkeys(canonical_domain(v) for v in value))
    return domains


def email_domain(identifier: str) -> str | None:
    """The domain of an email-shaped identifier, canonical; None for anything else."""
    if identifier.count("@") != 1:
        return None
    try:
        return canonical_domain(identifier.rpartition("@")[2])
    except InvalidOrganization:
        return None
