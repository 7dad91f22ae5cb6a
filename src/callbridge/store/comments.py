"""SQL for comments on calls (optionally pinned to a moment of the recording)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Float, ForeignKey, Integer, String, Table, Text, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.recordings import Comment
from callbridge.store.tables import UtcDateTime, metadata, now

call_comments = Table(
    "call_comments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("call_id", Integer, ForeignKey("calls.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    # The author's label when the comment was written (kept if the user is removed).
    Column("author", String(200), nullable=False, server_default=""),
    Column("text", Text, nullable=False),
    Column("at_seconds", Float, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

COMMENTS_LISTED = 500


def _comment(row: Any) -> Comment:
    return Comment(
        id=int(row.id),
        call_id=int(row.call_id),
        author=row.author,
        text=row.text,
        at_seconds=row.at_seconds,
        created_at=row.created_at,
    )


class SqlComments:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, call_id: int, user_id: int, author: str, text: str, at_seconds: float | None
    ) -> Comment:
        row = (
            await self.session.execute(
                insert(call_comments)
                .values(
                    call_id=call_id,
                    user_id=user_id,
                    author=author[:200],
                    text=text,
                    at_seconds=at_seconds,
                    created_at=now(),
                )
                .returning(*call_comments.c)
            )
        ).one()
        return _comment(row)

    async def for_call(self, call_id: int) -> list[Comment]:
        query = (
            select(call_comments)
            .where(call_comments.c.call_id == call_id)
            .order_by(call_comments.c.id)
            .limit(COMMENTS_LISTED)
        )
        return [_comment(r) for r in (await self.session.execute(query)).all()]
