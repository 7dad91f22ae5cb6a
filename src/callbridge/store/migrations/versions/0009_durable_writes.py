"""Durable writes: a table readiness writes to, and the keys of webhooks already processed.

Revision ID: 0009
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_probe",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_write_probe"),
    )
    op.create_table(
        "webhook_seen",
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("seen_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("pbx", "key", name="pk_webhook_seen"),
    )
    op.create_index("ix_webhook_seen_seen_at", "webhook_seen", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_seen_seen_at", table_name="webhook_seen")
    op.drop_table("webhook_seen")
    op.drop_table("write_probe")
