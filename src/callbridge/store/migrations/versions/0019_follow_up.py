"""Follow-up: tasks (callbacks, follow-ups) with their calls and comments, teams that share
callbacks round robin, a note and a call type on each call (the admin keeps the types), and
e-mail: each user's address and digest opt-in, and the durable outbox.

Revision ID: 0019
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from callbridge.store.tables import UtcDateTime

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("contact_id", sa.Integer, nullable=True),
        sa.Column("assignee_id", sa.Integer, nullable=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("due_at", UtcDateTime, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
        sa.Column("closed_at", UtcDateTime, nullable=True),
        sa.Column("closed_by_call_id", sa.Integer, nullable=True),
        sa.Column("closed_by_user_id", sa.Integer, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name="fk_tasks_contact_id_contacts", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["assignee_id"], ["users.id"], name="fk_tasks_assignee_id_users", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_call_id"], ["calls.id"], name="fk_tasks_closed_by_call_id_calls", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_user_id"], ["users.id"], name="fk_tasks_closed_by_user_id_users", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_tasks_status_number", "tasks", ["status", "number"])
    op.create_index("ix_tasks_assignee_id_status", "tasks", ["assignee_id", "status"])
    op.create_table(
        "task_calls",
        sa.Column("task_id", sa.Integer, nullable=False),
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("task_id", "call_id", name="pk_task_calls"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_calls_task_id_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["calls.id"], name="fk_task_calls_call_id_calls", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_task_calls_call_id", "task_calls", ["call_id"])
    op.create_table(
        "task_comments",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("task_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_task_comments"),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_comments_task_id_tasks", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_task_comments_user_id_users", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_task_comments_task_id", "task_comments", ["task_id"])
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_user_id", sa.Integer, nullable=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_teams"),
        sa.UniqueConstraint("name", name="uq_teams_name"),
    )
    op.create_table(
        "team_members",
        sa.Column("team_id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("team_id", "user_id", name="pk_team_members"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.id"], name="fk_team_members_team_id_teams", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_team_members_user_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])
    op.create_table(
        "call_types",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_types"),
        sa.UniqueConstraint("name", name="uq_call_types_name"),
    )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("note", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("call_type", sa.String(64), nullable=False, server_default=""))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(254), nullable=False, server_default=""))
        batch.add_column(sa.Column("email_digest", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "email_outbox",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("to_address", sa.String(254), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", UtcDateTime, nullable=False),
        sa.Column("sent_at", UtcDateTime, nullable=True),
        sa.Column("status", sa.String(8), nullable=False, server_default="pending"),
        sa.Column("last_error", sa.String(500), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_email_outbox"),
        sa.UniqueConstraint("key", name="uq_email_outbox_key"),
    )
    op.create_index("ix_email_outbox_status_next_attempt_at", "email_outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_email_outbox_status_next_attempt_at", table_name="email_outbox")
    op.drop_table("email_outbox")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_digest")
        batch.drop_column("email")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("call_type")
        batch.drop_column("note")
    op.drop_table("call_types")
    op.drop_index("ix_team_members_user_id", table_name="team_members")
    op.drop_table("team_members")
    op.drop_table("teams")
    op.drop_index("ix_task_comments_task_id", table_name="task_comments")
    op.drop_table("task_comments")
    op.drop_index("ix_task_calls_call_id", table_name="task_calls")
    op.drop_table("task_calls")
    op.drop_index("ix_tasks_assignee_id_status", table_name="tasks")
    op.drop_index("ix_tasks_status_number", table_name="tasks")
    op.drop_table("tasks")
