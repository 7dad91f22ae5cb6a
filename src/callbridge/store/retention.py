"""SQL for retention rules: which recordings' files the purge deletes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Integer, String, Table, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.domain.recordings import RetentionRule
from callbridge.store.tables import UtcDateTime, metadata, now

retention_rules = Table(
    "retention_rules",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("older_than_days", Integer, nullable=False),
    # Empty: any direction, tag, PBX.
    Column("direction", String(16), nullable=False, server_default=""),
    Column("tag", String(40), nullable=False, server_default=""),
    Column("pbx", String(64), nullable=False, server_default=""),
    Column("created_at", UtcDateTime, nullable=False),
)


def _rule(row: Any) -> RetentionRule:
    return RetentionRule(
        id=int(row.id),
        older_than_days=int(row.older_than_days),
        direction=row.direction,
        tag=row.tag,
        pbx=row.pbx,
    )


class SqlRetention:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def rules(self) -> list[RetentionRule]:
        query = select(retention_rules).order_by(retention_rules.c.id)
        return [_rule(r) for r in (await self.session.execute(query)).all()]

    async def add(self, older_than_days: int, direction: str, tag: str, pbx: str) -> RetentionRule:
        row = (
            await self.session.execute(
                insert(retention_rules)
                .values(
                    older_than_days=older_than_days, direction=direction, tag=tag, pbx=pbx, created_at=now()
                )
                .returning(*retention_rules.c)
            )
        ).one()
        return _rule(row)

    async def remove(self, rule_id: int) -> bool:
        result = await self.session.execute(delete(retention_rules).where(retention_rules.c.id == rule_id))
        return bool(result.rowcount)  # type: ignore[attr-defined]
