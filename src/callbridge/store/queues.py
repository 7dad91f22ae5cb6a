"""Queues in the database: members' state changes, per-queue settings, the calls' queue visits
for a period, and the read-only wallboard links."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Column, Integer, String, Table, UniqueConstraint, and_, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.events import QueueMemberChanged, event_from_dict
from callbridge.domain.queues import QueueSettings, QueueVisit, visits_from_json
from callbridge.store.calls import calls
from callbridge.store.tables import UtcDateTime, metadata, now

queue_member_events = Table(
    "queue_member_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False),
    Column("queue", String(64), nullable=False),
    Column("extension", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("idempotency_key", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    UniqueConstraint("pbx", "idempotency_key", name="uq_queue_member_events_pbx_idempotency_key"),
)

queue_settings = Table(
    "queue_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("sl_seconds", Integer, nullable=False),
    Column("short_abandon_seconds", Integer, nullable=False),
    Column("wrapup_seconds", Integer, nullable=False, server_default="0"),
    Column("updated_at", UtcDateTime, nullable=False, default=now),
)

wallboard_links = Table(
    "wallboard_links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(100), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("revoked_at", UtcDateTime, nullable=True),
)

# A visit starts no earlier than its call: calls that started this long before a period may
# still have visits inside it (a caller waiting across midnight).
VISIT_LOOKBACK = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class WallboardLink:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None


class SqlQueues:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_member_events(self, events: Sequence[QueueMemberChanged]) -> list[QueueMemberChanged]:
        """Store member events not stored yet; returns the new ones (a resend is dropped)."""
        if not events:
            return []
        dialect = self.session.get_bind().dialect.name
        new: list[QueueMemberChanged] = []
        for event in events:
            values = {
                "pbx": event.pbx,
                "queue": event.queue[:64],
                "extension": event.extension[:32],
                "at": event.at,
                "idempotency_key": event.idempotency_key,
                "payload": event.to_dict(),
            }
            stmt: Any
            if dialect == "postgresql":
                stmt = postgresql.insert(queue_member_events).values(values).on_conflict_do_nothing()
            elif dialect == "sqlite":
                stmt = sqlite.insert(queue_member_events).values(values).on_conflict_do_nothing()
            else:  # pragma: no cover - the two supported databases
                stmt = insert(queue_member_events).values(values)
            result = await self.session.execute(stmt)
            if getattr(result, "rowcount", 0):
                new.append(event)
        return new

    async def member_events(self, queue: str, until: datetime) -> list[QueueMemberChanged]:
        rows = await self.session.execute(
            select(queue_member_events.c.payload)
            .where(queue_member_events.c.queue == queue, queue_member_events.c.at < until)
            .order_by(queue_member_events.c.at, queue_member_events.c.id)
        )
        out: list[QueueMemberChanged] = []
        for (payload,) in rows:
            event = event_from_dict(payload)
            if isinstance(event, QueueMemberChanged):
                out.append(event)
        return out

    async def visits(self, start: datetime, end: datetime, queue: str | None = None) -> list[QueueVisit]:
        """Queue visits that began in [start, end) (of ``queue`` when given)."""
        stmt = select(calls.c.queue_visits).where(
            calls.c.queue_visits.is_not(None),
            calls.c.started_at >= start - VISIT_LOOKBACK,
            calls.c.started_at < end,
        )
        out: list[QueueVisit] = []
        for (text,) in await self.session.execute(stmt):
            for visit in visits_from_json(text):
                if start <= visit.entered_at < end and (queue is None or visit.queue == queue):
                    out.append(visit)
        return out

    async def visits_by_call(self, start: datetime, end: datetime) -> dict[str, list[QueueVisit]]:
        """Every call with a queue visit that began in [start, end), as "pbx/call id" → visits."""
        stmt = select(calls.c.pbx, calls.c.pbx_call_id, calls.c.queue_visits).where(
            calls.c.queue_visits.is_not(None),
            calls.c.started_at >= start - VISIT_LOOKBACK,
            calls.c.started_at < end,
        )
        out: dict[str, list[QueueVisit]] = {}
        for pbx, call_id, text in await self.session.execute(stmt):
            visits = visits_from_json(text)
            if any(start <= v.entered_at < end for v in visits):
                out[f"{pbx}/{call_id}"] = visits
        return out

    async def all_settings(self) -> dict[str, QueueSettings]:
        rows = await self.session.execute(select(queue_settings))
        return {r.name: QueueSettings(r.sl_seconds, r.short_abandon_seconds, r.wrapup_seconds) for r in rows}

    async def recent_member_events(self, since: datetime) -> list[QueueMemberChanged]:
        rows = await self.session.execute(
            select(queue_member_events.c.payload)
            .where(queue_member_events.c.at >= since)
            .order_by(queue_member_events.c.at, queue_member_events.c.id)
        )
        out: list[QueueMemberChanged] = []
        for (payload,) in rows:
            event = event_from_dict(payload)
            if isinstance(event, QueueMemberChanged):
                out.append(event)
        return out

    async def names(self) -> list[str]:
        """Every queue the log or the settings know."""
        seen = {n for (n,) in await self.session.execute(select(calls.c.queue).distinct()) if n}
        seen |= {n for (n,) in await self.session.execute(select(queue_settings.c.name))}
        seen |= {n for (n,) in await self.session.execute(select(queue_member_events.c.queue).distinct())}
        return sorted(seen)

    async def settings(self, name: str) -> QueueSettings:
        row = (
            await self.session.execute(select(queue_settings).where(queue_settings.c.name == name))
        ).first()
        if row is None:
            return QueueSettings()
        return QueueSettings(row.sl_seconds, row.short_abandon_seconds, row.wrapup_seconds)

    async def set_settings(self, name: str, settings: QueueSettings) -> None:
        values = {
            "sl_seconds": settings.sl_seconds,
            "short_abandon_seconds": settings.short_abandon_seconds,
            "wrapup_seconds": settings.wrapup_seconds,
            "updated_at": now(),
        }
        done = await self.session.execute(
            update(queue_settings).where(queue_settings.c.name == name).values(values)
        )
        if not getattr(done, "rowcount", 0):
            await self.session.execute(insert(queue_settings).values(name=name[:64], **values))

    # -- wallboard links --------------------------------------------------------------------------

    async def add_wallboard_link(self, token_hash: str, name: str) -> int:
        result = await self.session.execute(
            insert(wallboard_links)
            .values(token_hash=token_hash, name=name[:100], created_at=now())
            .returning(wallboard_links.c.id)
        )
        return int(result.scalar_one())

    async def wallboard_link_id(self, token_hash: str) -> int | None:
        """The id of the link with this token, while it is not revoked."""
        row = (
            await self.session.execute(
                select(wallboard_links.c.id).where(
                    and_(wallboard_links.c.token_hash == token_hash, wallboard_links.c.revoked_at.is_(None))
                )
            )
        ).first()
        return int(row.id) if row is not None else None

    async def wallboard_links(self) -> list[WallboardLink]:
        rows = await self.session.execute(select(wallboard_links).order_by(wallboard_links.c.id))
        return [WallboardLink(r.id, r.name, r.created_at, r.revoked_at) for r in rows]

    async def revoke_wallboard_link(self, link_id: int) -> bool:
        done = await self.session.execute(
            update(wallboard_links)
            .where(wallboard_links.c.id == link_id, wallboard_links.c.revoked_at.is_(None))
            .values(revoked_at=now())
        )
        return bool(getattr(done, "rowcount", 0))
