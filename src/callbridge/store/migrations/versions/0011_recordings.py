"""Recordings: each recorded file of a call, fetched from the PBX and stored by the hub.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("storage_key", sa.String(500), nullable=False, server_default=""),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("content_type", sa.String(100), nullable=False, server_default=""),
        sa.Column("sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UtcDateTime, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_recordings"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_recordings_call_id_calls", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("call_id", "reference", name="uq_recordings_call_id_reference"),
    )
    op.create_index("ix_recordings_call_id", "recordings", ["call_id"])
    op.create_index("ix_recordings_next_attempt_at", "recordings", ["next_attempt_at"])
    # Calls recorded before this revision: their PBX file becomes a pending recording, so the
    # fetch worker brings their audio too.
    op.execute(
        "INSERT INTO recordings (call_id, pbx, reference, status, reason, attempts, next_attempt_at,"
        " created_at, updated_at)"
        " SELECT id, pbx, recording, 'pending', '', 0, updated_at, updated_at, updated_at"
        " FROM calls WHERE recording <> ''"
    )


def downgrade() -> None:
    op.drop_index("ix_recordings_next_attempt_at", table_name="recordings")
    op.drop_index("ix_recordings_call_id", table_name="recordings")
    op.drop_table("recordings")
