"""SQL for the live desk: missed-call notifications, calls in progress, a user's extensions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.directory import Contact
from callbridge.services.live import RecentCall
from callbridge.store.calls import CallFilter, CallView, calls
from callbridge.store.directory import extension_users
from callbridge.store.tables import UtcDateTime, metadata, now, users

if TYPE_CHECKING:
    from callbridge.store.repos import Repos

notifications = Table(
    "notifications",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="SET NULL"), nullable=True),
    Column("title", String(300), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=now),
    Column("read_at", UtcDateTime, nullable=True),
    Index("ix_notifications_user_id_id", "user_id", "id"),
)


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    user_id: int
    kind: str
    call_id: int | None
    title: str
    body: dict[str, Any]
    created_at: datetime
    read_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "call_id": self.call_id,
            "title": self.title,
            "body": self.body,
            "created_at": self.created_at.isoformat(),
            "read": self.read_at is not None,
        }


@dataclass(frozen=True, slots=True)
class Alerts:
    """How the desk alerts a user to a call ringing at their phone, beyond the card: each is
    opted into by the user (off by default)."""

    ring_sound: bool = False
    desktop_notifications: bool = False

    def to_dict(self) -> dict[str, bool]:
        return {"ring_sound": self.ring_sound, "desktop_notifications": self.desktop_notifications}


def _notification(row: Any) -> Notification:
    return Notification(
        id=row.id,
        user_id=row.user_id,
        kind=row.kind,
        call_id=row.call_id,
        title=row.title,
        body=dict(row.body or {}),
        created_at=row.created_at,
        read_at=row.read_at,
    )


class SqlDesk:
    """Implements ``services.live.DeskStore``'s notification half and the live-call queries."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_notification(
        self, user_id: int, kind: str, call_id: int | None, title: str, body: dict[str, Any]
    ) -> Notification:
        row = (
            await self.session.execute(
                insert(notifications)
                .values(user_id=user_id, kind=kind, call_id=call_id, title=title, body=body, created_at=now())
                .returning(*notifications.c)
            )
        ).one()
        return _notification(row)

    async def notifications(
        self, user_id: int, limit: int = 50, unread_only: bool = False
    ) -> list[Notification]:
        stmt = select(notifications).where(notifications.c.user_id == user_id)
        if unread_only:
            stmt = stmt.where(notifications.c.read_at.is_(None))
        stmt = stmt.order_by(notifications.c.id.desc()).limit(limit)
        return [_notification(r) for r in (await self.session.execute(stmt)).all()]

    async def unread(self, user_id: int) -> int:
        stmt = select(func.count()).where(
            notifications.c.user_id == user_id, notifications.c.read_at.is_(None)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def mark_read(self, user_id: int, notification_id: int | None = None) -> int:
        """Mark one (or, with ``None``, every) notification of ``user_id`` read; returns how many."""
        stmt = update(notifications).where(
            notifications.c.user_id == user_id, notifications.c.read_at.is_(None)
        )
        if notification_id is not None:
            stmt = stmt.where(notifications.c.id == notification_id)
        result = await self.session.execute(stmt.values(read_at=now()))
        return int(result.rowcount)  # type: ignore[attr-defined]

    async def alerts(self, user_id: int) -> Alerts:
        stmt = select(users.c.ring_sound, users.c.desktop_notifications).where(users.c.id == user_id)
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return Alerts()
        return Alerts(bool(row.ring_sound), bool(row.desktop_notifications))

    async def set_alerts(self, user_id: int, alerts: Alerts) -> None:
        await self.session.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(ring_sound=alerts.ring_sound, desktop_notifications=alerts.desktop_notifications)
        )

    async def extensions_of(self, user_id: int) -> list[tuple[str, str]]:
        """(pbx, extension) pairs mapped to ``user_id``, in a stable order."""
        stmt = (
            select(extension_users.c.pbx, extension_users.c.extension)
            .where(extension_users.c.user_id == user_id)
            .order_by(extension_users.c.id)
        )
        return [(r.pbx, r.extension) for r in (await self.session.execute(stmt)).all()]

    async def calls_in_progress(self, max_age: timedelta = timedelta(hours=4)) -> list[int]:
        """Row ids of calls with no end yet that started recently (older ones are stale)."""
        stmt = (
            select(calls.c.id)
            .where(calls.c.disposition.is_(None), calls.c.started_at >= now() - max_age)
            .order_by(calls.c.started_at.desc())
            .limit(500)
        )
        return [int(r) for r in (await self.session.execute(stmt)).scalars()]


