"""Analytics rollups: ``call_rollups`` (counters per user, bucket, direction and PBX) and
``call_callbacks`` (how soon a missed call's number was called back).

The calls already in the log are counted in here, so the figures start complete.

Revision ID: 0017
Revises: 0015
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from callbridge.domain.analytics import COUNTER_NAMES, RING_BUCKETS, CallFacts, LoggedCall, recount
from callbridge.domain.events import Direction, Disposition

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_HISTOGRAM = [f"ring_h{i:02d}" for i in range(RING_BUCKETS)]


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite hands back text
        value = datetime.fromisoformat(value)
    moment: datetime = value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def upgrade() -> None:
    op.create_table(
        "call_callbacks",
        sa.Column("call_id", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Integer, nullable=False),
        # No foreign key: see store/analytics.py (its check would deadlock ingest lanes).
        sa.PrimaryKeyConstraint("call_id", name="pk_call_callbacks"),
    )
    op.create_table(
        "call_rollups",
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("grain", sa.Integer, nullable=False),
        sa.Column("bucket", sa.BigInteger, nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("pbx", sa.String(64), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTER_NAMES),
        *(sa.Column(name, sa.Integer, nullable=False, server_default="0") for name in _HISTOGRAM),
        sa.PrimaryKeyConstraint("grain", "user_id", "direction", "bucket", "pbx", name="pk_call_rollups"),
    )
    bind = op.get_bind()
    members: dict[int, set[int]] = {}
    for call_id, user_id in bind.execute(sa.text("SELECT call_id, user_id FROM call_users")):
        members.setdefault(int(call_id), set()).add(int(user_id))
    log: list[LoggedCall] = []
    query = sa.text(
        "SELECT id, pbx, direction, disposition, started_at, ended_at, ring_seconds, talk_seconds,"
        " external_number FROM calls"
    )
    for row in bind.execute(query):
        started = _aware(row.started_at)
        assert started is not None
        log.append(
            LoggedCall(
                int(row.id),
                CallFacts(
                    pbx=row.pbx,
                    direction=Direction(row.direction) if row.direction else None,
                    disposition=Disposition(row.disposition) if row.disposition else None,
                    started_at=started,
                    ring_seconds=int(row.ring_seconds),
                    talk_seconds=int(row.talk_seconds),
                    callback_seconds=None,
                    user_ids=frozenset(members.get(int(row.id), ())),
                ),
                row.external_number,
                _aware(row.ended_at),
            )
        )
    delays, rows = recount(log)
    if delays:
        bind.execute(
            sa.text("INSERT INTO call_callbacks (call_id, seconds) VALUES (:i, :s)"),
            [{"i": i, "s": s} for i, s in sorted(delays.items())],
        )
    if rows:
        table = sa.table(
            "call_rollups",
            *(sa.column(n) for n in ("user_id", "grain", "bucket", "direction", "pbx")),
            *(sa.column(n) for n in (*COUNTER_NAMES, *_HISTOGRAM)),
        )
        values = []
        for key, counters in rows.items():
            item: dict[str, Any] = {
                "user_id": key.user_id,
                "grain": key.grain,
                "bucket": key.bucket,
                "direction": key.direction,
                "pbx": key.pbx,
            }
            item.update({name: getattr(counters, name) for name in COUNTER_NAMES})
            item.update(dict(zip(_HISTOGRAM, counters.ring_histogram, strict=True)))
            values.append(item)
        for start in range(0, len(values), 5000):
            bind.execute(table.insert(), values[start : start + 5000])


def downgrade() -> None:
    op.drop_table("call_rollups")
    op.drop_table("call_callbacks")
