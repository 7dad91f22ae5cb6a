"""The live desk's alerts, opt-in per user: a ring sound and a desktop notification for a call
ringing at the user's phone. Both off for every existing user.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("ring_sound", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(
            sa.Column("desktop_notifications", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("desktop_notifications")
        batch.drop_column("ring_sound")
