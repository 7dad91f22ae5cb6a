"""SQL for shared recording links and their plays. Only a hash of a link's token is stored."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, String, Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.recordings import Share, SharePlay
from callbridge.store.tables import UtcDateTime, metadata, now, users

recording_shares = Table(
    "recording_shares",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "recording_id", Integer, ForeignKey("recordings.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    # SHA-256 of the link's token (hex): a stolen database does not give working links.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_by", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

share_plays = Table(
    "share_plays",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "share_id", Integer, ForeignKey("recording_shares.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("at", UtcDateTime, nullable=False),
    Column("address", String(64), nullable=False, server_default=""),
    Column("user_agent", String(300), nullable=False, server_default=""),
)

# The plays listed with a share (the newest); the count is always exact.
PLAYS_LISTED = 100
ADDRESS_CHARS = 64
USER_AGENT_CHARS = 300


def _share(row: Any, plays: tuple[SharePlay, ...] = ()) -> Share:
    return Share(
        id=int(row.id),
        recording_id=int(row.recording_id),
        created_by=row.creator or "",
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
        plays=plays,
    )


def _select() -> Any:
    return select(recording_shares, users.c.name.label("creator")).select_from(
        recording_shares.outerjoin(users, users.c.id == recording_shares.c.created_by)
    )


class SqlShares:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, recording_id: int, token_hash: str, created_by: int | None, expires_at: datetime
    ) -> Share:
        share_id = (
            await self.session.execute(
                insert(recording_shares)
                .values(
                    recording_id=recording_id,
                    token_hash=token_hash,
                    created_by=created_by,
                    created_at=now(),
                    expires_at=expires_at,
                )
                .returning(recording_shares.c.id)
            )
        ).scalar_one()
        found = await self.get(int(share_id))
        assert found is not None
        return found

    async def get(self, share_id: int) -> Share | None:
        row = (await self.session.execute(_select().where(recording_shares.c.id == share_id))).first()
        return _share(row) if row else None

    async def by_token_hash(self, token_hash: str) -> Share | None:
        row = (
            await self.session.execute(_select().where(recording_shares.c.token_hash == token_hash))
        ).first()
        return _share(row) if row else None

    async def for_recording(self, recording_id: int) -> list[Share]:
        rows = (
            await self.session.execute(
                _select()
                .where(recording_shares.c.recording_id == recording_id)
                .order_by(recording_shares.c.id)
            )
        ).all()
        out = []
        for row in rows:
            plays = (
                await self.session.execute(
                    select(share_plays)
                    .where(share_plays.c.share_id == row.id)
                    .order_by(share_plays.c.id.desc())
                    .limit(PLAYS_LISTED)
                )
            ).all()
            out.append(_share(row, tuple(SharePlay(p.at, p.address, p.user_agent) for p in plays)))
        return out

    async def revoke(self, share_id: int) -> None:
        await self.session.execute(
            update(recording_shares)
            .where(recording_shares.c.id == share_id, recording_shares.c.revoked_at.is_(None))
            .values(revoked_at=now())
        )

    async def log_play(self, share_id: int, address: str, user_agent: str) -> None:
        await self.session.execute(
            insert(share_plays).values(
                share_id=share_id,
                at=now(),
                address=address[:ADDRESS_CHARS],
                user_agent=user_agent[:USER_AGENT_CHARS],
            )
        )
