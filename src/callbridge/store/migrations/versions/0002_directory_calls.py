"""Directory and call log: contacts, numbers, tags, extension map, dialplan tokens, calls.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("name_folded", sa.String(200), nullable=False),
        sa.Column("company_id", sa.Integer, nullable=True),
        sa.Column("email", sa.String(254), nullable=False, server_default=""),
        sa.Column("owner_id", sa.Integer, nullable=True),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        sa.Column("external_id", sa.String(200), nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        sa.ForeignKeyConstraint(
            ["company_id"], ["contacts.id"], name="fk_contacts_company_id_contacts", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name="fk_contacts_owner_id_users", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("external_id", name="uq_contacts_external_id"),
    )
    op.create_index("ix_contacts_name_folded", "contacts", ["name_folded"])
    op.create_index("ix_contacts_company_id", "contacts", ["company_id"])
    op.create_index("ix_contacts_owner_id", "contacts", ["owner_id"])
    op.create_index("ix_contacts_kind_name", "contacts", ["kind", "name_folded"])

    op.create_table(
        "contact_phones",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("raw", sa.String(64), nullable=False),
        sa.Column("number_key", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_contact_phones"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_contact_phones_contact_id_contacts", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("contact_id", "number_key", name="uq_contact_phones_contact_id_number_key"),
    )
    op.create_index("ix_contact_phones_contact_id", "contact_phones", ["contact_id"])
    # The lookup index: every dialplan question and every call's contact link is one probe here.
    op.create_index("ix_contact_phones_number_key", "contact_phones", ["number_key"])

    op.create_table(
        "contact_tags",
        sa.Column("contact_id", sa.Integer, nullable=False),
        sa.Column("tag", sa.String(40), nullable=False),
        sa.Column("tag_folded", sa.String(40), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "tag_folded", name="pk_contact_tags"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_contact_tags_contact_id_contacts", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_contact_tags_tag_folded", "contact_tags", ["tag_folded"])

    op.create_table(
        "extension_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("extension", sa.String(32), nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_extension_users"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_extension_users_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("pbx", "extension", name="uq_extension_users_pbx_extension"),
    )
    op.create_index("ix_extension_users_user_id", "extension_users", ["user_id"])

    op.create_table(
        "dialplan_tokens",
        sa.Column("pbx_id", sa.Integer, nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_secret", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("pbx_id", name="pk_dialplan_tokens"),
        sa.ForeignKeyConstraint(
            ["pbx_id"], ["pbxes.id"], name="fk_dialplan_tokens_pbx_id_pbxes", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("token_hash", name="uq_dialplan_tokens_token_hash"),
    )

    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pbx", sa.String(64), nullable=False),
        sa.Column("pbx_call_id", sa.String(128), nullable=False),
        sa.Column("direction", sa.String(16), nullable=True),
        sa.Column("from_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("to_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("from_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("external_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("disposition", sa.String(16), nullable=True),
        sa.Column("hangup_side", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("answered_by_extension", sa.String(32), nullable=False, server_default=""),
        sa.Column("answered_by_user_id", sa.Integer, nullable=True),
        sa.Column("made_by_user_id", sa.Integer, nullable=True),
        sa.Column("started_at", UtcDateTime, nullable=False),
        sa.Column("answered_at", UtcDateTime, nullable=True),
        sa.Column("ended_at", UtcDateTime, nullable=True),
        sa.Column("ring_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("talk_seconds", sa.Integer, nullable=False, server_default="0"),
        sa.Column("transferred_to", sa.String(64), nullable=False, server_default=""),
        sa.Column("recording", sa.String(500), nullable=False, server_default=""),
        sa.Column("contact_id", sa.Integer, nullable=True),
        sa.Column("company_id", sa.Integer, nullable=True),
        sa.Column("match", sa.String(16), nullable=False, server_default="none"),
        sa.Column("manual_link", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
        sa.ForeignKeyConstraint(
            ["answered_by_user_id"],
            ["users.id"],
            name="fk_calls_answered_by_user_id_users",
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["made_by_user_id"], ["users.id"], name="fk_calls_made_by_user_id_users", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_calls_contact_id_contacts", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["company_id"], ["contacts.id"], name="fk_calls_company_id_contacts", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("pbx", "pbx_call_id", name="uq_calls_pbx_pbx_call_id"),
    )
    op.create_index("ix_calls_external_number", "calls", ["external_number"])
    op.create_index("ix_calls_contact_id", "calls", ["contact_id"])
    op.create_index("ix_calls_company_id", "calls", ["company_id"])
    op.create_index("ix_calls_started_at_id", "calls", ["started_at", "id"])

    op.create_table(
        "call_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at", UtcDateTime, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_events"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_events_call_id_calls", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("call_id", "idempotency_key", name="uq_call_events_call_id_idempotency_key"),
    )

    op.create_table(
        "call_users",
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("call_id", "user_id", name="pk_call_users"),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_call_users_call_id_calls", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_call_users_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_call_users_user_id", "call_users", ["user_id"])


def downgrade() -> None:
    op.drop_table("call_users")
    op.drop_table("call_events")
    op.drop_table("calls")
    op.drop_table("dialplan_tokens")
    op.drop_table("extension_users")
    op.drop_table("contact_tags")
    op.drop_table("contact_phones")
    op.drop_table("contacts")
