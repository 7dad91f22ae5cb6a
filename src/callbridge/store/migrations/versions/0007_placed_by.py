"""Who placed a call: ``calls.placed_by_extension``; outbound calls are answered by the outside party.

Existing rows: an outbound or internal call was placed by its caller when the caller is an
extension (digits only). Outbound calls were recorded as "answered by" the extension that
placed them; that extension (and its user) is moved to "placed by" and "answered by" is
cleared: the outside party answered.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("placed_by_extension", sa.String(32), nullable=False, server_default=""))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        is_extension = "from_number ~ '^[0-9]{1,32}$'"
    else:
        is_extension = "from_number <> '' AND length(from_number) <= 32 AND from_number NOT GLOB '*[^0-9]*'"
    op.execute(
        "UPDATE calls SET placed_by_extension = from_number"  # noqa: S608 - constant SQL
        f" WHERE direction IN ('outbound', 'internal') AND {is_extension}"
    )
    # An outbound call whose caller was no extension (a trunk's caller id): the old "answered by".
    op.execute(
        "UPDATE calls SET placed_by_extension = answered_by_extension"
        " WHERE direction = 'outbound' AND placed_by_extension = '' AND answered_by_extension <> ''"
    )
    op.execute(
        "UPDATE calls SET made_by_user_id = answered_by_user_id"
        " WHERE direction = 'outbound' AND made_by_user_id IS NULL"
        " AND answered_by_extension = placed_by_extension AND answered_by_user_id IS NOT NULL"
    )
    op.execute(
        "UPDATE calls SET answered_by_extension = '', answered_by_user_id = NULL WHERE direction = 'outbound'"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE calls SET answered_by_extension = placed_by_extension, answered_by_user_id = made_by_user_id"
        " WHERE direction = 'outbound' AND disposition = 'answered'"
    )
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("placed_by_extension")
