"""SQL for transcripts: one per recording, its text (and a case-folded copy the call log's search
box matches) and timed segments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.recordings import Recording
from callbridge.domain.transcripts import Segment, Transcript, TranscriptStatus
from callbridge.store.tables import UtcDateTime, metadata, now

transcripts = Table(
    "transcripts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "recording_id",
        Integer,
        ForeignKey("recordings.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("language", String(16), nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("text_folded", Text, nullable=False, server_default=""),
    Column("segments", JSON, nullable=False),
    Column("reason", String(500), nullable=False, server_default=""),
    Column("model", String(200), nullable=False, server_default=""),
    # A summary from the OpenAI-compatible endpoint the user configured, if any.
    Column("summary", Text, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class TranscribeCandidate:
    """A stored recording without a transcript, with what the rules look at."""

    recording: Recording
    direction: str
    pbx: str
    numbers: tuple[str, ...]


def _transcript(row: Any) -> Transcript:
    return Transcript(
        id=int(row.id),
        recording_id=int(row.recording_id),
        call_id=int(row.call_id),
        status=TranscriptStatus(row.status),
        language=row.language,
        text=row.text,
        segments=tuple(
            Segment(float(s["start"]), float(s["end"]), str(s["text"])) for s in (row.segments or [])
        ),
        reason=row.reason,
        summary=row.summary,
    )


class SqlTranscripts:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def save(
        self,
        recording: Recording,
        *,
        status: TranscriptStatus,
        language: str = "",
        segments: tuple[Segment, ...] = (),
        reason: str = "",
        model: str = "",
    ) -> None:
        """The recording's transcript (replacing an earlier one)."""
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        await self.session.execute(delete(transcripts).where(transcripts.c.recording_id == recording.id))
        await self.session.execute(
            insert(transcripts).values(
                recording_id=recording.id,
                call_id=recording.call_id,
                status=status.value,
                language=language[:16],
                text=text,
                text_folded=text.casefold(),
                segments=[{"start": s.start, "end": s.end, "text": s.text.strip()} for s in segments],
                reason=reason[:500],
                model=model[:200],
                created_at=now(),
            )
        )

    async def set_summary(self, recording_id: int, summary: str) -> None:
        await self.session.execute(
            update(transcripts).where(transcripts.c.recording_id == recording_id).values(summary=summary)
        )

    async def for_call(self, call_id: int) -> Transcript | None:
        """The transcript of the call's first recording that has one."""
        query = (
            select(transcripts)
            .where(transcripts.c.call_id == call_id)
            .order_by(transcripts.c.recording_id)
            .limit(1)
        )
        row = (await self.session.execute(query)).first()
        return _transcript(row) if row else None

    async def candidates(self, limit: int) -> list[TranscribeCandidate]:
        """Stored recordings that have no transcript yet, oldest first."""
        from callbridge.store.calls import calls  # calls.py imports this module's table
        from callbridge.store.recordings import _recording, recordings

        done = select(transcripts.c.recording_id)
        query = (
            select(
                recordings,
                calls.c.direction.label("call_direction"),
                calls.c.external_number,
                calls.c.from_number,
                calls.c.to_number,
            )
            .select_from(recordings.join(calls, calls.c.id == recordings.c.call_id))
            .where(recordings.c.status == "ready", recordings.c.id.not_in(done))
            .order_by(recordings.c.id)
            .limit(limit)
        )
        return [
            TranscribeCandidate(
                recording=_recording(r),
                direction=r.call_direction or "",
                pbx=r.pbx,
                numbers=tuple(n for n in (r.external_number, r.from_number, r.to_number) if n),
            )
            for r in (await self.session.execute(query)).all()
        ]
