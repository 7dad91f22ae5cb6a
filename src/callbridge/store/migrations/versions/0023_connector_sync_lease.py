"""Connectors: a sync lease (owner and expiry), so that of several hub workers one syncs each
connector per interval.

Revision ID: 0023
Revises: 0022
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("sync_lease_owner", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("sync_lease_until", UtcDateTime, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.drop_column("sync_lease_until")
        batch.drop_column("sync_lease_owner")
