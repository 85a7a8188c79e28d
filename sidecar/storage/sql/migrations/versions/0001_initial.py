"""identities, credentials, addresses, sessions and key-value tables

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Spelled out rather than derived from ``tables.py`` so that later changes to the Core tables can
never silently rewrite what this revision created.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _identity_fk() -> sa.Column[Any]:
    return sa.Column(
        "identity_id", sa.Uuid, sa.ForeignKey("identities.id", ondelete="CASCADE"), nullable=False
    )


def _timestamps() -> list[sa.Column[Any]]:
    return [sa.Column("created_at", _TS, nullable=False), sa.Column("updated_at", _TS, nullable=False)]


def upgrade() -> None:
    op.create_table(
        "identities",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("schema_id", sa.String(255), nullable=False),
        sa.Column("traits", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_changed_at", _TS, nullable=True),
        sa.Column("metadata_public", sa.JSON, nullable=True),
        sa.Column("metadata_admin", sa.JSON, nullable=True),
        sa.Column("external_id", sa.String(255), nullable=True),
        sa.Column("organization_id", sa.Uuid, nullable=True),
        *_timestamps(),
        sa.UniqueConstraint("external_id", name="uq_identities_external_id"),
    )
    op.create_table(
        "identity_credentials",
        sa.Column("id", sa.Uuid, primary_key=True),
        _identity_fk(),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("identity_id", "type", name="uq_identity_credentials_identity_type"),
    )
    op.create_index("ix_identity_credentials_identity_id", "identity_credentials", ["identity_id"])
    op.create_table(
        "identity_credential_identifiers",
        sa.Column("id", sa.Uuid, primary_key=True),
        _identity_fk(),
        sa.Column(
            "credential_id",
            sa.Uuid,
            sa.ForeignKey("identity_credentials.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("identifier", sa.String(255), nullable=False),
        sa.UniqueConstraint("type", "identifier", name="uq_identity_credential_identifiers_type_identifier"),
    )
    op.create_index(
        "ix_identity_credential_identifiers_identity_id", "identity_credential_identifiers", ["identity_id"]
    )
    op.create_index(
        "ix_identity_credential_identifiers_credential_id",
        "identity_credential_identifiers",
        ["credential_id"],
    )
    op.create_table(
        "identity_verifiable_addresses",
        sa.Column("id", sa.Uuid, primary_key=True),
        _identity_fk(),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("value", sa.String(400), nullable=False),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verified_at", _TS, nullable=True),
        *_timestamps(),
        sa.UniqueConstraint("via", "value", name="uq_identity_verifiable_addresses_via_value"),
    )
    op.create_index(
        "ix_identity_verifiable_addresses_identity_id", "identity_verifiable_addresses", ["identity_id"]
    )
    op.create_table(
        "identity_recovery_addresses",
        sa.Column("id", sa.Uuid, primary_key=True),
        _identity_fk(),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("value", sa.String(400), nullable=False),
        *_timestamps(),
        sa.UniqueConstraint("via", "value", name="uq_identity_recovery_addresses_via_value"),
    )
    op.create_index(
        "ix_identity_recovery_addresses_identity_id", "identity_recovery_addresses", ["identity_id"]
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("token_digest", sa.String(128), nullable=False),
        sa.Column("identity_id", sa.Uuid, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.UniqueConstraint("token_digest", name="uq_sessions_token_digest"),
    )
    op.create_index("ix_sessions_identity_id", "sessions", ["identity_id"])
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"])
    op.create_table(
        "kv",
        sa.Column("key", sa.String(512), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("counter", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("expires_at", _TS, nullable=False),
    )
    op.create_index("ix_kv_expires_at", "kv", ["expires_at"])


def downgrade() -> None:
    for table in (
        "kv",
        "sessions",
        "identity_recovery_addresses",
        "identity_verifiable_addresses",
        "identity_credential_identifiers",
        "identity_credentials",
        "identities",
    ):
        op.drop_table(table)
