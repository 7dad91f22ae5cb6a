"""The webhook inbox: verified bodies stored before the ack, read back in arrival order."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.pbx.yeastar.inbox import StoredWebhook
from callbridge.store.db import Database
from callbridge.store.tables import webhook_inbox, webhook_seen

log = logging.getLogger(__name__)

# How long the keys of processed webhooks are remembered: a PBX retries within minutes; a replay
# older than this is still refused by the call log (an ended call takes no event stamped after
# its end).
SEEN_KEEP = timedelta(days=7)
PRUNE_EVERY = 3600.0  # seconds between deletions of keys older than SEEN_KEEP


class SqlInbox:
    """:class:`callbridge.pbx.yeastar.inbox.InboxStore` over the hub's database; one short
    transaction per call (a batch of webhooks is one insert and one commit). What the hub uses
    on PostgreSQL, where the inbox's inserts take no lock that ingest holds."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pruned = -PRUNE_EVERY

    async def add(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> None:
        if not items:
            return
        rows = [{"pbx": pbx, "received_at": at, "body": body} for at, body in items]
        async with self._db.session() as session:
            await session.execute(insert(webhook_inbox), rows)

    def add_now(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> bool:
        return False  # a database server: always over the network, see add()

    async def close(self) -> None:
        return None  # the hub's database is closed with the hub

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

    async def done(self, pbx: str, ids: Sequence[int], seen: Sequence[str] = ()) -> None:
        if not ids and not seen:
            return
        now = datetime.now(UTC)
        async with self._db.session() as session:
            if ids:
                await session.execute(
                    delete(webhook_inbox).where(webhook_inbox.c.pbx == pbx, webhook_inbox.c.id.in_(list(ids)))
                )
            fresh = sorted(set(seen) - await self._known(session, pbx, seen))
            if fresh:
                await session.execute(
                    insert(webhook_seen), [{"pbx": pbx, "key": key, "seen_at": now} for key in fresh]
                )
            loop_time = asyncio.get_running_loop().time()
            if loop_time - self._pruned >= PRUNE_EVERY:
                self._pruned = loop_time
                await session.execute(delete(webhook_seen).where(webhook_seen.c.seen_at < now - SEEN_KEEP))

    async def seen(self, pbx: str, keys: Sequence[str]) -> set[str]:
        async with self._db.session() as session:
            return await self._known(session, pbx, keys)

    @staticmethod
    async def _known(session: AsyncSession, pbx: str, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), 500):
            query = select(webhook_seen.c.key).where(
                webhook_seen.c.pbx == pbx, webhook_seen.c.key.in_(wanted[start : start + 500])
            )
            found.update((await session.execute(query)).scalars())
        return found


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS webhook_inbox ("
    "id INTEGER PRIMARY KEY, pbx TEXT NOT NULL, received_at TEXT NOT NULL, body BLOB NOT NULL)",
    # No index on (pbx, id): the table holds only what is not processed yet, so a PBX's oldest
    # rows are found by walking the ids, and every insert writes one b-tree instead of two.
    "DROP INDEX IF EXISTS ix_webhook_inbox_pbx_id",
    # The keys of processed webhooks (bodies and decoded events): replays and retries after a
    # restart are known as such.
    "CREATE TABLE IF NOT EXISTS webhook_seen ("
    "pbx TEXT NOT NULL, key TEXT NOT NULL, seen_at TEXT NOT NULL, PRIMARY KEY (pbx, key)) WITHOUT ROWID",
)


class SqliteInbox:
    """:class:`callbridge.pbx.yeastar.inbox.InboxStore` in a SQLite file of its own, beside the
    hub's SQLite database (``callbridge.db`` → ``callbridge-inbox.db``).

    Why its own file: SQLite has one writer per file. In the hub's file, an ack's insert waits
    whenever ingest holds the write lock (a drained batch is one transaction of many statements,
    tens of milliseconds), and it waits in SQLite's busy handler, which sleeps 1, 2, 5, 10… ms:
    the p99 ack went to ~100 ms at a modest rate.

    Why on the event loop's thread: this file has one connection and no other writer, so a
    statement never waits for a lock, and an insert with its commit (WAL, ``synchronous=NORMAL``:
    an append to the log, no fsync) takes tens of microseconds, less than a hop to a thread and
    back. The one slow part of WAL, the checkpoint (copying the log into the file, with fsyncs),
    is taken off the commits (``wal_autocheckpoint=0``) and run by a worker thread on a second
    connection, in PASSIVE mode, which never blocks a writer.

    Same durability as the hub's database: a commit survives the process dying. Rows an older
    version left in the hub's database are moved here, in order, before anything else is read
    or written.
    """

    CHECKPOINT_EVERY = 1.0  # seconds, at most, after the consumer deleted what it processed

    def __init__(self, path: Path, legacy: SqlInbox | None = None) -> None:
        self.path = path
        self._legacy = legacy
        self._conn: sqlite3.Connection | None = None
        self._ready = False
        self._opening = asyncio.Lock()
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="callbridge-inbox")
        self._checkpoint_conn: sqlite3.Connection | None = None  # used in that thread only
        self._checkpointed = 0.0
        self._closed = False
        self._pruned = -PRUNE_EVERY

    @staticmethod
    def beside(database_file: str) -> Path:
        main = Path(database_file)
        return main.with_name(f"{main.stem}-inbox{main.suffix or '.db'}")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "wal_autocheckpoint=0"):
            conn.execute(f"PRAGMA {pragma}")
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    async def _db(self) -> sqlite3.Connection:
        if not self._ready:
            async with self._opening:
                if not self._ready:
                    await self._open()
        assert self._conn is not None
        return self._conn

    async def _open(self) -> None:
        if self._conn is None:
            self._conn = self._connect()
        while self._legacy is not None and (rows := await self._legacy.oldest(500)):
            _insert(self._conn, [(pbx, row.received_at, row.body) for pbx, row in rows])
            # A crash before the delete stores them twice: the link drops the repeats.
            for name in {pbx for pbx, _ in rows}:
                await self._legacy.done(name, [row.id for pbx, row in rows if pbx == name])
        self._ready = True

    async def add(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> None:
        await self._db()
        self.add_now(pbx, items)

    def add_now(self, pbx: str, items: Sequence[tuple[datetime, bytes]]) -> bool:
        """Insert and commit without leaving the caller's thread; False when the file is not
        open yet (then use :meth:`add`)."""
        if not self._ready or self._conn is None:
            return False
        if items:
            _insert(self._conn, [(pbx, at, body) for at, body in items])
            self._checkpoint_soon()
        return True

    async def pending(self, pbx: str, limit: int) -> list[StoredWebhook]:
        rows = (await self._db()).execute(
            "SELECT id, received_at, body FROM webhook_inbox WHERE pbx = ? ORDER BY id LIMIT ?", (pbx, limit)
        )
        return [StoredWebhook(id, datetime.fromisoformat(at), bytes(body)) for id, at, body in rows]

    async def done(self, pbx: str, ids: Sequence[int], seen: Sequence[str] = ()) -> None:
        if not ids and not seen:
            return
        conn = await self._db()
        now = datetime.now(UTC)
        with conn:  # one transaction
            conn.execute("BEGIN")
            conn.executemany("DELETE FROM webhook_inbox WHERE pbx = ? AND id = ?", [(pbx, id) for id in ids])
            conn.executemany(
                "INSERT OR IGNORE INTO webhook_seen (pbx, key, seen_at) VALUES (?, ?, ?)",
                [(pbx, key, now.isoformat()) for key in seen],
            )
            loop_time = asyncio.get_running_loop().time()
            if loop_time - self._pruned >= PRUNE_EVERY:
                self._pruned = loop_time
                conn.execute("DELETE FROM webhook_seen WHERE seen_at < ?", ((now - SEEN_KEEP).isoformat(),))
        self._checkpoint_soon()

    async def seen(self, pbx: str, keys: Sequence[str]) -> set[str]:
        conn = await self._db()
        found: set[str] = set()
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f"SELECT key FROM webhook_seen WHERE pbx = ? AND key IN ({marks})",  # noqa: S608 - only marks
                (pbx, *chunk),
            )
            found.update(key for (key,) in rows)
        return found

    def _checkpoint_soon(self) -> None:
        """Start a checkpoint in the worker thread unless one ran (or runs) within the last second."""
        loop = asyncio.get_running_loop()
        if self._closed or loop.time() - self._checkpointed < self.CHECKPOINT_EVERY:
            return
        self._checkpointed = loop.time()
        loop.run_in_executor(self._checkpointer, self._checkpoint).add_done_callback(_log_failure)

    def _checkpoint(self) -> None:
        if self._checkpoint_conn is None:
            self._checkpoint_conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._checkpoint_conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def shut() -> None:
            if self._checkpoint_conn is not None:
                self._checkpoint_conn.close()
                self._checkpoint_conn = None

        await asyncio.get_running_loop().run_in_executor(self._checkpointer, shut)
        self._checkpointer.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._ready = False


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("webhook inbox: checkpoint failed: %s", type(future.exception()).__name__)


def _insert(conn: sqlite3.Connection, rows: Sequence[tuple[str, datetime, bytes]]) -> None:
    with conn:  # commits (or rolls back) before the caller's future resolves
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO webhook_inbox (pbx, received_at, body) VALUES (?, ?, ?)",
            [(pbx, at.isoformat(), body) for pbx, at, body in rows],
        )
