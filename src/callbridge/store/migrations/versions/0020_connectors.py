"""ERP connectors (ERPNext, Odoo): their settings and encrypted credentials, the ERP records
each synced contact came from, and the durable outbox of calls to write into the ERP.

Revision ID: 0020
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connectors",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.String(500), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("secrets", sa.Text, nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default="1"),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("sync_state", sa.JSON, nullable=False),
        sa.Column("syncing", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("last_sync_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False, server_default=""),
        sa.Column("last_error_at", UtcDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_connectors"),
        sa.UniqueConstraint("name", name="uq_connectors_name"),
    )
    op.create_table(
        "contact_externals",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("connector_id", sa.Integer, nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("ext_id", sa.String(200), nullable=False),
        sa.Column("url", sa.String(500), nullable=False, server_default=""),
        sa.Column("modified", sa.String(40), nullable=False, server_default=""),
        sa.Column("seen_run", sa.Integer, nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name="pk_contact_externals"),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name="fk_contact_externals_connector_id_connectors",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name="fk_contact_externals_contact_id_contacts",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("connector_id", "ext_id", name="uq_contact_externals_connector_id_ext_id"),
    )
    op.create_index("ix_contact_externals_contact_id", "contact_externals", ["contact_id"])
    op.create_table(
        "connector_calls",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("connector_id", sa.Integer, nullable=False),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("pushed_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", UtcDateTime, nullable=False),
        sa.Column("changed_at", UtcDateTime, nullable=False),
        sa.Column("pushed_at", UtcDateTime, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=False, server_default=""),
        sa.Column("ext_id", sa.String(200), nullable=False, server_default=""),
        sa.Column("url", sa.String(500), nullable=False, server_default=""),
        sa.Column("recording_url", sa.String(1000), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_connector_calls"),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name="fk_connector_calls_connector_id_connectors",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_connector_calls_call_id_calls", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("connector_id", "call_id", name="uq_connector_calls_connector_id_call_id"),
    )
    op.create_index("ix_connector_calls_next_at", "connector_calls", ["next_at"])
    op.create_index("ix_connector_calls_call_id", "connector_calls", ["call_id"])


def downgrade() -> None:
    op.drop_index("ix_connector_calls_call_id", table_name="connector_calls")
    op.drop_index("ix_connector_calls_next_at", table_name="connector_calls")
    op.drop_table("connector_calls")
    op.drop_index("ix_contact_externals_contact_id", table_name="contact_externals")
    op.drop_table("contact_externals")
    op.drop_table("connectors")
