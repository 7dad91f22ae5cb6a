"""The webhook inbox's stores: in the hub's database (PostgreSQL) or in a SQLite file beside it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from callbridge.hub import Hub
from callbridge.store.inbox import SqlInbox, SqliteInbox

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


async def test_the_sqlite_inbox_keeps_each_pbx_s_bodies_in_arrival_order(tmp_path: Path) -> None:
    store = SqliteInbox(tmp_path / "callbridge-inbox.db")
    try:
        await store.add("a", [(T0, b"a1"), (T0 + timedelta(seconds=1), b"a2")])
        await store.add("b", [(T0, b"b1")])
        await store.add("a", [(T0 + timedelta(seconds=2), b"a3")])
        rows = await store.pending("a", 10)
        assert [(r.body, r.received_at) for r in rows] == [
            (b"a1", T0),
            (b"a2", T0 + timedelta(seconds=1)),
            (b"a3", T0 + timedelta(seconds=2)),
        ]
        assert [r.body for r in await store.pending("a", 2)] == [b"a1", b"a2"]
        await store.done("a", [rows[0].id, rows[1].id])
        await store.done("b", [rows[2].id])  # another PBX's ids delete nothing of this one
        assert [r.body for r in await store.pending("a", 10)] == [b"a3"]
        assert [r.body for r in await store.pending("b", 10)] == [b"b1"]
    finally:
        await store.close()
    # Committed: a new process (a restart) finds what was left.
    again = SqliteInbox(tmp_path / "callbridge-inbox.db")
    try:
        assert [r.body for r in await again.pending("a", 10)] == [b"a3"]
        assert [r.body for r in await again.pending("b", 10)] == [b"b1"]
    finally:
        await again.close()


async def test_the_hub_keeps_its_inbox_beside_a_sqlite_database_and_moves_old_rows_there_first(
    hub: Hub,
) -> None:
    in_db = SqlInbox(hub.db)
    await in_db.add("cloud", [(T0, b"left by an older version"), (T0, b"and another")])
    await in_db.add("other", [(T0, b"another PBX's")])
    store = hub.inbox_store()
    if hub.db.sqlite_file is None:  # PostgreSQL: the inbox is a table of the hub's database
        assert store is not None and isinstance(store, SqlInbox)
        return
    assert isinstance(store, SqliteInbox)
    assert store.path == Path(hub.db.sqlite_file).with_name("test-inbox.db")
    await store.add("cloud", [(T0 + timedelta(seconds=1), b"new")])
    assert [r.body for r in await store.pending("cloud", 10)] == [
        b"left by an older version",
        b"and another",
        b"new",
    ]
    assert [r.body for r in await store.pending("other", 10)] == [b"another PBX's"]
    assert await in_db.pending("cloud", 10) == [] and await in_db.pending("other", 10) == []
