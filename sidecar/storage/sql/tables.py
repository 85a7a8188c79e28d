"""SQLAlchemy Core tables. Migrations own the DDL; these definitions are what the stores query.

The unique constraints carry the domain's guarantees: ``(type, identifier)`` on credential
identifiers is what makes two racing registrations of one email end in exactly one identity.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from sidecar.storage.values import json_value

metadata = sa.MetaData()


class JsonText(sa.TypeDecorator[Any]):
    """A JSON value selected as its text (``CAST(... AS TEXT)``) and decoded here. asyncpg
    decodes JSON columns into dicts and lists, which no row can be remembered by; as text a
    PostgreSQL row is plain hashable values, as SQLite's is (``sidecar.storage.decoded``)."""

    impl = sa.Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json_value(value)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out on every backend.

    SQLite has no timestamp type: SQLAlchemy stores text and drops the offset, so values are
    normalised to UTC before binding (text order == time order) and re-labelled UTC when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment = cast(datetime, value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json() -> sa.JSON:
    # SQL NULL rather than JSON 'null', so "no metadata" is one representation on both backends.
    return sa.JSON(none_as_null=True)


def _fk_identity() -> sa.Column[Any]:
    return sa.Column(
        "identity_id", sa.Uuid, sa.ForeignKey("identities.id", ondelete="CASCADE"), nullable=False, index=True
    )


def _timestamps() -> tuple[sa.Column[Any], sa.Column[Any]]:
    return (
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )


identities = sa.Table(
    "identities",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("schema_id", sa.String(255), nullable=False),
    sa.Column("traits", sa.JSON, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("state_changed_at", UtcDateTime, nullable=True),
    sa.Column("metadata_public", _json(), nullable=True),
    sa.Column("metadata_admin", _json(), nullable=True),
    sa.Column("external_id", sa.String(255), nullable=True),
    sa.Column("organization_id", sa.Uuid, nullable=True, index=True),
    *_timestamps(),
    sa.UniqueConstraint("external_id", name="uq_identities_external_id"),
)

credentials = sa.Table(
    "identity_credentials",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _fk_identity(),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("config", sa.JSON, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    *_timestamps(),
    sa.UniqueConstraint("identity_id", "type", name="uq_identity_credentials_identity_type"),
)

credential_identifiers = sa.Table(
    "identity_credential_identifiers",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _fk_identity(),
    sa.Column(
        "credential_id",
        sa.Uuid,
        sa.ForeignKey("identity_credentials.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("identifier", sa.String(255), nullable=False),
    sa.UniqueConstraint("type", "identifier", name="uq_identity_credential_identifiers_type_identifier"),
)

verifiable_addresses = sa.Table(
    "identity_verifiable_addresses",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _fk_identity(),
    sa.Column("via", sa.String(16), nullable=False),
    sa.Column("value", sa.String(400), nullable=False),
    sa.Column("verified", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("verified_at", UtcDateTime, nullable=True),
    *_timestamps(),
    sa.UniqueConstraint("via", "value", name="uq_identity_verifiable_addresses_via_value"),
)

recovery_addresses = sa.Table(
    "identity_recovery_addresses",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    _fk_identity(),
    sa.Column("via", sa.String(16), nullable=False),
    sa.Column("value", sa.String(400), nullable=False),
    *_timestamps(),
    sa.UniqueConstraint("via", "value", name="uq_identity_recovery_addresses_via_value"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("token_digest", sa.String(128), nullable=False),
    sa.Column("identity_id", sa.Uuid, nullable=False, index=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.UniqueConstraint("token_digest", name="uq_sessions_token_digest"),
)

kv = sa.Table(
    "kv",
    metadata,
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("value", sa.LargeBinary, nullable=False),
    # Separate integer so ``incr`` is one atomic upsert; ``value`` mirrors it as ASCII like Redis.
    sa.Column("counter", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("expires_at", UtcDateTime, nullable=False, index=True),
)

# Organizations (migration 0004). Slugs and domains are unique: the database settles races.
organizations = sa.Table(
    "organizations",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("label", sa.String(255), nullable=False),
    sa.Column("slug", sa.String(63), nullable=False),
    *_timestamps(),
    sa.UniqueConstraint("slug", name="uq_organizations_slug"),
)

organization_domains = sa.Table(
    "organization_domains",
    metadata,
    sa.Column("domain", sa.String(253), primary_key=True),
    sa.Column(
        "organization_id",
        sa.Uuid,
        sa.ForeignKey("organizations.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)

# SCIM provisioning (migration 0005).
scim_tokens = sa.Table(
    "scim_tokens",
    metadata,
    sa.Column(
        "organization_id", sa.Uuid, sa.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    ),
    sa.Column("token_digest", sa.String(128), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("token_digest", name="uq_scim_tokens_token_digest"),
)

scim_resources = sa.Table(
    "scim_resources",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column(
        "organization_id", sa.Uuid, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("unique_key", sa.String(512), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    *_timestamps(),
    sa.UniqueConstraint("organization_id", "kind", "unique_key", name="uq_scim_resources_unique_key"),
)
