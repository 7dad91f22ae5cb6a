"""Queues: each call's queue visits (the last queue as a column to group by), queue members'
state changes (pause reasons, log in/out), per-queue settings and read-only wallboard links.

Revision ID: 0018
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("queue", sa.String(64), nullable=True))
        batch.add_column(sa.Column("queue_wait_seconds", sa.Integer, nullable=True))
        batch.add_column(sa.Column("queue_outcome", sa.String(16), nullable=True))
        batch.add_column(sa.Column("queue_visits", sa.Text, nullable=True))
    op.create_index("ix_calls_queue", "calls", ["queue"])
    op.create_table(
        "queue_member_events",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("extension", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_queue_member_events"),
        sa.UniqueConstraint("pbx", "idempotency_key", name="uq_queue_member_events_pbx_idempotency_key"),
    )
    op.create_index("ix_queue_member_events_queue_at", "queue_member_events", ["queue", "at"])
    op.create_table(
        "queue_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("sl_seconds", sa.Integer, nullable=False),
        sa.Column("short_abandon_seconds", sa.Integer, nullable=False),
        sa.Column("wrapup_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_queue_settings"),
    )
    op.create_table(
        "wallboard_links",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_wallboard_links"),
        sa.UniqueConstraint("token_hash", name="uq_wallboard_links_token_hash"),
    )


def downgrade() -> None:
    op.drop_table("wallboard_links")
    op.drop_table("queue_settings")
    op.drop_index("ix_queue_member_events_queue_at", table_name="queue_member_events")
    op.drop_table("queue_member_events")
    op.drop_index("ix_calls_queue", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("queue_visits")
        batch.drop_column("queue_outcome")
        batch.drop_column("queue_wait_seconds")
        batch.drop_column("queue")
