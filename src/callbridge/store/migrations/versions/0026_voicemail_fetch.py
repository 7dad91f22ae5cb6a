"""Voicemails whose audio the hub fetches from the PBX itself (Yeastar: the CDR says a message
was left, the OpenAPI has its audio): when to try next (``fetch_at``; NULL for messages an agent
uploads, and once done), how many tries failed, and the PBX's id of the message once found.
Existing rows keep everything and get NULL / 0 / "".

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
    op.create_index("ix_voicemails_fetch_at", "voicemails", ["fetch_at"])


def downgrade() -> None:
    op.drop_index("ix_voicemails_fetch_at", table_name="voicemails")
    with op.batch_alter_table("voicemails") as batch:
        batch.drop_column("pbx_message_id")
        batch.drop_column("fetch_attempts")
        batch.drop_column("fetch_at")
