"""Missed calls are the rung users' calls: each user a missed call left a notification for takes
part in it (``call_users``), so they may open it; ingest records them from now on.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "INSERT INTO call_users (call_id, user_id)"
        " SELECT DISTINCT n.call_id, n.user_id FROM notifications n"
        " WHERE n.kind = 'missed_call' AND n.call_id IS NOT NULL"
        " AND EXISTS (SELECT 1 FROM calls c WHERE c.id = n.call_id)"
        " AND NOT EXISTS (SELECT 1 FROM call_users u WHERE u.call_id = n.call_id AND u.user_id = n.user_id)"
    )


def downgrade() -> None:
    # The rows cannot be told from those ingest wrote since; an earlier hub ignores none of
    # them harmfully (they only let a rung user open the missed call).
    pass
