"""Recordings uploaded by an agent remember it, and a purge asks that agent to delete the PBX's
copy: the request waits in the recording's row (``pbx_copy = 'waiting'``) until the agent
answers (deleted, not_found, refused).

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(sa.Column("via_agent", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("pbx_copy", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("pbx_copy_detail", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("pbx_copy_at", UtcDateTime, nullable=True))
    op.create_index("ix_recordings_pbx_copy", "recordings", ["pbx_copy"])


def downgrade() -> None:
    op.drop_index("ix_recordings_pbx_copy", table_name="recordings")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("pbx_copy_at")
        batch.drop_column("pbx_copy_detail")
        batch.drop_column("pbx_copy")
        batch.drop_column("via_agent")
