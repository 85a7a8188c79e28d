"""A real SMTP server for tests (aiosmtpd on a free 127.0.0.1 port) and helpers to read what it got."""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Mailbox:
    """What the SMTP server received: envelopes and parsed messages, in arrival order."""

    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # recipients answered with 550
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append(parsed)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        return "250 Message accepted for delivery"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.messages]

    def wait_for(self, recipient: str, count: int = 1, timeout: float = 15) -> list[EmailMessage]:
        """The messages to ``recipient`` once there are ``count`` of them (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = [m for m in self.messages if recipient in str(m["To"])]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"expected {count} mail(s) to {recipient}, got {len(found)}"
                return found
            time.sleep(0.05)

    def to(self, recipient: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if recipient in str(m["To"])]


@dataclass
class SmtpServer:
    """An aiosmtpd server on 127.0.0.1:``port``; ``start`` may come late (the "SMTP is down" case)."""

    port: int
    mailbox: Mailbox = field(default_factory=Mailbox)
    controller: Controller | None = None

    @property
    def uri(self) -> str:
        return f"smtp://127.0.0.1:{self.port}/?disable_starttls=true"

    def start(self, **smtp_options: Any) -> None:
        """``smtp_options`` go to aiosmtpd (``tls_context``, ``ssl_context``, ``authenticator``, ...)."""
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, **smtp_options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def text_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def code_in(message: EmailMessage) -> str:
    found = re.search(r"^\s*(\d{6,})\s*$", text_of(message), re.M)
    assert found, text_of(message)
    return found.group(1)


def link_in(message: EmailMessage) -> str:
    found = re.search(r"https?://\S+[?&](?:token|code)=[A-Za-z0-9]+\S*", text_of(message))
    assert found, text_of(message)
    return found.group(0)


__all__ = ["Mailbox", "SmtpServer", "code_in", "link_in", "text_of"]
