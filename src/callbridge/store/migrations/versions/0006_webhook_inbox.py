"""Webhook inbox: verified Yeastar webhook bodies, persisted before the ack, processed after.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_inbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_inbox"),
    )
    op.create_index("ix_webhook_inbox_pbx_id", "webhook_inbox", ["pbx", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_inbox_pbx_id", table_name="webhook_inbox")
    op.drop_table("webhook_inbox")
