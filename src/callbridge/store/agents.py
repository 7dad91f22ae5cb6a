"""SQL for agents: their hashed tokens, outbox high-water marks, health, forwarded raw events, bans."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.services.agents import AgentHealth, AgentRecord, Ban, Enrollment, RawEvent
from callbridge.store.tables import UtcDateTime, metadata, now

# Forwarded raw AMI events kept in the hub (newest first); older ones are pruned.
RAW_EVENTS_KEEP = 10_000
# Used or expired enrollment codes are kept this long after they expire (so a reused code is
# answered "already used", not "unknown"), then pruned when a new code is issued.
ENROLLMENTS_KEPT = timedelta(days=30)

agents = Table(
    "agents",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), ForeignKey("pbxes.name", ondelete="CASCADE"), nullable=False, unique=True),
    # sha256 of the token; NULL when revoked. The token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=True, unique=True),
    Column("token_prefix", String(32), nullable=False, server_default=""),
    Column("token_created_at", UtcDateTime, nullable=True),
    # The agent's outbox identity and the highest sequence number the hub has committed from it.
    Column("outbox_epoch", String(64), nullable=False, server_default=""),
    Column("high_water", BigInteger, nullable=False, server_default="0"),
    Column("version", String(64), nullable=False, server_default=""),
    Column("connected", Boolean, nullable=False, server_default="0"),
    Column("seen_at", UtcDateTime, nullable=True),
    Column("last_event_at", UtcDateTime, nullable=True),
    Column("outbox_depth", Integer, nullable=False, server_default="0"),
    Column("outbox_age_seconds", Float, nullable=False, server_default="0"),
    Column("outbox_dropped", Integer, nullable=False, server_default="0"),
    Column("ami_up", Boolean, nullable=False, server_default="0"),
    Column("ami_detail", String(500), nullable=False, server_default=""),
)

# Enrollment codes (`callbridge pbx enroll`): stored hashed, good once until they expire.
agent_enrollments = Table(
    "agent_enrollments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), ForeignKey("pbxes.name", ondelete="CASCADE"), nullable=False, index=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("code_prefix", String(32), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),
)

agent_events = Table(
    "agent_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False, index=True),
    Column("name", String(64), nullable=False),
    Column("headers", JSON, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("received_at", UtcDateTime, nullable=False, default=now),
)

agent_bans = Table(
    "agent_bans",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("reason", String(200), nullable=False, server_default=""),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("banned_at", UtcDateTime, nullable=True),
    Column("until", UtcDateTime, nullable=True),
    UniqueConstraint("pbx", "address", name="uq_agent_bans_pbx_address"),
)


def _record(row: Any) -> AgentRecord:
    return AgentRecord(
        pbx=row.pbx,
        token_prefix=row.token_prefix or "",
        token_created_at=row.token_created_at,
        revoked=row.token_hash is None,
        epoch=row.outbox_epoch or "",
        high_water=int(row.high_water or 0),
        version=row.version or "",
        connected=bool(row.connected),
        seen_at=row.seen_at,
        last_event_at=row.last_event_at,
        outbox_depth=int(row.outbox_depth or 0),
        outbox_age_seconds=float(row.outbox_age_seconds or 0.0),
        outbox_dropped=int(row.outbox_dropped or 0),
        ami_up=bool(row.ami_up),
        ami_detail=row.ami_detail or "",
    )


class SqlAgentStore:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def find(self, pbx: str) -> AgentRecord | None:
        row = (await self.session.execute(select(agents).where(agents.c.pbx == pbx))).first()
        return _record(row) if row else None

    async def all(self) -> list[AgentRecord]:
        rows = (await self.session.execute(select(agents).order_by(agents.c.pbx))).all()
        return [_record(r) for r in rows]

    async def by_token_hash(self, token_hash: str) -> AgentRecord | None:
        row = (await self.session.execute(select(agents).where(agents.c.token_hash == token_hash))).first()
        return _record(row) if row else None

    async def set_token(self, pbx: str, prefix: str, token_hash: str | None) -> None:
        values: dict[str, Any] = {
            "token_hash": token_hash,
            "token_prefix": prefix,
            "token_created_at": now() if token_hash else None,
        }
        if await self.find(pbx) is None:
            await self.session.execute(insert(agents).values(pbx=pbx, **values))
        else:
            await self.session.execute(update(agents).where(agents.c.pbx == pbx).values(**values))

    # -- enrollment codes ---------------------------------------------------------------------

    async def add_enrollment(
        self, pbx: str, prefix: str, code_hash: str, created_at: datetime, expires_at: datetime
    ) -> None:
        # Spent and long-expired codes mean nothing any more: keep the table small.
        await self.session.execute(
            delete(agent_enrollments).where(agent_enrollments.c.expires_at < created_at - ENROLLMENTS_KEPT)
        )
        await self.session.execute(
            insert(agent_enrollments).values(
                pbx=pbx, code_hash=code_hash, code_prefix=prefix, created_at=created_at, expires_at=expires_at
            )
        )

    async def enrollment(self, code_hash: str) -> Enrollment | None:
        row = (
            await self.session.execute(
                select(agent_enrollments).where(agent_enrollments.c.code_hash == code_hash)
            )
        ).first()
        if row is None:
            return None
        return Enrollment(row.pbx, row.code_prefix, row.created_at, row.expires_at, row.used_at)

    async def use_enrollment(self, code_hash: str, at: datetime) -> bool:
        """Spend a code; False when someone else spent it first (the update is conditional)."""
        result = await self.session.execute(
            update(agent_enrollments)
            .where(agent_enrollments.c.code_hash == code_hash, agent_enrollments.c.used_at.is_(None))
            .values(used_at=at)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def advance(self, pbx: str, epoch: str, high_water: int, last_event_at: datetime | None) -> None:
        """Record that every row up to ``high_water`` of outbox ``epoch`` is committed."""
        values: dict[str, Any] = {"outbox_epoch": epoch, "high_water": high_water}
        if last_event_at is not None:
            values["last_event_at"] = last_event_at
        await self.session.execute(update(agents).where(agents.c.pbx == pbx).values(**values))

    async def record_connection(self, pbx: str, connected: bool, version: str | None = None) -> None:
        values: dict[str, Any] = {"connected": connected, "seen_at": now()}
        if version is not None:
            values["version"] = version[:64]
        await self.session.execute(update(agents).where(agents.c.pbx == pbx).values(**values))

    async def record_health(self, pbx: str, health: AgentHealth) -> None:
        values: dict[str, Any] = {
            "seen_at": now(),
            "outbox_depth": health.outbox_depth,
            "outbox_age_seconds": health.outbox_age_seconds,
            "outbox_dropped": health.outbox_dropped,
            "ami_up": health.ami_up,
            "ami_detail": health.ami_detail[:500],
        }
        await self.session.execute(update(agents).where(agents.c.pbx == pbx).values(**values))

    # -- batched call events (the agent's batches; same rows SqlCalls writes) ---------------------

    # -- raw events (events map) ----------------------------------------------------------------

    async def add_raw_events(self, pbx: str, items: Sequence[tuple[str, dict[str, Any], datetime]]) -> None:
        if not items:
            return
        received = now()
        await self.session.execute(
            insert(agent_events),
            [{"pbx": pbx, "name": n, "headers": h, "at": at, "received_at": received} for n, h, at in items],
        )
        newest = (await self.session.execute(select(func.max(agent_events.c.id)))).scalar_one()
        if newest is not None and newest > RAW_EVENTS_KEEP:
            await self.session.execute(
                delete(agent_events).where(agent_events.c.id <= newest - RAW_EVENTS_KEEP)
            )

    async def raw_events(
        self, pbx: str | None = None, limit: int = 100, before: int | None = None
    ) -> list[RawEvent]:
        query = select(agent_events).order_by(agent_events.c.id.desc()).limit(limit)
        if pbx:
            query = query.where(agent_events.c.pbx == pbx)
        if before is not None:
            query = query.where(agent_events.c.id < before)
        rows = (await self.session.execute(query)).all()
        return [RawEvent(r.id, r.pbx, r.name, dict(r.headers or {}), r.at, r.received_at) for r in rows]

    # -- bans -----------------------------------------------------------------------------------

    async def replace_bans(self, pbx: str, bans: Sequence[Ban]) -> None:
        await self.session.execute(delete(agent_bans).where(agent_bans.c.pbx == pbx))
        if bans:
            await self.session.execute(
                insert(agent_bans),
                [
                    {
                        "pbx": pbx,
                        "address": b.address,
                        "reason": b.reason,
                        "failures": b.failures,
                        "banned_at": b.banned_at,
                        "until": b.until,
                    }
                    for b in {b.address: b for b in bans}.values()
                ],
            )

    async def remove_ban(self, pbx: str, address: str) -> None:
        await self.session.execute(
            delete(agent_bans).where(agent_bans.c.pbx == pbx, agent_bans.c.address == address)
        )

    async def bans(self, pbx: str | None = None) -> list[Ban]:
        query = select(agent_bans).order_by(agent_bans.c.pbx, agent_bans.c.banned_at.desc())
        if pbx:
            query = query.where(agent_bans.c.pbx == pbx)
        rows = (await self.session.execute(query)).all()
        return [Ban(r.pbx, r.address, r.reason, r.failures, r.banned_at, r.until) for r in rows]
