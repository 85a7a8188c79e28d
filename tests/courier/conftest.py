"""Courier fixtures: a migrated database with its courier store, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
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
from tests.mail import Mailbox, SmtpServer

__all__ = ["Mailbox", "SmtpServer", "courier_store", "server_tls_context"]


def courier_store(database: SqlDatabase, dsn: str) -> SqlCourierStore:
    return SqlCourierStore(Connector(database.engine, parse_dsn(dsn).flavour))


@pytest.fixture
def store(database: SqlDatabase, dsn: str) -> SqlCourierStore:
    return courier_store(database, dsn)


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
