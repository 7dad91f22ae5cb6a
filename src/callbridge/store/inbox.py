"""The webhook inbox: verified bodies stored before the ack, read back in arrival order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, insert, select

from callbridge.pbx.yeastar.inbox import StoredWebhook
from callbridge.store.db import Database
from callbridge.store.tables import webhook_inbox


class SqlInbox:
    """:class:`callbridge.pbx.yeastar.inbox.InboxStore` over the hub's database; one short
    transaction per call (a batch of webhooks is one insert and one commit)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> None:
        if not items:
            return
        rows = [{"pbx": pbx, "received_at": at, "body": body} for at, body in items]
        async with self._db.session() as session:
            await session.execute(insert(webhook_inbox), rows)

    async def pending(self, pbx: str, limit: int) -> list[StoredWebhook]:
        query = (
            select(webhook_inbox.c.id, webhook_inbox.c.received_at, webhook_inbox.c.body)
            .where(webhook_inbox.c.pbx == pbx)
            .order_by(webhook_inbox.c.id)
            .limit(limit)
        )
        async with self._db.session() as session:
            result = await session.execute(query)
            return [StoredWebhook(row.id, row.received_at, bytes(row.body)) for row in result]

    async def done(self, pbx: str, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self._db.session() as session:
            await session.execute(
                delete(webhook_inbox).where(webhook_inbox.c.pbx == pbx, webhook_inbox.c.id.in_(list(ids)))
            )
