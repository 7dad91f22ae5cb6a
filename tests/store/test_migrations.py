"""Migrations: from empty to head, step by step, keeping every row on the way."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from callbridge.store.migrate import alembic_config, head_revision, upgrade


def _revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


async def _scalar(url: str, sql: str) -> object:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar_one()
    finally:
        await engine.dispose()


async def test_upgrade_step_by_step_keeps_rows(tmp_path: object, backend: str) -> None:
    import uuid

    from tests.conftest import PG_URL, _with_db

    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/m.db"
    else:
        import asyncpg

        name = "m_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()
        url = _with_db(PG_URL, name)
    revisions = _revisions()
    assert revisions[0] == "0001"
    before, after = await upgrade(url, revisions[0])
    assert (before, after) == (None, "0001")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (name, display_name, role, password_hash, active, session_version,"
                " created_at) VALUES ('keep', 'Keep Me', 'agent', 'x', true, 1, CURRENT_TIMESTAMP)"
            )
        )
    await engine.dispose()
    for revision in revisions[1:]:
        await upgrade(url, revision)
        assert await _scalar(url, "SELECT count(*) FROM users WHERE name = 'keep'") == 1
    _, final = await upgrade(url)
    assert final == head_revision()
    # Running again on every start is a no-op.
    assert await upgrade(url) == (final, final)
    assert await _scalar(url, "SELECT display_name FROM users WHERE name = 'keep'") == "Keep Me"


async def test_missed_call_notifications_make_their_users_take_part(tmp_path: object) -> None:
    """0008: a user a missed call left a notification for may open that call from then on."""
    url = f"sqlite+aiosqlite:///{tmp_path}/missed.db"
    await upgrade(url, "0006")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        for name in ("rung", "other"):
            await conn.execute(
                text(
                    "INSERT INTO users (name, display_name, role, password_hash, active, session_version,"
                    f" created_at) VALUES ('{name}', '', 'agent', 'x', true, 1, CURRENT_TIMESTAMP)"
                )
            )
        await conn.execute(
            text(
                "INSERT INTO calls (pbx, pbx_call_id, started_at, updated_at)"
                " VALUES ('main', 'c1', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        for kind in ("missed_call", "missed_call", "other"):
            user = "rung" if kind == "missed_call" else "other"
            await conn.execute(
                text(
                    "INSERT INTO notifications (user_id, kind, call_id, title, body, created_at)"
                    f" SELECT id, '{kind}', 1, 't', '{{}}', CURRENT_TIMESTAMP"
                    f" FROM users WHERE name = '{user}'"
                )
            )
    await engine.dispose()
    await upgrade(url, "0008")
    members = "SELECT u.name FROM call_users m JOIN users u ON u.id = m.user_id ORDER BY u.name"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            assert list((await conn.execute(text(members))).scalars()) == ["rung"]
    finally:
        await engine.dispose()


async def _fresh_url(tmp_path: object, backend: str) -> str:
    import uuid

    from tests.conftest import PG_URL, _with_db

    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/p.db"
    import asyncpg

    name = "m_" + uuid.uuid4().hex[:12]
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return _with_db(PG_URL, name)


async def test_0007_moves_the_placer_of_outbound_calls_out_of_answered_by(
    tmp_path: object, backend: str
) -> None:
    url = await _fresh_url(tmp_path, backend)
    await upgrade(url, "0006")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (id, name, display_name, role, password_hash, active, session_version,"
                " created_at) VALUES (5, 'alice', 'Alice', 'agent', 'x', true, 1, CURRENT_TIMESTAMP)"
            )
        )
        rows = [
            # (call id, direction, from, answered by, its user, made by user)
            ("out-ext", "outbound", "1001", "1001", 5, "NULL"),
            ("out-trunk", "outbound", "+14155550999", "1002", "NULL", "NULL"),
            ("internal", "internal", "1003", "1004", "NULL", "NULL"),
            ("inbound", "inbound", "+14155550100", "1001", 5, "NULL"),
        ]
        for call_id, direction, caller, answered, user, made in rows:
            await conn.execute(
                text(
                    "INSERT INTO calls (pbx, pbx_call_id, direction, from_number, answered_by_extension,"
                    " answered_by_user_id, made_by_user_id, disposition, started_at, updated_at)"
                    f" VALUES ('main', '{call_id}', '{direction}', '{caller}', '{answered}', {user},"
                    f" {made}, 'answered', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
    await engine.dispose()
    await upgrade(url)
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT pbx_call_id, placed_by_extension, made_by_user_id, answered_by_extension,"
                " answered_by_user_id FROM calls ORDER BY pbx_call_id"
            )
        )
        found = {r[0]: tuple(r[1:]) for r in result.all()}
    await engine.dispose()
    assert found == {
        "out-ext": ("1001", 5, "", None),
        "out-trunk": ("1002", None, "", None),
        "internal": ("1003", None, "1004", None),
        "inbound": ("", None, "1001", 5),
    }


async def test_0017_counts_the_calls_already_logged(tmp_path: object, backend: str) -> None:
    """0017: the rollups start with every call the log had, and missed calls already called back
    have their callback."""
    url = await _fresh_url(tmp_path, backend)
    await upgrade(url, "0015")
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO users (id, name, display_name, role, password_hash, active, session_version,"
                " created_at) VALUES (5, 'alice', 'Alice', 'agent', 'x', true, 1, CURRENT_TIMESTAMP)"
            )
        )
        rows = [
            # (call id, direction, disposition, start, end, ring, talk)
            ("answered", "inbound", "answered", "2026-03-01 09:00:00", "2026-03-01 09:01:05", 5, 60),
            ("missed", "inbound", "missed", "2026-03-01 10:00:00", "2026-03-01 10:00:20", 20, 0),
            ("back", "outbound", "answered", "2026-03-01 10:30:20", "2026-03-01 10:32:00", 8, 92),
            ("open", "inbound", None, "2026-03-01 11:00:00", None, 0, 0),
        ]
        for n, (call_id, direction, disposition, start, end, ring, talk) in enumerate(rows, start=1):
            await conn.execute(
                text(
                    "INSERT INTO calls (id, pbx, pbx_call_id, direction, disposition, external_number,"
                    " started_at, ended_at, ring_seconds, talk_seconds, updated_at) VALUES (:id, 'main', :c,"
                    " :d, :o, '+14155550100', :s, :e, :r, :t, CURRENT_TIMESTAMP)"
                ),
                {
                    "id": n,
                    "c": call_id,
                    "d": direction,
                    "o": disposition,
                    "s": datetime.fromisoformat(start).replace(tzinfo=UTC),
                    "e": datetime.fromisoformat(end).replace(tzinfo=UTC) if end else None,
                    "r": ring,
                    "t": talk,
                },
            )
        await conn.execute(text("INSERT INTO call_users (call_id, user_id) VALUES (1, 5), (2, 5)"))
    await engine.dispose()
    await upgrade(url, "0017")
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            day = (
                await conn.execute(
                    text(
                        "SELECT user_id, direction, offered, answered, missed, ring_seconds, callbacks,"
                        " callback_seconds FROM call_rollups WHERE grain = 86400 ORDER BY user_id, direction"
                    )
                )
            ).all()
            callbacks = (await conn.execute(text("SELECT call_id, seconds FROM call_callbacks"))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in day] == [
        (0, "inbound", 2, 1, 1, 5, 1, 1800),
        (0, "outbound", 1, 1, 0, 8, 0, 0),
        (5, "inbound", 2, 1, 1, 5, 1, 1800),
    ]
    assert [tuple(r) for r in callbacks] == [(2, 1800)]
