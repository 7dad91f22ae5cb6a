"""SQL for e-mail: the durable outbox, the users' e-mail settings, what a digest reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.events import Direction, Disposition
from callbridge.domain.mail import DigestUser, MissedCall, OutboxMail
from callbridge.domain.tasks import UNANSWERED
from callbridge.store.calls import call_users, calls
from callbridge.store.directory import contacts
from callbridge.store.tables import UtcDateTime, metadata, now, users

# How long a worker holds the e-mails it took to send (a send times out well before).
CLAIM = timedelta(minutes=5)

email_outbox = Table(
    "email_outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    # Once per key ("digest:<user>:<date>"): two hub workers never queue the same e-mail twice.
    Column("key", String(200), nullable=False, unique=True),
    Column("to_address", String(254), nullable=False),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    # "pending" | "sent" | "failed" (gave up after MAX_ATTEMPTS)
    Column("status", String(8), nullable=False, server_default="pending"),
    Column("last_error", String(500), nullable=False, server_default=""),
    Index("ix_email_outbox_status_next_attempt_at", "status", "next_attempt_at"),
)


@dataclass(frozen=True, slots=True)
class MailPrefs:
    email: str
    daily_digest: bool
    new_voicemail: bool = False  # an e-mail for each new voicemail in the user's mailboxes


class SqlMail:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def enqueue(self, key: str, to: str, subject: str, body: str) -> bool:
        """Queue an e-mail; ``False`` when one with ``key`` is queued (or sent) already."""
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        at = now()
        stmt = (
            dialect.insert(email_outbox)
            .values(key=key, to_address=to, subject=subject, body=body, created_at=at, next_attempt_at=at)
            .on_conflict_do_nothing(index_elements=["key"])
        )
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def due(self, at: datetime, limit: int = 20) -> list[OutboxMail]:
        """Pending e-mails whose time has come, oldest first, claimed: their next attempt moves
        ``CLAIM`` ahead, so another hub worker does not send them too (a worker that dies
        mid-send leaves them to be sent after that)."""
        stmt = (
            select(email_outbox)
            .where(email_outbox.c.status == "pending", email_outbox.c.next_attempt_at <= at)
            .order_by(email_outbox.c.next_attempt_at, email_outbox.c.id)
            .limit(limit)
        )
        if self.session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        found = [_mail(r) for r in (await self.session.execute(stmt)).all()]
        if found:
            await self.session.execute(
                update(email_outbox)
                .where(email_outbox.c.id.in_([m.id for m in found]))
                .values(next_attempt_at=at + CLAIM)
            )
        return found

    async def next_due(self) -> datetime | None:
        stmt = select(email_outbox.c.next_attempt_at).where(email_outbox.c.status == "pending")
        stmt = stmt.order_by(email_outbox.c.next_attempt_at).limit(1)
        return (await self.session.execute(stmt)).scalar()

    async def mark_sent(self, mail_id: int, at: datetime) -> None:
        await self.session.execute(
            update(email_outbox)
            .where(email_outbox.c.id == mail_id)
            .values(status="sent", sent_at=at, attempts=email_outbox.c.attempts + 1, last_error="")
        )

    async def mark_failed(self, mail_id: int, error: str, retry_at: datetime | None) -> None:
        values: dict[str, object] = {"attempts": email_outbox.c.attempts + 1, "last_error": error[:500]}
        if retry_at is None:
            values["status"] = "failed"
        else:
            values["next_attempt_at"] = retry_at
        await self.session.execute(update(email_outbox).where(email_outbox.c.id == mail_id).values(**values))

    async def all(self) -> list[OutboxMail]:
        rows = (await self.session.execute(select(email_outbox).order_by(email_outbox.c.id))).all()
        return [_mail(r) for r in rows]

    # -- the users' side -----------------------------------------------------------------------

    async def prefs(self, user_id: int) -> MailPrefs:
        row = (
            await self.session.execute(
                select(users.c.email, users.c.email_digest, users.c.email_voicemail).where(
                    users.c.id == user_id
                )
            )
        ).first()
        if row is None:
            return MailPrefs("", False)
        return MailPrefs(row.email, bool(row.email_digest), bool(row.email_voicemail))

    async def set_prefs(self, user_id: int, prefs: MailPrefs) -> None:
        await self.session.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(email=prefs.email, email_digest=prefs.daily_digest, email_voicemail=prefs.new_voicemail)
        )

    async def digest_users(self) -> list[DigestUser]:
        stmt = (
            select(users.c.id, users.c.name, users.c.display_name, users.c.email, users.c.time_zone)
            .where(users.c.email_digest.is_(True), users.c.email != "", users.c.active.is_(True))
            .order_by(users.c.id)
        )
        return [
            DigestUser(r.id, r.name, r.display_name or r.name, r.email, r.time_zone or "")
            for r in (await self.session.execute(stmt)).all()
        ]

    async def missed_calls(self, user_id: int, since: datetime) -> list[MissedCall]:
        """Inbound calls nobody answered that rang at the user's phone since ``since``."""
        stmt = (
            select(calls.c.id, calls.c.external_number, calls.c.started_at, contacts.c.name.label("contact"))
            .select_from(calls.outerjoin(contacts, contacts.c.id == calls.c.contact_id))
            .where(
                calls.c.id.in_(select(call_users.c.call_id).where(call_users.c.user_id == user_id)),
                calls.c.direction == Direction.INBOUND.value,
                calls.c.disposition.in_([d.value for d in UNANSWERED if d is not Disposition.ANSWERED]),
                calls.c.started_at >= since,
            )
            .order_by(calls.c.started_at.desc())
            .limit(200)
        )
        return [
            MissedCall(r.id, r.external_number, r.started_at, r.contact or "")
            for r in (await self.session.execute(stmt)).all()
        ]


def _mail(r: Any) -> OutboxMail:
    return OutboxMail(
        id=r.id,
        key=r.key,
        to_address=r.to_address,
        subject=r.subject,
        body=r.body,
        attempts=r.attempts,
        status=r.status,
        last_error=r.last_error,
        next_attempt_at=r.next_attempt_at,
        sent_at=r.sent_at,
    )
