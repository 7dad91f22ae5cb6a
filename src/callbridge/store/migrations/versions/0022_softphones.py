"""Softphones: a user's SIP account for the phone in the browser (the PBX's WebSocket URL, the
SIP URI and auth user, STUN/TURN servers), its secret and TURN credentials encrypted at rest, and
the one pending one-time nonce that lets the user's registering tab fetch the secret.

Revision ID: 0022
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "softphones",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("ws_url", sa.String(500), nullable=False),
        sa.Column("sip_uri", sa.String(300), nullable=False),
        sa.Column("auth_user", sa.String(128), nullable=False),
        sa.Column("ice_servers", sa.JSON, nullable=False),
        sa.Column("secrets", sa.Text, nullable=False),
        sa.Column("nonce_hash", sa.String(64), nullable=True),
        sa.Column("nonce_expires_at", UtcDateTime, nullable=True),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_softphones"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_softphones_user_id_users", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("softphones")
