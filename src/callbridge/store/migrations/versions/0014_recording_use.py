"""Recordings in use: shares (links that play without signing in) and their plays, comments on
calls, retention rules, and a legal hold on a recording.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("held", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("held_by", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("held_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("purged_at", UtcDateTime, nullable=True))
    op.create_table(
        "recording_shares",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("recording_id", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.Integer, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_recording_shares"),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name="fk_recording_shares_recording_id_recordings",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name="fk_recording_shares_created_by_users", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("token_hash", name="uq_recording_shares_token_hash"),
    )
    op.create_index("ix_recording_shares_recording_id", "recording_shares", ["recording_id"])
    op.create_table(
        "share_plays",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("share_id", sa.Integer, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("address", sa.String(64), nullable=False, server_default=""),
        sa.Column("user_agent", sa.String(300), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_share_plays"),
        sa.ForeignKeyConstraint(
            ["share_id"],
            ["recording_shares.id"],
            name="fk_share_plays_share_id_recording_shares",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_share_plays_share_id", "share_plays", ["share_id"])
    op.create_table(
        "call_comments",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("author", sa.String(200), nullable=False, server_default=""),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("at_seconds", sa.Float, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_comments"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_comments_call_id_calls", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_call_comments_user_id_users", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_call_comments_call_id", "call_comments", ["call_id"])
    op.create_table(
        "retention_rules",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("older_than_days", sa.Integer, nullable=False),
        sa.Column("direction", sa.String(16), nullable=False, server_default=""),
        sa.Column("tag", sa.String(40), nullable=False, server_default=""),
        sa.Column("pbx", sa.String(64), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_rules"),
    )


def downgrade() -> None:
    op.drop_table("retention_rules")
    op.drop_index("ix_call_comments_call_id", table_name="call_comments")
    op.drop_table("call_comments")
    op.drop_index("ix_share_plays_share_id", table_name="share_plays")
    op.drop_table("share_plays")
    op.drop_index("ix_recording_shares_recording_id", table_name="recording_shares")
    op.drop_table("recording_shares")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("purged_at")
        batch.drop_column("held_at")
        batch.drop_column("held_by")
        batch.drop_column("held")
