"""SQLite through aiosqlite, one trip to the connection's thread per statement
(callbridge.store.sqlite_driver): fewer trips, and the same answers as before."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from callbridge.store.db import Database
from callbridge.store.secrets import SecretBox


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", SecretBox(Fernet.generate_key()))
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL)"))
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """What is sent to the SQLite connections' threads, by name."""
    sent: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: object, *args: object, **kwargs: object) -> object:
        sent.append(getattr(fn, "__name__", type(fn).__name__))
        return await real(self, fn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield sent


async def test_a_read_only_unit_of_work_is_one_trip_to_the_thread(db: Database, trips: list[str]) -> None:
    """A SELECT, its rows, the unit's commit and the pool's roll-back when the connection is
    given back: SQLAlchemy's stock adapter made six trips for these, under load most of a
    request's time handing the GIL back and forth."""
    async with db.session() as session:  # the pool's connection is made and warmed first
        await session.execute(text("SELECT 1"))
    trips.clear()
    async with db.session() as session:
        rows = (await session.execute(text("SELECT 1 AS a, 'x' AS b"))).all()
    assert [tuple(r) for r in rows] == [(1, "x")]
    assert len(trips) == 1, trips


async def test_writes_commit_roll_back_and_report_like_sqlite(db: Database, trips: list[str]) -> None:
    async with db.session() as session:
        first = await session.execute(text("INSERT INTO t (name) VALUES ('a')"))
        assert first.lastrowid == 1 and first.rowcount == 1
    trips.clear()
    async with db.session() as session:  # the insert, then a commit that has something to do
        await session.execute(text("INSERT INTO t (name) VALUES ('b')"))
    assert len(trips) == 2, trips
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('gone')"))
            raise RuntimeError("the caller gave up")
    with pytest.raises(IntegrityError):
        async with db.session() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('c')"))
            await session.execute(text("INSERT INTO t (name) VALUES ('a')"))  # not unique
    async with db.session() as session:
        changed = await session.execute(text("UPDATE t SET name = name || '!' WHERE name IN ('a', 'b', 'z')"))
        assert changed.rowcount == 2
        many = await session.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": "m1"}, {"n": "m2"}])
        assert many.rowcount == 2
    # What another connection sees: what was committed, nothing of what was rolled back.
    async with aiosqlite.connect(db.sqlite_file or "") as other:
        names = [r[0] for r in await other.execute_fetchall("SELECT name FROM t ORDER BY id")]
    assert names == ["a!", "b!", "m1", "m2"]


async def test_a_failed_statement_leaves_no_transaction_open(db: Database) -> None:
    """After an error the adapter cannot know from SQLite whether a transaction is open: the
    roll-back is sent, and the connection goes back to the pool clean (another connection can
    then take the write lock at once)."""
    with pytest.raises(IntegrityError):
        async with db.session() as session:
            await session.execute(text("INSERT INTO t (name) VALUES ('x')"))
            await session.execute(text("INSERT INTO t (id, name) VALUES (1, 'y')"))  # id taken
    async with aiosqlite.connect(db.sqlite_file or "", timeout=0.1) as other:
        await other.execute("BEGIN IMMEDIATE")  # fails fast if a write lock were still held
        await other.execute("INSERT INTO t (name) VALUES ('z')")
        await other.commit()
    async with db.session() as session:
        names = (await session.execute(text("SELECT name FROM t ORDER BY id"))).scalars().all()
    assert names == ["z"]


async def test_streamed_results_still_read_every_row(db: Database) -> None:
    """Server-side cursors (``stream``) keep SQLAlchemy's own adapter."""
    async with db.session() as session:
        await session.execute(text("INSERT INTO t (name) VALUES (:n)"), [{"n": f"n{i}"} for i in range(250)])
    async with db.session() as session:
        result = await session.stream(text("SELECT name FROM t ORDER BY id"))
        names = [row[0] async for row in result]
    assert len(names) == 250 and names[0] == "n0" and names[-1] == "n249"


async def test_a_write_cancelled_while_it_runs_leaves_the_write_lock_free(db: Database) -> None:
    """A caller cancelled while the thread still runs its write (the statement may have begun a
    transaction): the connection is rolled back or closed, never given back holding the lock."""
    many_rows = text(
        "INSERT INTO t (name) WITH RECURSIVE n(i) AS "
        "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT 'r' || i FROM n"
    )

    async def write() -> None:
        async with db.session() as session:
            await session.execute(many_rows)

    for delay in (0.0, 0.01, 0.05):
        task = asyncio.create_task(write())
        await asyncio.sleep(delay)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with aiosqlite.connect(db.sqlite_file or "", timeout=2) as other:
            await other.execute("BEGIN IMMEDIATE")  # waits at most 2 s for a lock left behind
            await other.execute("DELETE FROM t")
            await other.commit()
    async with db.session() as session:  # and the pool's connections still work
        await session.execute(text("INSERT INTO t (name) VALUES ('after')"))
    async with db.session() as session:
        assert (await session.execute(text("SELECT name FROM t"))).scalars().all() == ["after"]
