"""Courier fixtures: a migrated database with its courier store, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import ipaddress
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sidecar.config.model import Courier as CourierConfig
from sidecar.config.model import Smtp
from sidecar.storage.sql.courier_store import SqlCourierStore
from sidecar.storage.sql.database import SqlDatabase
from sidecar.storage.sql.engine import Connector, parse_dsn
from tests.conftest import free_port


def courier_store(database: SqlDatabase, dsn: str) -> SqlCourierStore:
    return SqlCourierStore(Connector(database.engine, parse_dsn(dsn).flavour))


@pytest.fixture
async def database(dsn: str) -> AsyncIterator[SqlDatabase]:
    db = SqlDatabase(dsn)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def store(database: SqlDatabase, dsn: str) -> SqlCourierStore:
    return courier_store(database, dsn)


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


def server_tls_context(directory: Path) -> ssl.SSLContext:
    """A TLS context with a fresh self-signed certificate for 127.0.0.1."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


@pytest.fixture
def smtp_down() -> Iterator[SmtpServer]:
    """A port with no SMTP server yet; call ``.start()`` to bring it up."""
    server = SmtpServer(free_port())
    yield server
    server.stop()


@pytest.fixture
def smtp_server(smtp_down: SmtpServer) -> SmtpServer:
    smtp_down.start()
    return smtp_down


@pytest.fixture
def make_courier_config() -> Callable[..., CourierConfig]:
    def factory(uri: str, **overrides: Any) -> CourierConfig:
        smtp: dict[str, Any] = {
            "connection_uri": uri,
            "from_address": "no-reply@example.test",
            "from_name": "Example Accounts",
        }
        smtp.update(overrides.pop("smtp", {}))
        return CourierConfig(smtp=Smtp(**smtp), **{"worker_interval": 0.05, **overrides})

    return factory
