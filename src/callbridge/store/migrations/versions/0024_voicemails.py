"""Voicemails: one row per message left in a PBX mailbox (mailbox, caller, contact, when, how
long, heard or not, the PBX's id of the call it was left on), with its audio's state and storage key;
and each user's opt-in to an e-mail for every new voicemail (``users.email_voicemail``).

Revision ID: 0024
Revises: 0023
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "voicemails",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("mailbox", sa.String(128), nullable=False),
        sa.Column("extension", sa.String(64), nullable=False),
        sa.Column("reference", sa.String(500), nullable=False),
        sa.Column("caller_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("caller_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("contact_id", sa.Integer, nullable=True),
        sa.Column("received_at", UtcDateTime, nullable=False),
        sa.Column("duration_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("heard", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pbx_call_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("audio_status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("audio_reason", sa.String(500), nullable=False, server_default=""),
        sa.Column("storage_key", sa.String(500), nullable=False, server_default=""),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("content_type", sa.String(100), nullable=False, server_default=""),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_voicemails"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_voicemails_contact_id_contacts", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("pbx", "reference", name="uq_voicemails_pbx_reference"),
    )
    op.create_index("ix_voicemails_pbx_extension", "voicemails", ["pbx", "extension"])
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_voicemail", sa.Boolean, nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_voicemail")
    op.drop_index("ix_voicemails_pbx_extension", table_name="voicemails")
    op.drop_table("voicemails")
