"""Agent enrollment codes: short-lived, single-use, stored hashed; exchanged for an agent token.

Revision ID: 0021
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_enrollments",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("code_prefix", sa.String(32), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("expires_at", UtcDateTime, nullable=False),
        sa.Column("used_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_enrollments"),
        sa.ForeignKeyConstraint(
            ["pbx"], ["pbxes.name"], name="fk_agent_enrollments_pbx_pbxes", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("code_hash", name="uq_agent_enrollments_code_hash"),
    )
    op.create_index("ix_agent_enrollments_pbx", "agent_enrollments", ["pbx"])


def downgrade() -> None:
    op.drop_index("ix_agent_enrollments_pbx", table_name="agent_enrollments")
    op.drop_table("agent_enrollments")
