"""Courier: the outgoing message queue and its delivery attempts.

Mirrored as ``Table`` objects in ``sidecar.storage.sql.courier_store``; keep both in step.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "courier_messages",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(320), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("html_body", sa.Text(), nullable=True),
        sa.Column("template_type", sa.String(64), nullable=False),
        sa.Column("template_data", sa.JSON(), nullable=False),
        sa.Column("send_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The worker's claim query: due messages by status and time.
    op.create_index("ix_courier_messages_status_next", "courier_messages", ["status", "next_attempt_at"])
    # The admin listing: newest first, keyset on (created_at, id).
    op.create_index("ix_courier_messages_created", "courier_messages", ["created_at", "id"])
    op.create_index("ix_courier_messages_recipient", "courier_messages", ["recipient"])
    op.create_table(
        "courier_message_dispatches",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "message_id",
            sa.Uuid(),
            sa.ForeignKey("courier_messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_courier_message_dispatches_message", "courier_message_dispatches", ["message_id"])


def downgrade() -> None:
    op.drop_table("courier_message_dispatches")
    op.drop_table("courier_messages")
