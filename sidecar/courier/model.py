"""Courier messages and their delivery attempts (Kratos' ``message`` / ``messageDispatch`` shapes).

A message moves ``queued -> processing -> sent``; a failed attempt puts it back to ``queued`` with a
later ``next_attempt_at``, and after ``courier.message_retries`` retries (or a permanent failure) it
ends ``abandoned``. ``processing`` is a lease: ``claimed_by`` holds it until ``claimed_until``, after
which another worker may claim it again (the holder is presumed dead).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

MessageStatus = Literal["queued", "processing", "sent", "abandoned"]
MESSAGE_STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)

DispatchStatus = Literal["failed", "success"]

# Exactly the ``message.template_type`` enum of Kratos v25.4.0: ory-kratos-client validates enums
# strictly, so a value outside this list would break SDK users (kratos-api.md §10).
TemplateType = Literal[
    "recovery_invalid",
    "recovery_valid",
    "recovery_code_invalid",
    "recovery_code_valid",
    "verification_invalid",
    "verification_valid",
    "verification_code_invalid",
    "verification_code_valid",
    "stub",
    "login_code_valid",
    "registration_code_valid",
]
TEMPLATE_TYPES: tuple[TemplateType, ...] = get_args(TemplateType)

MAX_RECIPIENT_LENGTH = 320  # RFC 3696 errata: 64 local part + @ + 255 domain
MAX_SUBJECT_LENGTH = 998  # RFC 5322 §2.1.1 line length limit


def utcnow() -> datetime:
    return datetime.now(UTC)


def _has_control_characters(value: str) -> bool:
    # Cc covers CR, LF, NUL, TAB and DEL; Zl/Zp are U+2028/U+2029, which some mail software treats as
    # line breaks. Any of them could split an SMTP header and inject new ones.
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value)


def validate_recipient(recipient: str) -> str:
    """Return ``recipient`` or raise ``ValueError``: it becomes the ``To`` header and ``RCPT TO``."""
    if not recipient or _has_control_characters(recipient):
        raise ValueError("courier recipient must be non-empty and must not contain control characters")
    if len(recipient) > MAX_RECIPIENT_LENGTH:
        raise ValueError(f"courier recipient is longer than {MAX_RECIPIENT_LENGTH} characters")
    local, at, domain = recipient.rpartition("@")
    if not at or not local or not domain or any(ch.isspace() or ch in "<>,;" for ch in recipient):
        raise ValueError("courier recipient must be a bare email address such as user@example.com")
    return recipient


_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def is_phone(value: str) -> bool:
    """An E.164 number (``+`` and 7 to 15 digits): what a text message may be sent to."""
    return bool(_E164.fullmatch(value))


def validate_phone(recipient: str) -> str:
    """Return ``recipient`` or raise ``ValueError``: text messages go to E.164 numbers only."""
    if not _E164.fullmatch(recipient):
        raise ValueError("courier recipient must be a phone number in E.164 form such as +4915112345678")
    return recipient


def validate_subject(subject: str) -> str:
    """Return ``subject`` or raise ``ValueError``: it becomes the ``Subject`` header."""
    if _has_control_characters(subject):
        raise ValueError("courier subject must not contain CR, LF or other control characters")
    if len(subject) > MAX_SUBJECT_LENGTH:
        raise ValueError(f"courier subject is longer than {MAX_SUBJECT_LENGTH} characters")
    return subject


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One delivery attempt; ``error`` is set when it failed."""

    message_id: uuid.UUID
    status: DispatchStatus
    error: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class Message:
    recipient: str
    subject: str
    body: str
    template_type: TemplateType
    html_body: str | None = None
    template_data: dict[str, Any] = field(default_factory=dict)
    type: Literal["email", "sms"] = "email"
    status: MessageStatus = "queued"
    send_count: int = 0
    last_error: str | None = None
    next_attempt_at: datetime = field(default_factory=utcnow)
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    dispatches: tuple[Dispatch, ...] = ()

    def validate(self) -> Message:
        """Raise ``ValueError`` if a header-bound field could corrupt the SMTP message (emails), or
        the recipient is not an E.164 phone number (text messages)."""
        if self.type == "sms":
            validate_phone(self.recipient)
        else:
            validate_recipient(self.recipient)
        validate_subject(self.subject)
        if self.template_type not in TEMPLATE_TYPES:
            raise ValueError(f"unknown courier template type {self.template_type!r}")
        return self
