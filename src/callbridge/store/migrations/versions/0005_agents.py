"""Agents beside Asterisk: hashed tokens, outbox high-water marks, health, raw events, bans.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=True),
        sa.Column("token_prefix", sa.String(32), nullable=False, server_default=""),
        sa.Column("token_created_at", UtcDateTime, nullable=True),
        sa.Column("outbox_epoch", sa.String(64), nullable=False, server_default=""),
        sa.Column("high_water", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("version", sa.String(64), nullable=False, server_default=""),
        sa.Column("connected", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("seen_at", UtcDateTime, nullable=True),
        sa.Column("last_event_at", UtcDateTime, nullable=True),
        sa.Column("outbox_depth", sa.Integer, nullable=False, server_default="0"),
        sa.Column("outbox_age_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("outbox_dropped", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ami_up", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("ami_detail", sa.String(500), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_agents"),
        sa.UniqueConstraint("pbx", name="uq_agents_pbx"),
        sa.UniqueConstraint("token_hash", name="uq_agents_token_hash"),
        sa.ForeignKeyConstraint(["pbx"], ["pbxes.name"], name="fk_agents_pbx_pbxes", ondelete="CASCADE"),
    )
    op.create_table(
        "agent_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_events"),
    )
    op.create_index("ix_agent_events_pbx", "agent_events", ["pbx"])
    op.create_table(
        "agent_bans",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False, server_default=""),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("banned_at", UtcDateTime, nullable=True),
        sa.Column("until", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_agent_bans"),
        sa.UniqueConstraint("pbx", "address", name="uq_agent_bans_pbx_address"),
    )


def downgrade() -> None:
    op.drop_table("agent_bans")
    op.drop_index("ix_agent_events_pbx", table_name="agent_events")
    op.drop_table("agent_events")
    op.drop_table("agents")