def _recent(c: CallView) -> RecentCall:
    return RecentCall(
        id=c.id,
        key=f"{c.pbx}/{c.pbx_call_id}",
        started_at=c.started_at,
        direction=c.direction.value if c.direction else "",
        disposition=c.disposition.value if c.disposition else "in progress",
        talk_seconds=c.talk_seconds,
        user=c.answered_by_user or c.placed_by_user or c.answered_by_extension or c.placed_by_extension,
    )


class DeskRepo:
    """``services.live.DeskStore`` over one unit of work's repositories."""

    def __init__(self, repos: Repos) -> None:
        self.repos = repos

    async def users_for(self, pbx: str, extensions: Sequence[str]) -> Mapping[str, int]:
        return await self.repos.extensions.users_for(pbx, extensions)

    async def contact(self, contact_id: int) -> Contact | None:
        return await self.repos.directory.find(contact_id)

    async def external_links(self, contact_id: int) -> list[dict[str, str]]:
        found = await self.repos.connectors.externals_of_contacts([contact_id])
        return [ref.as_dict() for ref in found.get(contact_id, [])]

    async def user_label(self, user_id: int) -> str:
        stored = await self.repos.users.get(user_id)
        return stored.user.label if stored is not None else ""

    async def call_ended(self, pbx: str, call_id: str) -> bool:
        stmt = select(calls.c.disposition).where(calls.c.pbx == pbx, calls.c.pbx_call_id == call_id)
        return (await self.repos.session.execute(stmt)).scalar() is not None

    async def owed(self, number: str) -> Sequence[tuple[int | None, datetime]]:
        return await self.repos.tasks.owed(number)

    async def colleague(self, pbx: str, extension: str) -> str:
        users = await self.repos.extensions.users_for(pbx, [extension])
        user_id = users.get(extension)
        return await self.user_label(user_id) if user_id is not None else ""

    async def recent_calls(
        self, contact_id: int, limit: int, viewers: Sequence[int]
    ) -> Mapping[int, list[RecentCall]]:
        """The contact's last calls each viewer may see (``CallFilter.viewer``): one query for
        the users who see every call, one per other user."""
        out: dict[int, list[RecentCall]] = {}
        everything: list[RecentCall] | None = None
        for user_id in viewers:
            stored = await self.repos.users.get(user_id)
            if stored is None:
                out[user_id] = []
                continue
            viewer = stored.user
            if viewer.sees_all_calls and everything is not None:
                out[user_id] = everything
                continue
            found, _ = await self.repos.calls.search(
                CallFilter(contact_id=contact_id, viewer=viewer), limit=limit
            )
            out[user_id] = [_recent(c) for c in found]
            if viewer.sees_all_calls:
                everything = out[user_id]
        # The calls' stored recordings (one query for all viewers): the card offers a player.
        ready = await self.repos.recordings.ready_for_calls({r.id for calls in out.values() for r in calls})
        if ready:
            out = {
                user_id: [replace(r, recording_id=ready.get(r.id)) for r in calls]
                for user_id, calls in out.items()
            }
        return out

    async def add_notification(
        self, user_id: int, kind: str, call_id: int | None, title: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return (
            await SqlDesk(self.repos.session).add_notification(user_id, kind, call_id, title, body)
        ).to_dict()
