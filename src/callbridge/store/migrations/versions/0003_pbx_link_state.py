"""PBX link state, so `callbridge pbx list` and the settings page can show it from any process.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pbxes") as batch:
        batch.add_column(sa.Column("link_up", sa.Boolean, nullable=False, server_default="0"))
        batch.add_column(sa.Column("link_detail", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("link_checked_at", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pbxes") as batch:
        batch.drop_column("link_checked_at")
        batch.drop_column("link_detail")
        batch.drop_column("link_up")
