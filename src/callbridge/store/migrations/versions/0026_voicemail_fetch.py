"""Voicemails whose audio the hub fetches from the PBX itself (Yeastar: the CDR says a message
was left, the OpenAPI has its audio): when to try next (``fetch_at``; NULL for messages an agent
uploads, and once done), how many tries failed, and the PBX's id of the message once found.
And voicemails deleted with their PBX's copy to go too: the row stays, hidden (``deleted_at``),
as the request to the PBX's agent (``pbx_copy`` "waiting" until it answers deleted / not_found /
refused, with its detail and when). And voicemails' transcripts (``transcript_status``: "" not
made, ready, failed; ``transcript``: language, timed segments, reason). Existing rows keep
everything and get NULL / 0 / "".

Revision ID: 0026
Revises: 0024
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0026"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("voicemails") as batch:
        batch.add_column(sa.Column("fetch_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("fetch_attempts", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("pbx_message_id", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("deleted_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("pbx_copy", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("pbx_copy_detail", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("pbx_copy_at", UtcDateTime, nullable=True))
        batch.add_column(sa.Column("transcript_status", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("transcript", sa.JSON, nullable=True))
    op.create_index("ix_voicemails_fetch_at", "voicemails", ["fetch_at"])
    op.create_index("ix_voicemails_pbx_copy", "voicemails", ["pbx_copy"])


def downgrade() -> None:
    op.drop_index("ix_voicemails_pbx_copy", table_name="voicemails")
    op.drop_index("ix_voicemails_fetch_at", table_name="voicemails")
    with op.batch_alter_table("voicemails") as batch:
        batch.drop_column("transcript")
        batch.drop_column("transcript_status")
        batch.drop_column("pbx_copy_at")
        batch.drop_column("pbx_copy_detail")
        batch.drop_column("pbx_copy")
        batch.drop_column("deleted_at")
        batch.drop_column("pbx_message_id")
        batch.drop_column("fetch_attempts")
        batch.drop_column("fetch_at")
