"""SCIM 2.0 provisioning: the resources an organization's identity provider provisioned, and
its bearer token (a SHA-256 digest)

Mirrored in ``sidecar.storage.sql.tables``; keep both in step.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _organization_fk() -> sa.Column[object]:
    return sa.Column(
        "organization_id", sa.Uuid, sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "scim_tokens",
        sa.Column(
            "organization_id",
            sa.Uuid,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("token_digest", sa.String(128), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.UniqueConstraint("token_digest", name="uq_scim_tokens_token_digest"),
    )
    op.create_table(
        "scim_resources",
        sa.Column("id", sa.Uuid, primary_key=True),
        _organization_fk(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("unique_key", sa.String(512), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("organization_id", "kind", "unique_key", name="uq_scim_resources_unique_key"),
    )
    op.create_index("ix_scim_resources_organization_kind", "scim_resources", ["organization_id", "kind"])


def downgrade() -> None:
    op.drop_index("ix_scim_resources_organization_kind", "scim_resources")
    op.drop_table("scim_resources")
    op.drop_table("scim_tokens")
