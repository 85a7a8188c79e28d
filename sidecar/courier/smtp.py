"""Email delivery over SMTP (aiosmtplib), configured like Kratos' ``courier.smtp``.

``connection_uri``: ``smtp://[user:pass@]host[:port]/`` upgrades with STARTTLS when the server
offers it (``?disable_starttls=true`` turns that off), ``smtps://`` is implicit TLS (RFC 8314),
``?skip_ssl_verify=true`` accepts any certificate. One connection per message keeps a broken
connection from poisoning later sends; the courier's volume makes reuse unnecessary.
"""

from __future__ import annotations

import email.policy
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from sidecar.config.model import Smtp
from sidecar.courier.model import Message, validate_recipient, validate_subject
from sidecar.courier.sender import PermanentDeliveryError

# Headers the sender writes itself; a configured header of the same name would duplicate them.
_RESERVED_HEADERS = frozenset(
    {
        *("from", "to", "cc", "bcc", "sender", "subject", "date", "message-id", "mime-version"),
        *("content-type", "content-transfer-encoding"),
    }
)
_TRUE = {"true", "1", "yes"}


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    hostname: str
    port: int
    use_tls: bool
    start_tls: bool | None  # None: upgrade when offered
    validate_certs: bool
    username: str | None
    password: str | None


def parse_connection_uri(uri: str) -> SmtpTarget:
    """Parse ``courier.smtp.connection_uri``; raises ``ValueError`` naming the problem."""
    parts = urlsplit(uri)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("courier.smtp.connection_uri: scheme must be smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("courier.smtp.connection_uri: a host is required")
    query = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
    implicit_tls = parts.scheme == "smtps"
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or (465 if implicit_tls else 25),
        use_tls=implicit_tls,
        start_tls=False if implicit_tls or query.get("disable_starttls") in _TRUE else None,
        validate_certs=query.get("skip_ssl_verify") not in _TRUE,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _check_header(name: str, value: str) -> None:
    for part in (name, value):
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in part):
            raise ValueError(f"courier.smtp.headers: {name!r} contains a control character")
    if name.lower() in _RESERVED_HEADERS:
        raise ValueError(f"courier.smtp.headers: {name!r} is set by the courier itself")


class SmtpSender:
    """Builds a multipart/alternative email per message and delivers it."""

    def __init__(self, config: Smtp, *, timeout: float = 30.0) -> None:
        self._target = parse_connection_uri(config.connection_uri)
        for name, value in config.headers.items():
            _check_header(name, value)
        self._from = Address(display_name=config.from_name or "", addr_spec=config.from_address)
        self._config = config
        self._timeout = timeout

    @property
    def timeout(self) -> float:
        return self._timeout

    def build(self, message: Message) -> EmailMessage:
        """The MIME message; header values are re-validated so no CR/LF ever reaches SMTP."""
        validate_recipient(message.recipient)
        validate_subject(message.subject)
        mail = EmailMessage(policy=email.policy.SMTP)
        mail["From"] = self._from
        mail["To"] = Address(addr_spec=message.recipient)
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        # A stable Message-ID lets receivers (and our tests) spot a duplicate delivery.
        mail["Message-ID"] = f"<{message.id}@{self._from.domain or 'sidecar.local'}>"
        for name, value in self._config.headers.items():
            mail[name] = value
        mail.set_content(message.body)
        if message.html_body:
            mail.add_alternative(message.html_body, subtype="html")
        return mail

    async def send(self, message: Message) -> None:
        try:
            mail = self.build(message)
        except ValueError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        target = self._target
        try:
            await aiosmtplib.send(
                mail,
                sender=self._config.from_address,
                recipients=[message.recipient],
                hostname=target.hostname,
                port=target.port,
                username=target.username,
                password=target.password,
                use_tls=target.use_tls,
                start_tls=target.start_tls,
                validate_certs=target.validate_certs,
                local_hostname=self._config.local_name,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            if all(500 <= r.code < 600 for r in exc.recipients):
                raise PermanentDeliveryError(f"recipient refused: {exc}") from exc
            raise
        except aiosmtplib.SMTPDataError as exc:
            if 500 <= exc.code < 600:
                raise PermanentDeliveryError(f"message refused: {exc}") from exc
            raise
