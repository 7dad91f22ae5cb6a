"""The webhook inbox: verified bodies stored before the ack, read back in arrival order."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import delete, insert, select

from callbridge.pbx.yeastar.inbox import StoredWebhook
from callbridge.store.db import Database
from callbridge.store.tables import webhook_inbox

T = TypeVar("T")


class SqlInbox:
    """:class:`callbridge.pbx.yeastar.inbox.InboxStore` over the hub's database; one short
    transaction per call (a batch of webhooks is one insert and one commit). What the hub uses
    on PostgreSQL, where the inbox's inserts take no lock that ingest holds."""

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

    async def oldest(self, limit: int) -> list[tuple[str, StoredWebhook]]:
        """Any PBX's, oldest first (for moving them elsewhere)."""
        query = (
            select(webhook_inbox.c.pbx, webhook_inbox.c.id, webhook_inbox.c.received_at, webhook_inbox.c.body)
            .order_by(webhook_inbox.c.id)
            .limit(limit)
        )
        async with self._db.session() as session:
            result = await session.execute(query)
            return [(row.pbx, StoredWebhook(row.id, row.received_at, bytes(row.body))) for row in result]

    async def done(self, pbx: str, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self._db.session() as session:
            await session.execute(
                delete(webhook_inbox).where(webhook_inbox.c.pbx == pbx, webhook_inbox.c.id.in_(list(ids)))
            )


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS webhook_inbox ("
    "id INTEGER PRIMARY KEY, pbx TEXT NOT NULL, received_at TEXT NOT NULL, body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_webhook_inbox_pbx_id ON webhook_inbox (pbx, id)",
)


class SqliteInbox:
    """:class:`callbridge.pbx.yeastar.inbox.InboxStore` in a SQLite file of its own, beside the
    hub's SQLite database (``callbridge.db`` → ``callbridge-inbox.db``).

    Why its own file: SQLite has one writer per file. In the hub's file, an ack's insert waits
    whenever ingest holds the write lock (a drained batch is one transaction of many statements,
    tens of milliseconds), and it waits in SQLite's busy handler, which sleeps 1, 2, 5, 10… ms:
    the p99 ack went to ~100 ms at a modest rate. Here the only writers are the group commits of
    the acks and the consumer's deletes, both on one connection in one thread, so nothing ever
    waits for a lock, and a batch costs one thread hop (insert and commit together).

    Same durability as the hub's database (WAL, ``synchronous=NORMAL``): a commit survives the
    process dying. Rows an older version left in the hub's database are moved here, in order,
    before anything else is read or written.
    """

    def __init__(self, path: Path, legacy: SqlInbox | None = None) -> None:
        self.path = path
        self._legacy = legacy
        # One thread owns the connection: every operation is a function run there, in order.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callbridge-inbox")
        self._conn: sqlite3.Connection | None = None
        self._ready = False
        self._opening = asyncio.Lock()

    @staticmethod
    def beside(database_file: str) -> Path:
        main = Path(database_file)
        return main.with_name(f"{main.stem}-inbox{main.suffix or '.db'}")

    async def _run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        if not self._ready:
            await self._open()
        return await self._call(function)

    async def _call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._with_connection, function)

    def _with_connection(self, function: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
                conn.execute(f"PRAGMA {pragma}")
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return function(self._conn)

    async def _open(self) -> None:
        async with self._opening:
            if self._ready:
                return
            await self._call(lambda conn: None)
            while self._legacy is not None and (rows := await self._legacy.oldest(500)):
                moved = [(pbx, row.received_at, row.body) for pbx, row in rows]
                await self._call(lambda conn: _insert(conn, moved))  # noqa: B023 (awaited here)
                # A crash before the delete stores them twice: the link drops the repeats.
                for name in {pbx for pbx, _ in rows}:
                    await self._legacy.done(name, [row.id for pbx, row in rows if pbx == name])
            self._ready = True

    async def add(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> None:
        if items:
            await self._run(lambda conn: _insert(conn, [(pbx, at, body) for at, body in items]))

    async def pending(self, pbx: str, limit: int) -> list[StoredWebhook]:
        def read(conn: sqlite3.Connection) -> list[StoredWebhook]:
            rows = conn.execute(
                "SELECT id, received_at, body FROM webhook_inbox WHERE pbx = ? ORDER BY id LIMIT ?",
                (pbx, limit),
            )
            return [StoredWebhook(id, datetime.fromisoformat(at), bytes(body)) for id, at, body in rows]

        return await self._run(read)

    async def done(self, pbx: str, ids: Sequence[int]) -> None:
        def remove(conn: sqlite3.Connection) -> None:
            with conn:  # one transaction
                conn.execute("BEGIN")
                conn.executemany(
                    "DELETE FROM webhook_inbox WHERE pbx = ? AND id = ?", [(pbx, id) for id in ids]
                )

        if ids:
            await self._run(remove)

    async def close(self) -> None:
        def shut(conn: sqlite3.Connection) -> None:
            conn.close()

        if self._conn is not None:
            await self._call(shut)
            self._conn = None
        self._thread.shutdown(wait=True)


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[str, datetime, bytes]]) -> None:
    with conn:  # commits (or rolls back) before the caller's future resolves
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO webhook_inbox (pbx, received_at, body) VALUES (?, ?, ?)",
            [(pbx, at.isoformat(), body) for pbx, at, body in rows],
        )
