"""SQL for recordings: one row per recorded file of a call, from pending to ready (or failed)."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.recordings import PurgeCandidate, Recording, RecordingStatus, RetentionRule
from callbridge.store.calls import calls
from callbridge.store.connectors import requeue_written_call
from callbridge.store.directory import contact_tags
from callbridge.store.tables import UtcDateTime, metadata, now

recordings = Table(
    "recordings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("pbx", String(64), nullable=False),
    # The PBX's name for the file: a Yeastar CDR's file name, an Asterisk MixMonitor path.
    Column("reference", String(500), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("reason", String(500), nullable=False, server_default=""),
    Column("storage_key", String(500), nullable=False, server_default=""),
    Column("size_bytes", BigInteger, nullable=True),
    Column("duration_seconds", Float, nullable=True),
    Column("content_type", String(100), nullable=False, server_default=""),
    Column("sha256", String(64), nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="0"),
    # When the fetch worker may (next) take a pending recording; a claim moves it forward.
    Column("next_attempt_at", UtcDateTime, nullable=True, index=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Legal hold: retention never purges a held recording.
    Column("held", Boolean, nullable=False, server_default=false()),
    Column("held_by", String(64), nullable=False, server_default=""),
    Column("held_at", UtcDateTime, nullable=True),
    Column("purged_at", UtcDateTime, nullable=True),
    # Uploaded by the PBX's agent (so a purge asks that agent to delete the PBX's copy).
    Column("via_agent", Boolean, nullable=False, server_default=false()),
    # The PBX's copy after a purge: "" (not asked), "waiting" (the agent has not answered yet),
    # "deleted", "not_found", "refused"; with the agent's detail and when it answered.
    Column("pbx_copy", String(16), nullable=False, server_default="", index=True),
    Column("pbx_copy_detail", String(500), nullable=False, server_default=""),
    Column("pbx_copy_at", UtcDateTime, nullable=True),
    UniqueConstraint("call_id", "reference", name="uq_recordings_call_id_reference"),
)


def _recording(row: Any) -> Recording:
    return Recording(
        id=int(row.id),
        call_id=int(row.call_id),
        pbx=row.pbx,
        reference=row.reference,
        status=RecordingStatus(row.status),
        reason=row.reason,
        storage_key=row.storage_key,
        size_bytes=row.size_bytes,
        duration_seconds=row.duration_seconds,
        content_type=row.content_type,
        sha256=row.sha256,
        attempts=int(row.attempts),
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        held=bool(row.held),
        held_by=row.held_by,
        held_at=row.held_at,
        via_agent=bool(row.via_agent),
        pbx_copy=row.pbx_copy,
        pbx_copy_detail=row.pbx_copy_detail,
        pbx_copy_at=row.pbx_copy_at,
    )


class SqlRecordings:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_pending(self, call_id: int, pbx: str, reference: str) -> bool:
        """A pending recording for a call's file; ``False`` when the call has it already."""
        dialect = self.session.get_bind().dialect.name
        table_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stamp = now()
        result = await self.session.execute(
            table_insert(recordings)
            .values(
                call_id=call_id,
                pbx=pbx[:64],
                reference=reference[:500],
                status=RecordingStatus.PENDING.value,
                next_attempt_at=stamp,
                created_at=stamp,
                updated_at=stamp,
            )
            .on_conflict_do_nothing()
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def get(self, recording_id: int) -> Recording | None:
        row = (await self.session.execute(select(recordings).where(recordings.c.id == recording_id))).first()
        return _recording(row) if row else None

    async def find_for_upload(self, pbx: str, reference: str, pbx_call_id: str) -> Recording | None:
        """The recording an agent uploads: the PBX's file ``reference`` of call ``pbx_call_id``
        (the PBX's own call id) on ``pbx``; a pending one first, else the newest."""
        query = (
            select(recordings)
            .join(calls, calls.c.id == recordings.c.call_id)
            .where(
                recordings.c.pbx == pbx[:64],
                recordings.c.reference == reference[:500],
                calls.c.pbx_call_id == pbx_call_id[:128],
            )
            .order_by((recordings.c.status == RecordingStatus.PENDING.value).desc(), recordings.c.id.desc())
            .limit(1)
        )
        row = (await self.session.execute(query)).first()
        return _recording(row) if row else None

    async def for_call(self, call_id: int) -> list[Recording]:
        query = select(recordings).where(recordings.c.call_id == call_id).order_by(recordings.c.id)
        return [_recording(r) for r in (await self.session.execute(query)).all()]

    async def ready_for_calls(self, call_ids: Collection[int]) -> dict[int, int]:
        """call id → the id of its first stored (ready) recording, for the calls that have one."""
        if not call_ids:
            return {}
        query = (
            select(recordings.c.call_id, func.min(recordings.c.id))
            .where(
                recordings.c.call_id.in_(sorted(call_ids)), recordings.c.status == RecordingStatus.READY.value
            )
            .group_by(recordings.c.call_id)
        )
        return {int(c): int(r) for c, r in (await self.session.execute(query)).all()}

    async def due(self, at: datetime, limit: int) -> list[Recording]:
        """Pending recordings whose next attempt is due, oldest first."""
        query = (
            select(recordings)
            .where(recordings.c.status == RecordingStatus.PENDING.value, recordings.c.next_attempt_at <= at)
            .order_by(recordings.c.next_attempt_at, recordings.c.id)
            .limit(limit)
        )
        return [_recording(r) for r in (await self.session.execute(query)).all()]

    async def next_due_at(self) -> datetime | None:
        query = select(func.min(recordings.c.next_attempt_at)).where(
            recordings.c.status == RecordingStatus.PENDING.value
        )
        value: datetime | None = (await self.session.execute(query)).scalar_one_or_none()
        return value

    async def claim(self, recording_id: int, at: datetime, hold: timedelta) -> bool:
        """Take a due pending recording for one fetch: its next attempt moves ``hold`` ahead, so
        another worker leaves it alone, and a worker that dies mid-fetch leaves it to be retried."""
        result = await self.session.execute(
            update(recordings)
            .where(
                recordings.c.id == recording_id,
                recordings.c.status == RecordingStatus.PENDING.value,
                recordings.c.next_attempt_at <= at,
            )
            .values(next_attempt_at=at + hold, updated_at=now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def mark_ready(
        self,
        recording_id: int,
        *,
        storage_key: str,
        size_bytes: int,
        sha256: str,
        content_type: str,
        duration_seconds: float | None,
        via_agent: bool = False,
    ) -> None:
        await self.session.execute(
            update(recordings)
            .where(recordings.c.id == recording_id)
            .values(
                via_agent=via_agent,
                status=RecordingStatus.READY.value,
                reason="",
                storage_key=storage_key,
                size_bytes=size_bytes,
                sha256=sha256,
                content_type=content_type[:100],
                duration_seconds=duration_seconds,
                attempts=recordings.c.attempts + 1,
                next_attempt_at=None,
                updated_at=now(),
            )
        )
        # The call is written into the ERPs again, now with its recording's link.
        call_id = (
            await self.session.execute(select(recordings.c.call_id).where(recordings.c.id == recording_id))
        ).scalar()
        if call_id is not None:
            await requeue_written_call(self.session, int(call_id))

    async def mark_retry(self, recording_id: int, reason: str, next_attempt_at: datetime) -> None:
        await self.session.execute(
            update(recordings)
            .where(recordings.c.id == recording_id, recordings.c.status == RecordingStatus.PENDING.value)
            .values(
                reason=reason[:500],
                attempts=recordings.c.attempts + 1,
                next_attempt_at=next_attempt_at,
                updated_at=now(),
            )
        )

    async def mark_failed(self, recording_id: int, reason: str) -> None:
        await self.session.execute(
            update(recordings)
            .where(recordings.c.id == recording_id)
            .values(
                status=RecordingStatus.FAILED.value,
                reason=reason[:500],
                attempts=recordings.c.attempts + 1,
                next_attempt_at=None,
                updated_at=now(),
            )
        )

    async def release(self, recording_id: int, reason: str, next_attempt_at: datetime) -> None:
        """Give a claimed recording back without counting an attempt (this worker cannot fetch it)."""
        await self.session.execute(
            update(recordings)
            .where(recordings.c.id == recording_id, recordings.c.status == RecordingStatus.PENDING.value)
            .values(reason=reason[:500], next_attempt_at=next_attempt_at, updated_at=now())
        )

    # -- keep or purge ----------------------------------------------------------------------------

    async def set_hold(self, recording_id: int, held: bool, by: str) -> None:
        await self.session.execute(
            update(recordings)
            .where(recordings.c.id == recording_id)
            .values(
                held=held,
                held_by=by[:64] if held else "",
                held_at=now() if held else None,
                updated_at=now(),
            )
        )

    async def purge_candidates(self, rule: RetentionRule, at: datetime, limit: int) -> list[PurgeCandidate]:
        """Stored recordings, not held, of the calls ``rule`` says to purge at ``at`` (by the
        call's start), oldest first."""
        query = (
            select(
                recordings.c.id,
                recordings.c.call_id,
                recordings.c.pbx,
                recordings.c.storage_key,
                recordings.c.via_agent,
                recordings.c.reference,
                calls.c.started_at,
            )
            .select_from(recordings.join(calls, calls.c.id == recordings.c.call_id))
            .where(
                recordings.c.status == RecordingStatus.READY.value,
                recordings.c.held.is_(False),
                calls.c.started_at < rule.cutoff(at),
            )
        )
        if rule.direction:
            query = query.where(calls.c.direction == rule.direction)
        if rule.pbx:
            query = query.where(calls.c.pbx == rule.pbx)
        if rule.tag:
            tagged = select(contact_tags.c.contact_id).where(contact_tags.c.tag_folded == rule.tag.casefold())
            query = query.where(or_(calls.c.contact_id.in_(tagged), calls.c.company_id.in_(tagged)))
        query = query.order_by(calls.c.started_at, recordings.c.id).limit(limit)
        reason = rule.describe()
        return [
            PurgeCandidate(
                recording_id=int(r.id),
                call_id=int(r.call_id),
                pbx=r.pbx,
                storage_key=r.storage_key,
                started_at=r.started_at,
                reason=reason,
                via_agent=bool(r.via_agent),
                reference=r.reference,
            )
            for r in (await self.session.execute(query)).all()
        ]

    async def mark_purged(self, recording_id: int, reason: str, *, pbx_copy: bool = False) -> bool:
        """Purged (its file deleted), unless it was put on hold meanwhile; ``False`` then.
        With ``pbx_copy``, the PBX's agent is to be asked to delete its copy (``waiting``), in
        the same commit."""
        stamp = now()
        extra: dict[str, Any] = (
            {"pbx_copy": "waiting", "pbx_copy_detail": "", "pbx_copy_at": None} if pbx_copy else {}
        )
        result = await self.session.execute(
            update(recordings)
            .where(
                recordings.c.id == recording_id,
                recordings.c.status == RecordingStatus.READY.value,
                recordings.c.held.is_(False),
            )
            .values(
                status=RecordingStatus.PURGED.value,
                reason=reason[:500],
                purged_at=stamp,
                updated_at=stamp,
                **extra,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- the PBX's copy of purged recordings (asked of the PBX's agent) ---------------------------

    async def pbx_copies_waiting_pbxes(self) -> list[str]:
        """The PBXs with purged recordings whose agent has not answered yet."""
        query = select(recordings.c.pbx).where(recordings.c.pbx_copy == "waiting").distinct()
        return sorted(str(r) for r in (await self.session.execute(query)).scalars())

    async def pbx_copies_waiting(self, pbx: str, limit: int) -> list[Recording]:
        query = (
            select(recordings)
            .where(recordings.c.pbx_copy == "waiting", recordings.c.pbx == pbx)
            .order_by(recordings.c.id)
            .limit(limit)
        )
        return [_recording(r) for r in (await self.session.execute(query)).all()]

    async def record_pbx_copy(self, recording_id: int, status: str, detail: str) -> None:
        """The agent's answer about the PBX's copy of a purged recording."""
        await self.session.execute(
            update(recordings)
            .where(recordings.c.id == recording_id, recordings.c.pbx_copy == "waiting")
            .values(pbx_copy=status[:16], pbx_copy_detail=detail[:500], pbx_copy_at=now())
        )
