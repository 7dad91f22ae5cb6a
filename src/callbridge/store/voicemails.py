"""SQL for voicemails: one row per message left in a PBX mailbox, with its audio's state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Table,
    UniqueConstraint,
    and_,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.errors import InvalidInput
from callbridge.domain.transcripts import Segment, TranscriptStatus
from callbridge.domain.users import User
from callbridge.domain.voicemails import AudioStatus, Voicemail, VoicemailTranscript, mailbox_number
from callbridge.store.calls import calls
from callbridge.store.desk import SqlDesk
from callbridge.store.directory import decode_cursor, encode_cursor
from callbridge.store.tables import UtcDateTime, metadata, now

voicemails = Table(
    "voicemails",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pbx", String(64), nullable=False),
    Column("mailbox", String(128), nullable=False),  # "7001@default"
    # The mailbox's number ("7001"): the extension whose user it is.
    Column("extension", String(64), nullable=False),
    # The PBX's name for the message (Asterisk: the spool path of its msgNNNN.txt).
    Column("reference", String(500), nullable=False),
    Column("caller_number", String(64), nullable=False, server_default=""),
    Column("caller_name", String(128), nullable=False, server_default=""),
    Column("contact_id", Integer, ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("duration_seconds", Integer, nullable=False, server_default="0"),
    Column("heard", Boolean, nullable=False, server_default=false()),
    # The PBX's id of the call the message was left on (Asterisk: its Linkedid), "" unknown.
    # Read through a join: the call may be logged after the message arrives.
    Column("pbx_call_id", String(128), nullable=False, server_default=""),
    # The audio: pending (with the reason) until it arrives, ready once stored, failed.
    Column("audio_status", String(16), nullable=False, server_default="pending"),
    Column("audio_reason", String(500), nullable=False, server_default=""),
    Column("storage_key", String(500), nullable=False, server_default=""),
    Column("size_bytes", BigInteger, nullable=True),
    Column("sha256", String(64), nullable=False, server_default=""),
    Column("content_type", String(100), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
    # Audio the hub fetches from the PBX itself (Yeastar): when to try next (NULL: not the hub's
    # to fetch, or done), how many tries failed, and the PBX's id of the message once found.
    Column("fetch_at", UtcDateTime, nullable=True),
    Column("fetch_attempts", Integer, nullable=False, server_default="0"),
    Column("pbx_message_id", String(128), nullable=False, server_default=""),
    # Deleted in callbridge with its PBX's copy to go too: the row stays (hidden) as the request
    # to the agent, ``pbx_copy`` "waiting" until it answers deleted / not_found / refused.
    Column("deleted_at", UtcDateTime, nullable=True),
    Column("pbx_copy", String(16), nullable=False, server_default=""),
    Column("pbx_copy_detail", String(500), nullable=False, server_default=""),
    Column("pbx_copy_at", UtcDateTime, nullable=True),
    # The transcript (where transcription is on): "" not made, ready, failed; its language, timed
    # segments and, when failed, the reason, as one JSON object.
    Column("transcript_status", String(16), nullable=False, server_default=""),
    Column("transcript", JSON, nullable=True),
    UniqueConstraint("pbx", "reference", name="uq_voicemails_pbx_reference"),
    Index("ix_voicemails_pbx_extension", "pbx", "extension"),
    Index("ix_voicemails_fetch_at", "fetch_at"),
    Index("ix_voicemails_pbx_copy", "pbx_copy"),
)


def _select() -> Select[Any]:
    """Voicemails with the row id of their call, when it is logged."""
    call = and_(
        voicemails.c.pbx_call_id != "",
        calls.c.pbx == voicemails.c.pbx,
        calls.c.pbx_call_id == voicemails.c.pbx_call_id,
    )
    return select(voicemails, calls.c.id.label("call_row_id")).outerjoin(calls, call)


def _voicemail(row: Any) -> Voicemail:
    m = row._mapping
    return Voicemail(
        id=m["id"],
        pbx=m["pbx"],
        mailbox=m["mailbox"],
        reference=m["reference"],
        caller_number=m["caller_number"],
        caller_name=m["caller_name"],
        contact_id=m["contact_id"],
        received_at=m["received_at"],
        duration_seconds=m["duration_seconds"],
        heard=bool(m["heard"]),
        call_id=m["call_row_id"],
        audio_status=AudioStatus(m["audio_status"]),
        audio_reason=m["audio_reason"],
        storage_key=m["storage_key"],
        size_bytes=m["size_bytes"],
        sha256=m["sha256"],
        content_type=m["content_type"],
        created_at=m["created_at"],
        transcript=_transcript(m["transcript_status"], m["transcript"]),
    )


def _transcript(status: str, value: Any) -> VoicemailTranscript | None:
    if not status:
        return None
    data: dict[str, Any] = value if isinstance(value, dict) else {}
    found = data.get("segments")
    segments: list[Any] = found if isinstance(found, list) else []
    return VoicemailTranscript(
        status=TranscriptStatus(status),
        language=str(data.get("language") or ""),
        segments=tuple(
            Segment(float(s["start"]), float(s["end"]), str(s["text"]))
            for s in segments
            if isinstance(s, dict)
        ),
        reason=str(data.get("reason") or ""),
    )


class SqlVoicemails:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, voicemail_id: int) -> Voicemail | None:
        """The voicemail; None when there is none or it was deleted."""
        query = _select().where(voicemails.c.id == voicemail_id, voicemails.c.deleted_at.is_(None))
        row = (await self.session.execute(query)).first()
        return _voicemail(row) if row else None

    async def mailboxes_of(self, viewer: User) -> list[tuple[str, str]] | None:
        """The (pbx, mailbox number) pairs ``viewer`` may see, the mailboxes of their extensions;
        None: every mailbox (managers and admins)."""
        if viewer.sees_all_calls:
            return None
        return await SqlDesk(self.session).extensions_of(viewer.id)

    async def visible(self, voicemail_id: int, viewer: User) -> Voicemail | None:
        """The voicemail, when it is in a mailbox ``viewer`` may see."""
        found = await self.get(voicemail_id)
        if found is None:
            return None
        allowed = await self.mailboxes_of(viewer)
        return found if allowed is None or (found.pbx, found.mailbox_number) in allowed else None

    async def find(self, pbx: str, reference: str) -> Voicemail | None:
        query = _select().where(voicemails.c.pbx == pbx[:64], voicemails.c.reference == reference[:500])
        row = (await self.session.execute(query)).first()
        return _voicemail(row) if row else None

    async def add(
        self,
        *,
        pbx: str,
        mailbox: str,
        reference: str,
        caller_number: str,
        caller_name: str,
        contact_id: int | None,
        received_at: datetime,
        duration_seconds: int,
        pbx_call_id: str,
        audio_reason: str,
        fetch_at: datetime | None = None,
    ) -> tuple[Voicemail, bool]:
        """The voicemail, made when new (``True``); the same message announced again is the
        row it made before (``False``)."""
        found = await self.find(pbx, reference)
        if found is not None:
            return found, False
        try:
            async with self.session.begin_nested():
                new_id = await self.session.scalar(
                    voicemails.insert()
                    .returning(voicemails.c.id)
                    .values(
                        pbx=pbx[:64],
                        mailbox=mailbox[:128],
                        extension=mailbox_number(mailbox)[:64],
                        reference=reference[:500],
                        caller_number=caller_number[:64],
                        caller_name=caller_name[:128],
                        contact_id=contact_id,
                        received_at=received_at,
                        duration_seconds=duration_seconds,
                        pbx_call_id=pbx_call_id[:128],
                        audio_reason=audio_reason[:500],
                        fetch_at=fetch_at,
                        created_at=now(),
                    )
                )
        except IntegrityError:  # announced twice at once: the other one made it
            again = await self.find(pbx, reference)
            assert again is not None
            return again, False
        made = await self.get(int(new_id or 0))
        assert made is not None
        return made, True

    async def search(
        self,
        *,
        mailboxes: Sequence[tuple[str, str]] | None,
        mailbox: str | None = None,
        heard: bool | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[Voicemail], str | None]:
        """Newest first. ``mailboxes``: the (pbx, mailbox number) pairs the viewer may see; None
        for all."""
        query = _select().where(voicemails.c.deleted_at.is_(None))
        if mailboxes is not None:
            if not mailboxes:
                return [], None
            query = query.where(
                or_(
                    *(
                        and_(voicemails.c.pbx == pbx, voicemails.c.extension == number)
                        for pbx, number in mailboxes
                    )
                )
            )
        if mailbox:
            wanted = mailbox.strip()
            if "@" in wanted:
                query = query.where(voicemails.c.mailbox == wanted)
            else:
                query = query.where(voicemails.c.extension == wanted)
        if heard is not None:
            query = query.where(voicemails.c.heard == heard)
        if cursor:
            received_iso, last_id = decode_cursor(cursor, 2)
            try:
                received = datetime.fromisoformat(str(received_iso))
                last = int(last_id)
            except (TypeError, ValueError) as exc:
                raise InvalidInput("the cursor is not valid; start from the first page") from exc
            query = query.where(
                or_(
                    voicemails.c.received_at < received,
                    and_(voicemails.c.received_at == received, voicemails.c.id < last),
                )
            )
        query = query.order_by(voicemails.c.received_at.desc(), voicemails.c.id.desc()).limit(limit + 1)
        rows = (await self.session.execute(query)).all()
        more = len(rows) > limit
        found = [_voicemail(r) for r in rows[:limit]]
        after = encode_cursor([found[-1].received_at.isoformat(), found[-1].id]) if more and found else None
        return found, after

    async def set_heard(self, voicemail_id: int, heard: bool) -> None:
        await self.session.execute(
            update(voicemails).where(voicemails.c.id == voicemail_id).values(heard=heard)
        )

    async def remove(self, voicemail_id: int, *, pbx_copy: bool = False) -> None:
        """Delete the voicemail. With ``pbx_copy``, the row stays, hidden, as the request to the
        PBX's agent to delete the message there too (``waiting`` until it answers)."""
        if not pbx_copy:
            await self.session.execute(delete(voicemails).where(voicemails.c.id == voicemail_id))
            return
        await self.session.execute(
            update(voicemails)
            .where(voicemails.c.id == voicemail_id)
            .values(
                deleted_at=now(),
                pbx_copy="waiting",
                pbx_copy_detail="",
                pbx_copy_at=None,
                fetch_at=None,
                storage_key="",
            )
        )

    # -- transcripts -------------------------------------------------------------------------------

    async def transcribe_candidates(self, limit: int) -> list[Voicemail]:
        """Voicemails with stored audio and no transcript yet, oldest first."""
        query = (
            _select()
            .where(
                voicemails.c.deleted_at.is_(None),
                voicemails.c.audio_status == AudioStatus.READY.value,
                voicemails.c.transcript_status == "",
            )
            .order_by(voicemails.c.id)
            .limit(limit)
        )
        return [_voicemail(r) for r in (await self.session.execute(query)).all()]

    async def save_transcript(
        self,
        voicemail_id: int,
        *,
        status: TranscriptStatus,
        language: str = "",
        segments: tuple[Segment, ...] = (),
        reason: str = "",
    ) -> None:
        value = {
            "language": language[:16],
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in segments],
            "reason": reason[:500],
        }
        await self.session.execute(
            update(voicemails)
            .where(voicemails.c.id == voicemail_id)
            .values(transcript_status=status.value, transcript=value)
        )

    # -- the PBX's copy of a deleted voicemail ----------------------------------------------------

    async def pbx_copies_waiting_pbxes(self) -> list[str]:
        query = select(voicemails.c.pbx).where(voicemails.c.pbx_copy == "waiting").distinct()
        return sorted(str(r) for r in (await self.session.execute(query)).scalars())

    async def pbx_copies_waiting(self, pbx: str, limit: int) -> list[Voicemail]:
        query = (
            _select()
            .where(voicemails.c.pbx_copy == "waiting", voicemails.c.pbx == pbx)
            .order_by(voicemails.c.id)
            .limit(limit)
        )
        return [_voicemail(r) for r in (await self.session.execute(query)).all()]

    async def record_pbx_copy(self, voicemail_id: int, status: str, detail: str, /) -> None:
        """The agent's answer about the PBX's copy of a deleted voicemail."""
        await self.session.execute(
            update(voicemails)
            .where(voicemails.c.id == voicemail_id, voicemails.c.pbx_copy == "waiting")
            .values(pbx_copy=status[:16], pbx_copy_detail=detail[:500], pbx_copy_at=now())
        )

    async def pbx_copy_of(self, voicemail_id: int) -> tuple[str, str] | None:
        """(status, detail) of a deleted voicemail's PBX copy; None when none was asked for."""
        query = select(voicemails.c.pbx_copy, voicemails.c.pbx_copy_detail).where(
            voicemails.c.id == voicemail_id, voicemails.c.pbx_copy != ""
        )
        row = (await self.session.execute(query)).first()
        return (str(row[0]), str(row[1])) if row else None

    async def mark_ready(
        self,
        voicemail_id: int,
        *,
        storage_key: str,
        size_bytes: int,
        sha256: str,
        content_type: str,
        pbx_message_id: str = "",
        duration_seconds: int | None = None,
        caller_name: str = "",
    ) -> None:
        values: dict[str, Any] = {
            "audio_status": AudioStatus.READY.value,
            "audio_reason": "",
            "storage_key": storage_key,
            "size_bytes": size_bytes,
            "sha256": sha256,
            "content_type": content_type,
            "fetch_at": None,
        }
        if pbx_message_id:
            values["pbx_message_id"] = pbx_message_id[:128]
        if duration_seconds is not None:
            values["duration_seconds"] = max(0, duration_seconds)
        await self.session.execute(update(voicemails).where(voicemails.c.id == voicemail_id).values(**values))
        if caller_name:  # what the PBX says, where the event had no name
            await self.session.execute(
                update(voicemails)
                .where(voicemails.c.id == voicemail_id, voicemails.c.caller_name == "")
                .values(caller_name=caller_name[:128])
            )

    async def mark_failed(self, voicemail_id: int, reason: str) -> None:
        await self.session.execute(
            update(voicemails)
            .where(voicemails.c.id == voicemail_id, voicemails.c.audio_status == AudioStatus.PENDING.value)
            .values(audio_status=AudioStatus.FAILED.value, audio_reason=reason[:500], fetch_at=None)
        )

    # -- audio the hub fetches from the PBX ---------------------------------------------------------

    async def due(self, at: datetime, limit: int) -> list[tuple[Voicemail, int]]:
        """Pending voicemails whose fetch is due, oldest first, with their failed tries."""
        query = (
            _select()
            .add_columns(voicemails.c.fetch_attempts)
            .where(
                voicemails.c.audio_status == AudioStatus.PENDING.value,
                voicemails.c.fetch_at.is_not(None),
                voicemails.c.fetch_at <= at,
            )
            .order_by(voicemails.c.fetch_at, voicemails.c.id)
            .limit(limit)
        )
        rows = (await self.session.execute(query)).all()
        return [(_voicemail(r), int(r._mapping["fetch_attempts"])) for r in rows]

    async def next_due_at(self) -> datetime | None:
        query = select(func.min(voicemails.c.fetch_at)).where(
            voicemails.c.audio_status == AudioStatus.PENDING.value, voicemails.c.fetch_at.is_not(None)
        )
        value = await self.session.scalar(query)
        return value if isinstance(value, datetime) else None

    async def claim(self, voicemail_id: int, at: datetime, hold: timedelta) -> bool:
        """Take a due fetch for ``hold`` (another worker skips it; a worker that dies leaves it
        due again after that)."""
        result = await self.session.execute(
            update(voicemails)
            .where(
                voicemails.c.id == voicemail_id,
                voicemails.c.audio_status == AudioStatus.PENDING.value,
                voicemails.c.fetch_at.is_not(None),
                voicemails.c.fetch_at <= at,
            )
            .values(fetch_at=at + hold)
        )
        return bool(getattr(result, "rowcount", 0))

    async def mark_retry(self, voicemail_id: int, reason: str, next_attempt_at: datetime) -> None:
        await self.session.execute(
            update(voicemails)
            .where(voicemails.c.id == voicemail_id, voicemails.c.audio_status == AudioStatus.PENDING.value)
            .values(
                audio_reason=reason[:500],
                fetch_at=next_attempt_at,
                fetch_attempts=voicemails.c.fetch_attempts + 1,
            )
        )

    async def release(self, voicemail_id: int, reason: str, next_attempt_at: datetime) -> None:
        """Not tried (no way to the PBX from here now): look again later, no try counted."""
        await self.session.execute(
            update(voicemails)
            .where(voicemails.c.id == voicemail_id, voicemails.c.audio_status == AudioStatus.PENDING.value)
            .values(audio_reason=reason[:500], fetch_at=next_attempt_at)
        )

    async def taken_message_ids(self, pbx: str, mailbox: str) -> set[str]:
        """The PBX's ids of the messages of ``mailbox`` that voicemails already hold."""
        query = select(voicemails.c.pbx_message_id).where(
            voicemails.c.pbx == pbx[:64],
            voicemails.c.mailbox == mailbox[:128],
            voicemails.c.pbx_message_id != "",
        )
        return {str(v) for v in (await self.session.scalars(query)).all()}
