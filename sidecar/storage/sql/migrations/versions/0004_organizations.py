"""organizations and their email domains; identities indexed by organization

Mirrored in ``sidecar.storage.sql.tables``; keep both in step.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "organizations",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("slug", name="uq_organizations_slug"),
    )
    op.create_table(
        "organization_domains",
        sa.Column("domain", sa.String(253), primary_key=True),
        sa.Column(
            "organization_id",
            sa.Uuid,
            sa.ForeignKey("organizations.id", ondelete="CASCADE"),
            nullable=False,
        ),
    )
    op.create_index("ix_organization_domains_organization_id", "organization_domains", ["organization_id"])
    # Listing an organization's members, and refusing to delete one that has any.
    op.create_index("ix_identities_organization_id", "identities", ["organization_id"])


def downgrade() -> None:
    op.drop_index("ix_identities_organization_id", "identities")
    op.drop_index("ix_organization_domains_organization_id", "organization_domains")
    op.drop_table("organization_domains")
    op.drop_table("organizations")
